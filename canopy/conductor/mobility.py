"""What the mobility tasks share: the instance's spec rebuilt from the database, migration records,
moving a claim and ports to another host, and ending a task (success or fault)."""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, desc, insert, select, update

from canopy import states
from canopy.conductor import records
from canopy.conductor.taskrun import TaskRun, describe_exception
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.rpc.base import Target
from canopy.rpc.calls import HostSelected, InstanceSpec, PortChange, PortSpec, SelectHost
from canopy.scheduler import claims

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor")
m = c.migrations.c


class TaskFailed(Exception):
    """A mobility task failed after undoing what it could; the message is the fault's."""


class Undone(Exception):
    """A mobility task failed with `cause`; `extra(conn, now)` undoes its records in the failure's write."""

    def __init__(self, cause: Exception, extra: Callable[[Connection, Any], None] | None) -> None:
        super().__init__(str(cause))
        self.cause, self.extra = cause, extra


async def load(env: TaskEnv, run: TaskRun) -> dict[str, Any]:
    """The instance, fresh; its host becomes the run's."""
    inst = await env.db.read_fresh(records.load_instance, run.instance_uuid)
    if inst is None:
        raise TaskFailed(f"instance {run.instance_uuid} is gone")
    run.host = inst["host"]
    run.events.host = run.host
    return inst


async def spec_of(env: TaskEnv, inst: dict[str, Any], *, flavor: dict[str, Any] | None = None,
                  image_id: str | None = None) -> InstanceSpec:
    """The InstanceSpec the agent needs, from the instance row, its ports and their subnets."""
    from canopy.network.port_views import ports_of_devices

    ports = (await env.db.read_fresh(ports_of_devices, [inst["uuid"]]))[inst["uuid"]]
    subnet_ids = {ip["subnet_id"] for p in ports for ip in p.get("fixed_ips") or [] if ip.get("subnet_id")}
    subnets = await env.dbs.global_db.read(_subnets, sorted(subnet_ids)) if subnet_ids else []
    f = flavor or inst["flavor"]
    return InstanceSpec(
        uuid=inst["uuid"], name=inst["name"], hostname=inst["hostname"] or inst["name"],
        project_id=inst["project_id"], vcpus=f["vcpus"], memory_mb=f["ram"], disk_gb=f["disk"],
        image_id=image_id or inst["image_ref"], flavor_extra_specs=f.get("extra_specs") or {},
        ports=[PortSpec(id=p["id"], mac_address=p["mac_address"], network_id=p["network_id"],
                        fixed_ips=p.get("fixed_ips") or [],
                        subnets=[s for s in subnets if s["network_id"] == p["network_id"]]) for p in ports],
        key_data=inst["key_data"], user_data=inst["user_data"], metadata=inst["metadata"] or {})


def _subnets(conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
    s = g.subnets.c
    rows = conn.execute(select(s.id, s.network_id, s.cidr, s.gateway_ip, s.dns_nameservers, s.host_routes,
                               s.ip_version).where(s.id.in_(ids))).mappings()
    return [dict(r) for r in rows]


async def select_target(env: TaskEnv, inst: dict[str, Any], flavor: dict[str, Any], *,
                        force_host: str | None, exclude: list[str]) -> str:
    """A host for the instance's new place, claimed by the scheduler (the instance's host is not changed)."""
    msg = SelectHost(instance_uuid="", project_id=inst["project_id"], vcpus=flavor["vcpus"], memory_mb=flavor["ram"],
                     disk_gb=flavor["disk"], force_host=force_host, exclude_hosts=exclude,
                     availability_zone=None if force_host else inst["availability_zone"],
                     flavor_extra_specs={k: str(v) for k, v in (flavor.get("extra_specs") or {}).items()})
    reply = await env.bus.call(Target("scheduler"), msg, timeout=env.settings.conductor.agent_call_timeout_s)
    assert isinstance(reply, HostSelected)
    return reply.host


def new_migration(conn: Connection, inst: dict[str, Any], run: TaskRun, kind: str, *, source: str | None,
                  dest: str | None, new_flavor: dict[str, Any], status: str, now: Any) -> str:
    """Record a migration; its uuid."""
    uuid = str(uuidlib.uuid4())
    conn.execute(insert(c.migrations).values(
        uuid=uuid, instance_uuid=inst["uuid"], migration_type=kind, status=status, source_compute=source,
        dest_compute=dest, old_flavor=inst["flavor"], new_flavor=new_flavor, old_vm_state=inst["vm_state"],
        project_id=inst["project_id"], user_id=inst["user_id"], created_at=now, updated_at=now))
    return uuid


def set_migration(conn: Connection, uuid: str, now: Any, **values: Any) -> None:
    conn.execute(update(c.migrations).where(m.uuid == uuid).values(updated_at=now, **values))


def last_migration(conn: Connection, instance_uuid: str, status: str) -> dict[str, Any] | None:
    row = conn.execute(select(c.migrations).where(m.instance_uuid == instance_uuid, m.status == status)
                       .order_by(desc(m.id)).limit(1)).mappings().first()
    return dict(row) if row else None


def move_ports(conn: Connection, instance_uuid: str, host: str, now: Any) -> list[PortChange]:
    """Bind the instance's ports to `host`; the changes for the hosts' network agents."""
    p = c.ports.c
    rows = conn.execute(select(p.id, p.network_id, p.host_id).where(p.device_id == instance_uuid)).all()
    conn.execute(update(c.ports).where(p.device_id == instance_uuid).values(host_id=host, updated_at=now))
    return [PortChange(port_id=r.id, network_id=r.network_id, old_host=r.host_id or "") for r in rows]


def release(conn: Connection, host: str | None, flavor: dict[str, Any], now: Any) -> None:
    if host:
        claims.release(conn, host, flavor["vcpus"], flavor["ram"], flavor["disk"], now)


async def set_step(env: TaskEnv, run: TaskRun, task_state: str) -> None:
    run.step = task_state
    await env.db.write(records.update_instance, run.instance_uuid, env.clock.now(), task_state=task_state)


async def finish(env: TaskEnv, run: TaskRun, extra: Any = None, **values: Any) -> None:
    """End the task: the instance's new columns (task_state cleared), the action finished, the task gone.
    `extra(conn, now)` runs in the same transaction."""
    now = env.clock.now()

    def write(conn: Connection) -> None:
        if extra is not None:
            extra(conn, now)
        records.update_instance(conn, run.instance_uuid, now, task_state=None, **values)
        records.finish_action(conn, run.events.action_id, now)
        run.events.write(conn)
        records.delete_task(conn, run.id)

    await env.db.write(write)


async def fail(env: TaskEnv, run: TaskRun, action: str, exc: BaseException, extra: Any = None,
               **values: Any) -> None:
    """End the task with a fault naming the step and the cause; the instance keeps its vm_state unless
    `values` say otherwise. An `Undone` failure brings the cause and its own undo."""
    if isinstance(exc, Undone):
        extra = exc.extra
        exc = exc.cause
    message, details = describe_exception(exc)
    fault = f"{states.ACTION_NAMES.get(action, action)} failed at {run.step or 'start'} on " \
            f"{run.host or 'no host'}: {message}"
    log.warning("instance %s: %s", run.instance_uuid, fault)
    now = env.clock.now()
    run.events.add(f"compute_{action}", now, now, "Error", traceback=details, details=message)

    def write(conn: Connection) -> None:
        if extra is not None:
            extra(conn, now)
        records.update_instance(conn, run.instance_uuid, now, task_state=None, **values)
        records.add_fault(conn, run.instance_uuid, message=fault, details=details, host=run.host,
                          task_state=run.step or None, request_id=run.request_id, now=now)
        records.finish_action(conn, run.events.action_id, now, message="Error")
        run.events.write(conn)
        records.delete_task(conn, run.id)

    await env.db.write(write)


async def agent_call(env: TaskEnv, host: str, msg: Any, timeout_s: float | None = None) -> Any:
    """A call to a host's agent with the conductor's agent timeout (or a longer one for disk work)."""
    return await env.bus.call(Target("agent", host), msg,
                               timeout=timeout_s or env.settings.conductor.agent_call_timeout_s)


async def ports_moved(env: TaskEnv, changes: list[PortChange]) -> None:
    """Tell the network side the ports' hosts changed (the old host's flows go, the new one's come)."""
    if changes:
        try:
            await env.netsync.ports_changed(changes)
        except Exception:  # the periodic full sync repairs a lost delivery
            log.exception("port move notification failed")
