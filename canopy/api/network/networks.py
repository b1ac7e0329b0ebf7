"""Network v2.0 networks: list, show, create, update, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.http import ctx, empty_response, is_uuid, route
from canopy.api.network import common as cm
from canopy.api.network.qos import usable_qos_policy
from canopy.context import RequestContext
from canopy.network import limits, ports, qos
from canopy.network import networks as nets
from canopy.network.errors import NetworkInUse
from canopy.network.segments import check_physnet
from canopy.rpc.calls import PortChange

FILTERS: dict[str, tuple[str, cm.Converter]] = {
    "id": ("id", cm.as_text), "name": ("name", cm.as_text), "status": ("status", cm.as_text),
    "description": ("description", cm.as_text), "shared": ("shared", cm.as_bool),
    "router:external": ("external", cm.as_bool), "admin_state_up": ("admin_state_up", cm.as_bool),
    "project_id": ("project_id", cm.as_text), "tenant_id": ("project_id", cm.as_text), "mtu": ("mtu", cm.as_int),
}
ADMIN_FILTERS: dict[str, tuple[str, cm.Converter]] = {
    "provider:network_type": ("network_type", cm.as_text),
    "provider:physical_network": ("physical_network", cm.as_text),
    "provider:segmentation_id": ("segmentation_id", cm.as_int),
}
PROVIDER = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")
ARP_RESPONDER = "canopy:arp_responder"  # set at creation only: hosts cache a network's topology
ADMIN_ONLY = ("shared", "router:external", ARP_RESPONDER, *PROVIDER)
COMMON = frozenset({"name", "description", "admin_state_up", "shared", "router:external", "mtu",
                    "port_security_enabled", "availability_zone_hints", "is_default", "qos_policy_id"})
CREATE = COMMON | {"project_id", "tenant_id", ARP_RESPONDER, *PROVIDER}
UPDATE = COMMON | {ARP_RESPONDER, *PROVIDER}


def can_see(c: RequestContext, row: dict[str, Any]) -> bool:
    """Admins see every network; a project its own, shared and external ones."""
    return c.is_admin or row["project_id"] == c.project_id or row["shared"] or row["external"]


async def visible_network(request: Request, network_id: str) -> dict[str, Any]:
    """The network row, or 404 NetworkNotFound when it does not exist or the caller cannot see it."""
    row = await cm.global_db(request).read_fresh(nets.get_network, network_id) if is_uuid(network_id) else None
    if row is None or not can_see(ctx(request), row):
        raise cm.missing("network", network_id)
    return row


async def owned_network(request: Request, network_id: str, action: str) -> dict[str, Any]:
    """A network the caller may change: an admin any, a project its own (another's visible one is 403)."""
    row = await visible_network(request, network_id)
    c = ctx(request)
    if not c.is_admin and row["project_id"] != c.project_id:
        raise cm.policy(f"rule:{action}_network")
    return row


async def view_of(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    """The network's view with its subnet ids."""
    ids = await cm.global_db(request).read_fresh(nets.subnet_ids_of, [row["id"]])
    return nets.network_view(row, ids[row["id"]], admin=ctx(request).is_admin)


@cm.neutron_errors
async def list_networks(request: Request) -> Response:
    """GET /v2.0/networks"""
    c = ctx(request)
    filters = cm.filters_of(request, {**FILTERS, **(ADMIN_FILTERS if c.is_admin else {})})
    limit, marker = cm.page_of(request)

    def work(conn: Connection) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
        rows = nets.list_networks(conn, filters=filters, project_id=None if c.is_admin else c.project_id,
                                  limit=limit + 1, marker=marker)
        return rows, nets.subnet_ids_of(conn, [r["id"] for r in rows])

    rows, ids = await cm.global_db(request).read(work)
    return cm.collection(request, "networks", [nets.network_view(r, ids[r["id"]], admin=c.is_admin) for r in rows],
                         limit)


@cm.neutron_errors
async def show_network(request: Request) -> Response:
    """GET /v2.0/networks/{id}"""
    row = await visible_network(request, request.path_params["network_id"])
    return cm.item(request, "network", await view_of(request, row))


def provider_values(body: dict[str, Any]) -> dict[str, Any]:
    """Column values for the provider attributes: flat needs a physical network; vxlan takes an optional
    segmentation ID (chosen when absent). No type at all means a VXLAN tenant network."""
    kind = cm.text(body, "provider:network_type")
    physnet = body.get("provider:physical_network")
    seg = cm.integer(body, "provider:segmentation_id", 1, nets.VXLAN_MAX)
    if kind is None:
        if physnet is not None or seg is not None:
            raise cm.invalid("provider:network_type", "provider:network_type is required with provider attributes")
        return {"network_type": "vxlan"}
    if kind == "flat":
        if not isinstance(physnet, str) or not physnet or len(physnet) > 64:
            raise cm.invalid("provider:physical_network", "a flat network needs provider:physical_network")
        if seg is not None:
            raise cm.invalid("provider:segmentation_id", "a flat network takes no provider:segmentation_id")
        return {"network_type": "flat", "physical_network": physnet, "segmentation_id": None}
    if kind == "vxlan":
        if physnet is not None:
            raise cm.invalid("provider:physical_network", "a vxlan network takes no provider:physical_network")
        return {"network_type": "vxlan", "physical_network": None, "segmentation_id": seg}
    raise cm.invalid("provider:network_type", f"'{kind}' is not supported; use 'flat' or 'vxlan'")


def common_values(body: dict[str, Any]) -> dict[str, Any]:
    """Column values of the attributes both create and update take."""
    cm.only_default(body, "port_security_enabled", True)
    cm.only_default(body, "availability_zone_hints", [])
    cm.only_default(body, "is_default", False)
    values: dict[str, Any] = {
        "name": cm.text(body, "name"), "description": cm.text(body, "description", 1024),
        "admin_state_up": cm.flag(body, "admin_state_up"), "shared": cm.flag(body, "shared"),
        "external": cm.flag(body, "router:external"), "mtu": cm.integer(body, "mtu", 68, 9216),
    }
    return {k: v for k, v in values.items() if v is not None}


def check_admin_attributes(c: RequestContext, body: dict[str, Any], action: str) -> None:
    """shared, router:external and provider:* are set by admins only (403)."""
    if c.is_admin:
        return
    for key in ADMIN_ONLY:
        if key in body:
            raise cm.policy(f"rule:{action}_network and rule:{action}_network:{key}")


async def network_plan(request: Request, c: RequestContext, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The column values and QoS policy of one network to create, checked before anything is written."""
    check_admin_attributes(c, body, "create")
    values = {**common_values(body), **provider_values(body), "project_id": cm.owner_of(body, c)}
    if cm.flag(body, ARP_RESPONDER) is not None:
        values["arp_responder"] = cm.flag(body, ARP_RESPONDER)
    return values, await usable_qos_policy(request, body)


def insert_planned(conn: Connection, values: dict[str, Any], policy: Any, now: Any) -> dict[str, Any]:
    """Write one planned network (a flat one claims its physical network)."""
    if values["network_type"] == "flat":  # a physical network carries one network or one segment
        check_physnet(conn, "flat", values["physical_network"], None)
    row = nets.insert_network(conn, values, now)
    qos.set_network_policy(conn, row["id"], policy)
    return {**row, "qos_policy_id": policy}


@cm.neutron_errors
async def create_network(request: Request) -> Response:
    """POST /v2.0/networks: one network, or several ({"networks": [...]}) all in one transaction."""
    c = ctx(request)
    bodies, bulk = await cm.bodies_of(request, "network", CREATE)
    plans = [await network_plan(request, c, body) for body in bodies]
    now = cm.cloud_of(request).clock.now()
    rows = await cm.global_db(request).write(
        lambda conn: [insert_planned(conn, values, policy, now) for values, policy in plans])
    return cm.created(request, "network", [nets.network_view(r, [], admin=c.is_admin) for r in rows], bulk)


@cm.neutron_errors
async def update_network(request: Request) -> Response:
    """PUT /v2.0/networks/{id}"""
    c = ctx(request)
    network_id = request.path_params["network_id"]
    body = await cm.body_of(request, "network", UPDATE)
    await owned_network(request, network_id, "update")
    check_admin_attributes(c, body, "update")
    if any(k in body for k in PROVIDER):
        raise cm.invalid("provider:network_type", "Plugin does not support updating provider attributes")
    if ARP_RESPONDER in body:
        raise cm.invalid(ARP_RESPONDER, f"{ARP_RESPONDER} is set when the network is created")
    changes = common_values(body)
    new_qos = "qos_policy_id" in body
    policy = await usable_qos_policy(request, body) if new_qos else None

    def work(conn: Connection) -> dict[str, Any] | None:
        if new_qos:
            qos.set_network_policy(conn, network_id, policy)
        return nets.update_network(conn, network_id, changes, cm.cloud_of(request).clock.now())

    row = await cm.global_db(request).write(work)
    if row is None:
        raise cm.missing("network", network_id)
    if new_qos:  # every port of the network is re-sent to its host, by every conductor
        await cm.announce(request, [], [network_id], everywhere=True)
    return cm.item(request, "network", await view_of(request, row))


@cm.neutron_errors
async def delete_network(request: Request) -> Response:
    """DELETE /v2.0/networks/{id}: 409 while servers have ports on it; other ports go with it."""
    network_id = request.path_params["network_id"]
    await owned_network(request, network_id, "delete")
    subnet_ids = (await cm.global_db(request).read_fresh(nets.subnet_ids_of, [network_id])).get(network_id, [])

    def release_ports(conn: Connection) -> list[dict[str, Any]]:
        if ports.network_has_server_ports(conn, network_id):
            raise NetworkInUse(f"Unable to complete operation on network {network_id}. There are one or more "
                               "ports still in use on the network.")
        limits.drop_holds(conn, subnet_ids)  # a deleted network's addresses are held for nobody
        return ports.remove_ports_of_network(conn, network_id)

    removed = await cm.cell_db(request).write(release_ports)
    await cm.announce(request, [PortChange(port_id=v["id"], network_id=network_id, old_host=v["binding:host_id"])
                                for v in removed if v["binding:host_id"]])
    if not await cm.global_db(request).write(nets.delete_network, network_id):
        raise cm.missing("network", network_id)
    return empty_response()


ROUTES = [
    route("/v2.0/networks", list_networks, ["GET"], "network.networks.list"),
    route("/v2.0/networks", create_network, ["POST"], "network.networks.create"),
    route("/v2.0/networks/{network_id}", show_network, ["GET"], "network.networks.show"),
    route("/v2.0/networks/{network_id}", update_network, ["PUT"], "network.networks.update"),
    route("/v2.0/networks/{network_id}", delete_network, ["DELETE"], "network.networks.delete"),
]
