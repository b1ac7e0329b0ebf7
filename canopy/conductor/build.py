"""The boot of a server: scheduling → networking → spawning → ACTIVE, or ERROR with a fault that names the
step and the cause (no block_device_mapping step: it has no work in Canopy)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from canopy import states
from canopy.conductor import netsync, records
from canopy.conductor.taskrun import TaskRun, describe_exception
from canopy.network import ports as netports
from canopy.network.port_record import PortRecord
from canopy.observability import notifications as notify
from canopy.rpc.base import BusError, Target
from canopy.rpc.calls import DestroyInstance, HostSelected, InstanceSpec, PortSpec, SpawnInstance
from canopy.scheduler import claims
from canopy.scheduler.client import select_host_message
from canopy.states import PowerState

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor")


async def run_build(env: TaskEnv, run: TaskRun) -> None:
    """Drive one server's boot to ACTIVE (a failure raises: the dispatch ends it with fail_build)."""
    if (run.task.get("attempts", 1) > 1 or run.task.get("resumed")) and not await _resumable(env, run):
        return
    p = run.build
    await notify.task_started(env, run)
    run.step = states.SCHEDULING
    t0 = env.clock.now()
    selected = await env.bus.call(Target("scheduler"), select_host_message(run.instance_uuid, p),
                                  timeout=env.settings.conductor.agent_call_timeout_s)
    assert isinstance(selected, HostSelected)
    run.host = selected.host
    run.events.host = selected.host
    run.events.add("conductor_schedule_and_build_instances", t0, env.clock.now(), "Success",
                   details=f"host {selected.host}")

    run.step = states.NETWORKING
    t0 = env.clock.now()
    reqs, policy = await netsync.prepare_networking(env, [n.model_dump() for n in p.networks], selected.host,
                                                    p.project_id)
    ports = await env.db.write(_networking, env, run, selected, reqs, policy)
    await netsync.ports_created(env, ports)  # the host's flows are in place before the guest starts
    run.events.add("compute_allocate_network", t0, env.clock.now(), "Success")

    # No block_device_mapping write: Canopy's guests have no block devices besides the root disk and the
    # config drive, which the agent makes as it spawns. The step had no work of its own and was a statement
    # visible for no time; a boot goes from networking to spawning in one write (issue 18: ≤ 20 per boot).
    run.step = states.SPAWNING
    t0 = env.clock.now()
    await env.db.write(records.update_instance, run.instance_uuid, env.clock.now(), task_state=states.SPAWNING)
    await env.bus.call(Target("agent", selected.host), SpawnInstance(instance=_instance_spec(run, ports)),
                       timeout=env.settings.conductor.agent_call_timeout_s)
    run.events.add("compute_spawn", t0, env.clock.now(), "Success")
    await env.db.write(_finish_active, env, run)
    await notify.task_ended(env, run, vm_state=states.ACTIVE, task_state=None, power_state=1,
                            launched_at=env.clock.now(), addresses=notify.addresses_of(run, ports))


async def _resumable(env: TaskEnv, run: TaskRun) -> bool:
    """A build another conductor lost: start over if it never got past scheduling, else fail it."""
    instance = await env.db.read_fresh(records.load_instance, run.instance_uuid)
    if instance is None or instance["deleted"]:
        await env.db.write(records.delete_task, run.id)
        return False
    if instance["task_state"] == "scheduling" and not instance["host"]:
        return True
    run.step = instance["task_state"] or ""
    run.host = instance["host"]
    raise RuntimeError(f"the conductor driving this build stopped during {run.step}; the build was abandoned")


def _networking(conn: Connection, env: TaskEnv, run: TaskRun, selected: HostSelected, reqs: list[dict[str, Any]],
                policy: Any) -> list[PortRecord]:
    """Record the host, then give the server its ports and addresses on the networks it asked for."""
    now = env.clock.now()
    ports: list[PortRecord] = []
    addresses: dict[str, list[dict[str, Any]]] = {}
    for req in reqs:
        fixed = [{"ip_address": req["fixed_ip"]}] if req.get("fixed_ip") else None
        port = netports.create_port(
            conn, network=req["network"], subnets=req["subnets"], project_id=run.build.project_id,
            device_id=run.instance_uuid, device_owner=f"compute:{selected.availability_zone}",
            host_id=selected.host, fixed_ips=fixed, now=now, policy=policy)
        ports.append(port)
        addresses.setdefault(req["network"]["name"] or req["network"]["id"], []).extend(
            {"version": 6 if ":" in ip["ip_address"] else 4, "addr": ip["ip_address"], "mac": port.mac_address}
            for ip in port.fixed_ips)
    # One write: the host, the addresses, and the step (its rows are visible together at commit).
    records.update_instance(conn, run.instance_uuid, now, host=selected.host, addresses=addresses,
                            availability_zone=selected.availability_zone, task_state=states.NETWORKING)
    return ports


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
        key_data=p.key_data, user_data=p.user_data, metadata=p.metadata,
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
    while its `host` is set.
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

    def write(conn: Connection) -> None:
        if run.host:
            claims.release(conn, run.host, flavor.vcpus, flavor.memory_mb, flavor.disk_gb, now)
        removed.extend(netports.remove_ports_of_device(conn, run.instance_uuid))
        records.update_instance(conn, run.instance_uuid, now, vm_state=states.ERROR, task_state=None,
                                power_state=int(PowerState.NOSTATE), host=None)
        records.add_fault(conn, run.instance_uuid, message=fault, details=details, host=run.host,
                          task_state=run.step, request_id=run.request_id, now=now)
        records.finish_action(conn, run.events.action_id, now, message="Error")
        run.events.write(conn)
        records.delete_task(conn, run.id)

    await env.db.write(write)
    await netsync.ports_removed(env, removed)
    await notify.task_failed(env, run, getattr(exc, "kind", None) or type(exc).__name__, message,
                             vm_state=states.ERROR, task_state=None)


_EVENT_OF_STEP = {
    states.SCHEDULING: "conductor_schedule_and_build_instances",
    states.NETWORKING: "compute_allocate_network",
    states.BLOCK_DEVICE_MAPPING: "compute_block_device_mapping",
    states.SPAWNING: "compute_spawn",
}
