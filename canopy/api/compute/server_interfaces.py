"""os-interface: a server's network interfaces listed, shown, attached (`openstack server add port` /
`add network`) and detached (`remove port`). The api claims or creates the port here, then a durable task
has the conductor bind it to the server's host and the host's agent plug it (canopy/conductor/interfaces.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy import states
from canopy.api.compute.common import cell_db, check_unlocked, cloud_of, load_visible_instance
from canopy.api.compute.microversion import mv
from canopy.api.compute.server_actions import start_action
from canopy.api.compute.server_ports import claim_port, port_in_use
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, empty_response, is_uuid, json_response, read_object, route
from canopy.api.network.common import address_policy
from canopy.api.network.networks import can_see
from canopy.network import networks as nets
from canopy.network import ports as netports
from canopy.network.errors import NetworkError
from canopy.network.port_views import get_port, ports_of_devices
from canopy.rpc.tasks import ActionPayload


def render_attachment(view: dict[str, Any]) -> dict[str, Any]:
    """Nova's interfaceAttachment."""
    return {"port_state": view["status"], "port_id": view["id"], "net_id": view["network_id"],
            "mac_addr": view["mac_address"],
            "fixed_ips": [{"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]} for f in view["fixed_ips"]]}


async def _server_ports(request: Request) -> list[dict[str, Any]]:
    uuid, rc = request.path_params["server_id"], ctx(request)

    def read(conn: Connection) -> list[dict[str, Any]]:
        load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        return ports_of_devices(conn, [uuid])[uuid]

    return await cell_db(request).read_fresh(read)


def _with_tag(request: Request, body: dict[str, Any], tag: Any = None) -> dict[str, Any]:
    return {**body, "tag": tag} if mv(request) >= (2, 70) else body


async def list_interfaces(request: Request) -> Response:
    """GET /servers/{id}/os-interface."""
    views = await _server_ports(request)
    return json_response({"interfaceAttachments": [_with_tag(request, render_attachment(v)) for v in views]})


async def show_interface(request: Request) -> Response:
    """GET /servers/{id}/os-interface/{port_id}."""
    port_id = request.path_params["port_id"]
    for view in await _server_ports(request):
        if view["id"] == port_id:
            return json_response({"interfaceAttachment": _with_tag(request, render_attachment(view))})
    raise ApiError(404, f"Port {port_id} could not be found.")


def _parse(body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(port_id, net_id, the fixed IP asked for) of an attach body."""
    extra = set(body) - {"port_id", "net_id", "fixed_ips", "tag"}
    if extra:
        raise bad_request(f"Invalid input for field/attribute interfaceAttachment. Additional properties are not "
                          f"allowed ({', '.join(sorted(extra))} was unexpected)")
    port_id, net_id, fixed = body.get("port_id"), body.get("net_id"), body.get("fixed_ips")
    for name, value in (("port_id", port_id), ("net_id", net_id)):
        if value is not None and (not isinstance(value, str) or not is_uuid(value)):
            raise bad_request(f"Invalid input for field/attribute {name}. Value: {value!r}. It is not a uuid.")
    if port_id and net_id:
        raise bad_request("Must not input both network_id and port_id")
    if not port_id and not net_id:
        raise bad_request("Invalid input for field/attribute interfaceAttachment. A port_id or a net_id is required.")
    ip = None
    if fixed is not None:
        if port_id or not isinstance(fixed, list) or len(fixed) != 1 or not isinstance(fixed[0], dict) \
                or not isinstance(fixed[0].get("ip_address"), str):
            raise bad_request("Invalid input for field/attribute fixed_ips. One {\"ip_address\": …} with a net_id.")
        ip = fixed[0]["ip_address"]
    return port_id, net_id, ip


async def _claim_given(request: Request, inst: dict[str, Any], port_id: str) -> None:
    rc, now = ctx(request), cloud_of(request).clock.now()

    def write(conn: Connection) -> None:
        view = get_port(conn, port_id)
        if view is None or not (rc.is_admin or view["project_id"] == inst["project_id"]):
            raise ApiError(404, f"Port {port_id} could not be found.")
        if view["device_id"]:
            raise port_in_use(port_id)
        claim_port(conn, port_id, inst["uuid"], now)

    await cell_db(request).write(write)


async def _create_on_network(request: Request, inst: dict[str, Any], net_id: str, ip: str | None) -> str:
    rc, cloud = ctx(request), cloud_of(request)
    loaded = await cloud.dbs.global_db.read_fresh(nets.load_network, net_id)
    if loaded is None or not can_see(rc, loaded[0]):
        raise ApiError(404, f"Network {net_id} could not be found.")
    network, subnets = loaded
    if ip is not None and not (rc.is_admin or network["project_id"] == rc.project_id):
        raise ApiError(403, "Policy doesn't allow a fixed IP address on this network to be requested.")
    policy = await address_policy(request, inst["project_id"])
    now = cloud.clock.now()
    try:
        port = await cell_db(request).write(lambda conn: netports.create_port(
            conn, network=network, subnets=subnets, project_id=inst["project_id"], device_id=inst["uuid"],
            device_owner=f"compute:{inst['availability_zone'] or 'nova'}", now=now, policy=policy,
            fixed_ips=[{"ip_address": ip}] if ip else None))
    except NetworkError as err:
        raise ApiError(err.status, err.message) from None
    return port.id


async def attach_interface(request: Request) -> Response:
    """POST /servers/{id}/os-interface: claim (port_id) or create (net_id) the port, then the task."""
    uuid, rc = request.path_params["server_id"], ctx(request)
    port_id, net_id, ip = _parse(await read_object(request, "interfaceAttachment"))
    inst = await cell_db(request).read_fresh(load_visible_instance, uuid, rc.project_id, rc.is_admin)
    check_unlocked(inst, rc.is_admin)
    rule = states.ACTIONS["attach_interface"]
    if inst["vm_state"] not in rule.from_vm_states or inst["task_state"] is not None:
        where = f"task_state {inst['task_state']}" if inst["task_state"] else f"vm_state {inst['vm_state']}"
        raise ApiError(409, f"Cannot 'attach_interface' instance {uuid} while it is in {where}")
    if port_id:
        await _claim_given(request, inst, port_id)
    else:
        port_id = await _create_on_network(request, inst, net_id or "", ip)
    try:
        await start_action(request, uuid, "attach_interface", ActionPayload(port_id=port_id))
    except ApiError:
        await cell_db(request).write(_give_back, port_id, uuid, cloud_of(request).clock.now())
        raise
    view = await cell_db(request).read_fresh(get_port, port_id)
    return json_response({"interfaceAttachment": _with_tag(request, render_attachment(view or {}))})


def _give_back(conn: Connection, port_id: str, uuid: str, now: Any) -> None:
    """Undo a claim or creation whose task could not start (nothing half-written)."""
    from sqlalchemy import update

    from canopy.db import tables_cell as c

    p = c.ports.c
    kept = conn.execute(update(c.ports).where(p.id == port_id, p.device_id == uuid, p.preserve_on_delete.is_(True))
                        .values(device_id="", device_owner="", preserve_on_delete=None, updated_at=now))
    if kept.rowcount == 0:
        netports.delete_port(conn, port_id)


async def detach_interface(request: Request) -> Response:
    """DELETE /servers/{id}/os-interface/{port_id}: the task unplugs it and gives it back (or deletes it)."""
    uuid, port_id = request.path_params["server_id"], request.path_params["port_id"]
    if port_id not in {v["id"] for v in await _server_ports(request)}:
        raise ApiError(404, f"Port {port_id} could not be found.")
    await start_action(request, uuid, "detach_interface", ActionPayload(port_id=port_id))
    return empty_response(202)


ROUTES: list[BaseRoute] = [
    route("/v2.1/servers/{server_id}/os-interface", list_interfaces, ["GET"], "compute:interfaces:index"),
    route("/v2.1/servers/{server_id}/os-interface", attach_interface, ["POST"], "compute:interfaces:create"),
    route("/v2.1/servers/{server_id}/os-interface/{port_id}", show_interface, ["GET"], "compute:interfaces:show"),
    route("/v2.1/servers/{server_id}/os-interface/{port_id}", detach_interface, ["DELETE"],
          "compute:interfaces:delete"),
]
