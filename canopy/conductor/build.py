"""The boot of a server: scheduling → networking → spawning → ACTIVE, or ERROR with a fault that names the
step and the cause (no block_device_mapping step: it has no work in Canopy)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from canopy import states
from canopy.conductor import interfaces, netsync, records, sgsync
from canopy.conductor.taskrun import TaskRun, describe_exception
from canopy.db import tables_cell as c
from canopy.network import port_views
from canopy.network import ports as netports
from canopy.network.port_record import PortRecord
from canopy.observability import notifications as notify
from canopy.rpc.base import BusError, NoRoute, Target
from canopy.rpc.calls import DestroyInstance, HostSelected, InstanceSpec, PortChange, PortSpec, SpawnInstance
from canopy.rpc.messages import Message
from canopy.scheduler import claims
from canopy.scheduler.client import select_host_message
from canopy.states import PowerState

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor")


async def run_build(env: TaskEnv, run: TaskRun) -> None:
    """Drive one server's boot to ACTIVE (a failure raises: the dispatch ends it with fail_build).

    Every step is resumable: a build taken over (a restarted conductor, or another one after the lease)
    starts from what the database says was done, each step's result written in the transaction that
    made it: the claim records the instance's host, networking its ports; spawn asks the host first."""
    done = await _progress(env, run) if _is_resumed(run) else Progress()
    if done is None:
        return
    await notify.task_started(env, run)
    selected = done.selected or await _schedule(env, run)
    run.host = run.events.host = selected.host
    ports = await _network(env, run, selected, done.ports)
    await _spawn(env, run, selected, ports)
    await env.db.write(_finish_active, env, run)
    await notify.task_ended(env, run, vm_state=states.ACTIVE, task_state=None, power_state=1,
                            launched_at=env.clock.now(), addresses=notify.addresses_of(run, ports))


@dataclass(frozen=True)
class Progress:
    """What an earlier run of a build did: the host it claimed, the ports it made (None: none yet)."""

    selected: HostSelected | None = None
    ports: list[PortRecord] | None = None


def _is_resumed(run: TaskRun) -> bool:
    """Whether an earlier run may have made progress (its lease was taken before: by this conductor before a
    restart, or by another); a first run reads nothing back."""
    return int(run.task.get("attempts") or 1) > 1


async def _progress(env: TaskEnv, run: TaskRun) -> Progress | None:
    """Where a resumed build stands; None when there is nothing left to build (the instance went)."""
    limit = env.settings.conductor.max_task_attempts
    found = await env.db.read_fresh(_read_progress, run.instance_uuid, bool(run.build.networks))
    if found is None:
        await env.db.write(records.delete_task, run.id)
        return None
    instance, done = found
    run.host = instance["host"]
    run.step = states.SCHEDULING if done.selected is None else instance["task_state"] or states.SPAWNING
    attempts = int(run.task.get("attempts") or 1)
    log.info("instance %s: build resumed (attempt %d) at %s%s", run.instance_uuid, attempts, run.step,
             f" on {run.host}" if run.host else "", extra={"instance_uuid": run.instance_uuid})
    if attempts > limit:  # a build that kills its conductor every time must end
        raise RuntimeError(f"the build was taken over {attempts - 1} times without finishing; gave up")
    return done


def _read_progress(conn: Connection, uuid: str, wants_ports: bool) -> tuple[dict[str, Any], Progress] | None:
    instance = records.load_instance(conn, uuid)
    if instance is None or instance["deleted"] or instance["vm_state"] != states.BUILDING:
        return None
    if not instance["host"]:
        return instance, Progress()
    selected = HostSelected(host=instance["host"], availability_zone=_zone_of(conn, instance))
    ports = [PortRecord.of_row(row, ips) for row, ips in
             port_views.rows_where(conn, c.ports.c.device_id == uuid)] if wants_ports else []
    return instance, Progress(selected, ports or None)


def _zone_of(conn: Connection, instance: dict[str, Any]) -> str:
    """The zone of the host an instance was placed on (networking records it on the instance too)."""
    if instance["availability_zone"]:
        return str(instance["availability_zone"])
    zone = conn.execute(select(c.hosts.c.availability_zone).where(c.hosts.c.name == instance["host"])).scalar()
    return str(zone or "")


async def _schedule(env: TaskEnv, run: TaskRun) -> HostSelected:
    """Ask a scheduler for a host; its claim records the host on the instance (so a resumed build finds it)."""
    run.step = states.SCHEDULING
    t0 = env.clock.now()
    selected = await _call(env, Target("scheduler"), select_host_message(run.instance_uuid, run.build))
    assert isinstance(selected, HostSelected)
    run.events.host = selected.host
    run.events.add("conductor_schedule_and_build_instances", t0, env.clock.now(), "Success",
                   details=f"host {selected.host}")
    return selected


async def _network(env: TaskEnv, run: TaskRun, selected: HostSelected,
                   made: list[PortRecord] | None) -> list[PortRecord]:
    """The server's ports (those an earlier run made, else new ones), their flows in place on the host."""
    run.step = states.NETWORKING
    t0 = env.clock.now()
    ports = made
    if ports is None:
        reqs, policy = await netsync.prepare_networking(env, [n.model_dump() for n in run.build.networks],
                                                        selected.host, run.build.project_id)
        ports = await env.db.write(_networking, env, run, selected, reqs, policy)
    await netsync.ports_created(env, ports)  # the host's flows are in place before the guest starts
    await sgsync.members_changed(env, ports)  # the peers of its groups learn its addresses
    run.events.add("compute_allocate_network", t0, env.clock.now(), "Success")
    return ports


async def _spawn(env: TaskEnv, run: TaskRun, selected: HostSelected, ports: list[PortRecord]) -> None:
    """Ask the host to start the guest (a host that holds it already, from an earlier run, keeps it)."""
    # No block_device_mapping write: Canopy's guests have no block devices besides the root disk and the
    # config drive, which the agent makes as it spawns. The step had no work of its own and was a statement
    # visible for no time; a boot goes from networking to spawning in one write (issue 18).
    run.step = states.SPAWNING
    t0 = env.clock.now()
    await env.db.write(records.update_instance, run.instance_uuid, env.clock.now(), task_state=states.SPAWNING)
    await _call(env, Target("agent", selected.host), SpawnInstance(instance=_instance_spec(run, ports)))
    run.events.add("compute_spawn", t0, env.clock.now(), "Success")


def _networking(conn: Connection, env: TaskEnv, run: TaskRun, selected: HostSelected, reqs: list[dict[str, Any]],
                policy: Any) -> list[PortRecord]:
    """Record the host, then give the server its ports and addresses on the networks it asked for."""
    now = env.clock.now()
    ports: list[PortRecord] = []
    addresses: dict[str, list[dict[str, Any]]] = {}
    groups = sgsync.boot_groups(run.build.security_groups, run.build.project_id)
    for index, req in enumerate(reqs):
        # Ports list oldest first: a microsecond apart, they keep the order the server asked for its NICs.
        created = now + timedelta(microseconds=index)
        if req.get("port_id"):  # a port the user made beforehand, claimed for this server by the api
            port = _bind_kept_port(conn, req["port_id"], run.instance_uuid, selected, created)
        else:
            fixed = [{"ip_address": req["fixed_ip"]}] if req.get("fixed_ip") else None
            port = netports.create_port(
                conn, network=req["network"], subnets=req["subnets"], project_id=run.build.project_id,
                device_id=run.instance_uuid, device_owner=f"compute:{selected.availability_zone}",
                host_id=selected.host, fixed_ips=fixed, now=created, policy=policy, security_groups=groups)
        ports.append(port)
        addresses.setdefault(req["network"]["name"] or req["network"]["id"], []).extend(
            {"version": 6 if ":" in ip["ip_address"] else 4, "addr": ip["ip_address"], "mac": port.mac_address}
            for ip in port.fixed_ips)
    # One write: the host, the addresses, and the step (its rows are visible together at commit).
    records.update_instance(conn, run.instance_uuid, now, host=selected.host, addresses=addresses,
                            availability_zone=selected.availability_zone, task_state=states.NETWORKING)
    return ports


async def _call(env: TaskEnv, target: Target, msg: Message) -> Message:
    """A call that waits out a route not known yet: a conductor just (re)started learns its agents and
    schedulers as they next speak, and a resumed build must not fail for that (conductor.no_route_wait_s)."""
    deadline = env.clock.monotonic() + env.settings.conductor.no_route_wait_s
    delay = 0.1
    while True:
        try:
            return await env.bus.call(target, msg, timeout=env.settings.conductor.agent_call_timeout_s)
        except NoRoute:
            if env.clock.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _bind_kept_port(conn: Connection, port_id: str, uuid: str, selected: HostSelected, now: Any) -> PortRecord:
    """Bind a port the server was given at create to the chosen host; its record."""
    from canopy.db import tables_cell as c
    from canopy.network.port_views import rows_where

    found = rows_where(conn, c.ports.c.id == port_id)
    if not found or found[0][0]["device_id"] != uuid:
        raise RuntimeError(f"port {port_id} is no longer this server's (it was deleted or taken)")
    netports.update_port(conn, port_id, {"host_id": selected.host,
                                         "device_owner": f"compute:{selected.availability_zone}"}, now=now)
    row, ips = rows_where(conn, c.ports.c.id == port_id)[0]
    return PortRecord.of_row(row, ips)


def _instance_spec(run: TaskRun, ports: list[PortRecord]) -> InstanceSpec:
    p = run.build
    flavor = p.flavor
    # the subnets of each network, for the guest's static addressing (the config drive's network_data)
    subnets = {req.network["id"]: req.subnets for req in p.networks}
    return InstanceSpec(
        uuid=run.instance_uuid, name=p.name, hostname=p.hostname, project_id=p.project_id,
        vcpus=flavor.vcpus, memory_mb=flavor.memory_mb, disk_gb=flavor.disk_gb, image_id=p.image_id,
        flavor_extra_specs=flavor.extra_specs,
        ports=[PortSpec(id=pt.id, mac_address=pt.mac_address, network_id=pt.network_id,
                        fixed_ips=pt.fixed_ips, subnets=subnets.get(pt.network_id, [])) for pt in ports],
        key_data=p.key_data, user_data=p.user_data, metadata=p.metadata, admin_pass=p.admin_pass,
    )


def _finish_active(conn: Connection, env: TaskEnv, run: TaskRun) -> None:
    now = env.clock.now()
    records.update_instance(conn, run.instance_uuid, now, vm_state=states.ACTIVE, task_state=None,
                            power_state=int(PowerState.RUNNING), launched_at=now, progress=100)
    records.finish_action(conn, run.events.action_id, now)
    run.events.write(conn)
    records.delete_task(conn, run.id)


async def fail_build(env: TaskEnv, run: TaskRun, exc: BaseException) -> None:
    """ERROR with a fault naming the step; give back the claim, the ports and the guest.

    As in Nova, a failed build keeps no host (the fault names it): an instance holds a claim exactly
    while its `host` is set, and `claims.unclaim` clears the one with the other.
    """
    message, details = describe_exception(exc)
    where = f" on {run.host}" if run.host else ""
    fault = f"Build failed at {run.step}{where}: {message}"
    log.warning("instance %s: %s", run.instance_uuid, fault)
    if run.step == states.SPAWNING and run.host:
        try:
            await env.bus.call(Target("agent", run.host), DestroyInstance(instance_uuid=run.instance_uuid),
                                timeout=30)
        except BusError as cleanup_exc:
            log.warning("instance %s: cleanup on %s failed: %s", run.instance_uuid, run.host, cleanup_exc)
    now = env.clock.now()
    run.events.add(_EVENT_OF_STEP.get(run.step, run.step), now, now, "Error", traceback=details, details=message)
    flavor = run.build.flavor

    removed: list[dict[str, Any]] = []
    kept: list[PortChange] = []

    def write(conn: Connection) -> None:
        # The claim the instance holds, whoever made it: a scheduler's reply this run never got (a timeout
        # after the claim committed) left run.host unset, and the claim must still go back.
        claims.unclaim(conn, run.instance_uuid, flavor.vcpus, flavor.memory_mb, flavor.disk_gb, now)
        kept.extend(interfaces.unbind_kept_ports(conn, run.instance_uuid, now))
        removed.extend(netports.remove_ports_of_device(conn, run.instance_uuid))
        records.update_instance(conn, run.instance_uuid, now, vm_state=states.ERROR, task_state=None,
                                power_state=int(PowerState.NOSTATE))
        records.add_fault(conn, run.instance_uuid, message=fault, details=details, host=run.host,
                          task_state=run.step, request_id=run.request_id, now=now)
        records.finish_action(conn, run.events.action_id, now, message="Error")
        run.events.write(conn)
        records.delete_task(conn, run.id)

    await env.db.write(write)
    await netsync.ports_removed(env, removed)
    if kept:
        await env.netsync.ports_changed(kept)
    await notify.task_failed(env, run, getattr(exc, "kind", None) or type(exc).__name__, message,
                             vm_state=states.ERROR, task_state=None)


_EVENT_OF_STEP = {
    states.SCHEDULING: "conductor_schedule_and_build_instances",
    states.NETWORKING: "compute_allocate_network",
    states.BLOCK_DEVICE_MAPPING: "compute_block_device_mapping",
    states.SPAWNING: "compute_spawn",
}
