"""attach_interface / detach_interface (os-interface), and what a server's deletion does to the ports a
user created beforehand.

attach: the api claimed the port for the server (a port given by the user is kept when the server goes,
as Nova; one made on a network for the attach is the server's). The conductor binds it to the server's
host, waits until the host's flows have it, asks the agent to plug the tap and hot-plug the NIC, and
records the new addresses. detach: the agent unplugs the NIC, then a kept port is unbound (its addresses
stay with it) and the server's own port is deleted. A server without a host (shelved offloaded) just has
its records changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from canopy.conductor import mobility as mob
from canopy.conductor import netsync, records
from canopy.conductor.taskrun import TaskRun
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network import ports as netports
from canopy.network.port_views import get_port, ports_of_devices
from canopy.rpc.calls import AttachInterface, DetachInterface, PortChange

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

p = c.ports.c


def unbind_kept_ports(conn: Connection, device_id: str, now: Any, port_id: str | None = None) -> list[PortChange]:
    """Give back the ports a user created before attaching them (all of the device's, or one): unbound
    from the server and its host, addresses kept; the changes for the hosts that must forget them."""
    where = [p.device_id == device_id, p.preserve_on_delete.is_(True)]
    if port_id is not None:
        where.append(p.id == port_id)
    rows = conn.execute(select(p.id, p.network_id, p.host_id).where(*where)).all()
    for r in rows:
        netports.update_port(conn, r.id, {"device_id": "", "device_owner": "", "host_id": ""}, now=now)
    if rows:
        conn.execute(update(c.ports).where(p.id.in_([r.id for r in rows])).values(preserve_on_delete=None))
    return [PortChange(port_id=r.id, network_id=r.network_id, old_host=r.host_id or "") for r in rows]


def rebind_ports(conn: Connection, device_id: str, host: str, now: Any) -> list[PortChange]:
    """Bind every port of a server to `host` ("": unbind them), each with its OpenFlow number there."""
    rows = conn.execute(select(p.id, p.network_id, p.host_id).where(p.device_id == device_id)).all()
    for r in rows:
        netports.update_port(conn, r.id, {"host_id": host}, now=now)
    return [PortChange(port_id=r.id, network_id=r.network_id, old_host=r.host_id or "") for r in rows]


async def addresses_of(env: TaskEnv, uuid: str) -> dict[str, list[dict[str, Any]]]:
    """The server's addresses by network name, from its ports (as a boot records them)."""
    ports = (await env.db.read_fresh(ports_of_devices, [uuid]))[uuid]
    ids = sorted({pt["network_id"] for pt in ports})
    names = await env.dbs.global_db.read(_network_names, ids) if ids else {}
    out: dict[str, list[dict[str, Any]]] = {}
    for pt in ports:
        out.setdefault(names.get(pt["network_id"]) or pt["network_id"], []).extend(
            {"version": 6 if ":" in ip["ip_address"] else 4, "addr": ip["ip_address"], "mac": pt["mac_address"]}
            for ip in pt["fixed_ips"])
    return out


def _network_names(conn: Connection, ids: list[str]) -> dict[str, str]:
    n = g.networks.c
    return {r.id: r.name for r in conn.execute(select(n.id, n.name).where(n.id.in_(ids)))}


def _bind(conn: Connection, port_id: str, host: str, now: Any) -> PortChange:
    row = conn.execute(select(p.network_id, p.host_id).where(p.id == port_id)).one()
    netports.update_port(conn, port_id, {"host_id": host}, now=now)
    return PortChange(port_id=port_id, network_id=row.network_id, old_host=row.host_id or "")


async def run_attach_interface(env: TaskEnv, run: TaskRun) -> None:
    """Bind the claimed port to the server's host, its flows first, then hot-plug the NIC."""
    inst = await mob.load(env, run)
    port_id = run.args.port_id or ""
    run.step = "interface_attaching"
    t0 = env.clock.now()
    if inst["host"]:
        change = await env.db.write(_bind, port_id, inst["host"], env.clock.now())
        await env.netsync.ports_changed([change], wait=True)  # the flows are in place before the NIC
        spec = await mob.spec_of(env, inst)
        port = next(pt for pt in spec.ports if pt.id == port_id)
        await mob.agent_call(env, inst["host"], AttachInterface(instance_uuid=run.instance_uuid, port=port))
    run.events.add("compute_attach_interface", t0, env.clock.now(), "Success", details=port_id)
    await mob.finish(env, run, addresses=await addresses_of(env, run.instance_uuid))


async def attach_failed(env: TaskEnv, run: TaskRun, exc: Exception) -> None:
    """The claimed port goes back (a user's unbound, the server's own deleted); the server gets a fault."""
    inst = await env.db.read_fresh(records.load_instance, run.instance_uuid)
    if inst is not None and inst["host"] and run.args.port_id:
        try:
            await mob.agent_call(env, inst["host"], DetachInterface(instance_uuid=run.instance_uuid,
                                                                    port_id=run.args.port_id))
        except Exception:  # the agent's reconcile removes a NIC its port no longer names
            pass
    await _release_port(env, run)
    await mob.fail(env, run, "attach_interface", exc, addresses=await addresses_of(env, run.instance_uuid))


async def _release_port(env: TaskEnv, run: TaskRun) -> None:
    port_id = run.args.port_id or ""
    now = env.clock.now()
    inst = await env.db.read_fresh(records.load_instance, run.instance_uuid)
    policy = await netsync.release_policy(env, inst["project_id"]) if inst else None

    def write(conn: Connection) -> tuple[list[PortChange], list[dict[str, Any]]]:
        kept = unbind_kept_ports(conn, run.instance_uuid, now, port_id)
        view = None if kept else get_port(conn, port_id)
        if view is None or view["device_id"] != run.instance_uuid:
            return kept, []
        netports.delete_port(conn, port_id, now=now, **({"policy": policy} if policy is not None else {}))
        return kept, [view]

    kept, removed = await env.db.write(write)
    await mob.ports_moved(env, kept)
    await netsync.ports_removed(env, removed)


async def run_detach_interface(env: TaskEnv, run: TaskRun) -> None:
    """Unplug the NIC, then give back (a user's port) or delete (the server's own) the port."""
    inst = await mob.load(env, run)
    run.step = "interface_detaching"
    t0 = env.clock.now()
    if inst["host"]:
        await mob.agent_call(env, inst["host"], DetachInterface(instance_uuid=run.instance_uuid,
                                                                port_id=run.args.port_id or ""))
    await _release_port(env, run)
    run.events.add("compute_detach_interface", t0, env.clock.now(), "Success", details=run.args.port_id or "")
    await mob.finish(env, run, addresses=await addresses_of(env, run.instance_uuid))
