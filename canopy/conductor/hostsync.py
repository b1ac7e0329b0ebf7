"""What conductors do for agents of real hypervisors: tell an agent which guests its host should hold
(it reconciles on start; it has no database credentials), record the hypervisor details it reports,
and apply the power states it observes (a guest that shut itself down becomes SHUTOFF; one that died
too, with a fault)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update

from canopy import states
from canopy.conductor import records
from canopy.db import tables_cell as c
from canopy.rpc.calls import GuestPower, HostInstance, HostInstances, PortSpec, PowerStateSync, RegisterHost
from canopy.states import PowerState

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor")
i = c.instances.c
_OFF = (int(PowerState.SHUTDOWN), int(PowerState.CRASHED))
EVACUATION_PENDING = ("accepted", "done")  # rebuilt elsewhere (or being), the old guest maybe still here


def record_hypervisor(conn: Connection, msg: RegisterHost, now: dt.datetime) -> None:
    """Keep the accelerator and host CPU an agent reported (one row per host)."""
    if not msg.accelerator and not msg.cpu_info:
        return
    d = c.hypervisor_details.c
    values = {"accelerator": msg.accelerator, "cpu_info": msg.cpu_info, "updated_at": now}
    if conn.execute(update(c.hypervisor_details).where(d.host == msg.host).values(**values)).rowcount == 0:
        conn.execute(insert(c.hypervisor_details).values(host=msg.host, **values))


def load_host_instances(conn: Connection, host: str) -> list[dict[str, Any]]:
    """The instances the database places on a host, with their ports."""
    from canopy.network.port_views import ports_of_devices

    rows = [dict(r) for r in conn.execute(
        select(i.uuid, i.vm_state, i.power_state, i.task_state)
        .where(i.host == host, i.deleted.is_(False)).order_by(i.id)).mappings()]
    ports = ports_of_devices(conn, [r["uuid"] for r in rows]) if rows else {}
    for row in rows:
        row["ports"] = ports.get(row["uuid"], [])
    return rows


def evacuated_from(conn: Connection, host: str) -> list[str]:
    """Instances evacuated off `host` whose old guest it has not yet removed (evacuations not completed)."""
    m = c.migrations.c
    return list(conn.execute(select(m.instance_uuid).where(
        m.source_compute == host, m.migration_type == "evacuation", m.status.in_(EVACUATION_PENDING))
        .order_by(m.id)).scalars())


def complete_evacuations(conn: Connection, host: str, uuids: list[str], now: dt.datetime) -> int:
    """The old guests are gone from `host`: their evacuations are completed."""
    m = c.migrations.c
    return int(conn.execute(update(c.migrations).where(
        m.source_compute == host, m.migration_type == "evacuation", m.status.in_(EVACUATION_PENDING),
        m.instance_uuid.in_(uuids)).values(status="completed", updated_at=now)).rowcount)


async def list_host_instances(env: TaskEnv, host: str) -> HostInstances:
    """HostInstances for an agent's reconcile (read fresh: a guest booted a moment ago must be in it)."""
    rows, evacuated = await env.db.read_fresh(lambda conn: (load_host_instances(conn, host),
                                                             evacuated_from(conn, host)))
    return HostInstances(evacuated=evacuated, instances=[HostInstance(
        uuid=r["uuid"], vm_state=r["vm_state"], power_state=r["power_state"] or 0, task_state=r["task_state"],
        ports=[PortSpec(id=p["id"], mac_address=p["mac_address"], network_id=p["network_id"],
                        fixed_ips=p.get("fixed_ips") or []) for p in r["ports"]]) for r in rows])


def apply_guest_power(conn: Connection, host: str, g: GuestPower, now: dt.datetime) -> str | None:
    """Record one observed power state; what changed ("stopped", "power") or None.

    Skipped while a task runs on the instance (its own result is the truth), and when nothing differs."""
    row = conn.execute(select(i.vm_state, i.power_state, i.task_state)
                       .where(i.uuid == g.instance_uuid, i.host == host, i.deleted.is_(False))).mappings().first()
    if row is None or row["task_state"] is not None or row["power_state"] == g.power_state:
        return None
    values: dict[str, Any] = {"power_state": g.power_state, "updated_at": now}
    stopped = g.power_state in _OFF and row["vm_state"] == states.ACTIVE
    if stopped:
        values["vm_state"] = states.STOPPED
    # conditional on no task having started since the read: a user's action wins over a stale sync
    changed = conn.execute(update(c.instances).where(i.uuid == g.instance_uuid, i.task_state.is_(None))
                           .values(**values)).rowcount
    if not changed:
        return None
    if g.message:
        records.add_fault(conn, g.instance_uuid, message=f"Guest died on {host}: {g.message}",
                          details=f"power-state sync: hypervisor reason {g.reason!r}", host=host,
                          task_state=None, request_id=None, now=now)
    return "stopped" if stopped else "power"


async def sync_power_states(env: TaskEnv, msg: PowerStateSync) -> None:
    """Apply an agent's observed power states; unknown guests are logged for the operator."""
    now = env.clock.now()

    def write(conn: Connection) -> list[tuple[str, str]]:
        out = []
        for g in msg.guests:
            what = apply_guest_power(conn, msg.host, g, now)
            if what:
                out.append((g.instance_uuid, what))
        return out

    if msg.guests:
        for uuid, what in await env.db.write(write):
            log.info("power-state sync: instance %s on %s %s", uuid, msg.host,
                     "is now SHUTOFF" if what == "stopped" else "changed power state")
    if msg.evacuated_removed:
        n = await env.db.write(complete_evacuations, msg.host, msg.evacuated_removed, now)
        log.info("host %s removed %d evacuated guest(s): %s", msg.host, n, ", ".join(msg.evacuated_removed))
    if msg.unknown:
        log.warning("host %s runs guests the database does not know: %s", msg.host, ", ".join(msg.unknown))
