"""Network v2.0 subnets: list, show, create, update, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError
from canopy.api.http import ctx, empty_response, is_uuid, route
from canopy.api.network import common as cm
from canopy.api.network.networks import visible_network
from canopy.context import RequestContext
from canopy.network import limits, port_views
from canopy.network import subnets as sn
from canopy.network.errors import SubnetInUse

FILTERS: dict[str, tuple[str, cm.Converter]] = {
    "id": ("id", cm.as_text), "name": ("name", cm.as_text), "network_id": ("network_id", cm.as_text),
    "ip_version": ("ip_version", cm.as_int), "cidr": ("cidr", cm.as_text), "gateway_ip": ("gateway_ip", cm.as_text),
    "enable_dhcp": ("enable_dhcp", cm.as_bool), "project_id": ("project_id", cm.as_text),
    "tenant_id": ("project_id", cm.as_text), "segment_id": ("segment_id", cm.as_text),
    "description": ("description", cm.as_text),
}
UNSUPPORTED: dict[str, Any] = {"ipv6_ra_mode": None, "ipv6_address_mode": None, "subnetpool_id": None,
               "use_default_subnetpool": False, "service_types": []}
UPDATE = frozenset({"name", "description", "gateway_ip", "allocation_pools", "dns_nameservers", "host_routes",
                    "enable_dhcp", "segment_id", "service_types"})
READ_ONLY = frozenset({"id", "cidr", "ip_version", "network_id", "project_id", "tenant_id", "subnetpool_id"})
CREATE = UPDATE | {"network_id", "ip_version", "cidr", "project_id", "tenant_id", *UNSUPPORTED}


async def visible_subnet(request: Request, subnet_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The subnet row and its network row; 404 SubnetNotFound when the caller cannot see it (admins see
    all, a project its own subnets and those of shared networks)."""
    found = await cm.global_db(request).read_fresh(sn.get_subnet, subnet_id) if is_uuid(subnet_id) else None
    c = ctx(request)
    if found is None or not (c.is_admin or found[0]["project_id"] == c.project_id or found[1]["shared"]):
        raise cm.missing("subnet", subnet_id)
    return found


async def owned_subnet(request: Request, subnet_id: str, action: str) -> dict[str, Any]:
    """A subnet the caller may change: an admin any, a project its own or its network's (else 403)."""
    subnet, network = await visible_subnet(request, subnet_id)
    c = ctx(request)
    if not (c.is_admin or c.project_id in (subnet["project_id"], network["project_id"])):
        raise cm.policy(f"rule:{action}_subnet")
    return subnet


@cm.neutron_errors
async def list_subnets(request: Request) -> Response:
    """GET /v2.0/subnets"""
    c = ctx(request)
    filters = cm.filters_of(request, FILTERS)
    limit, marker = cm.page_of(request)
    rows = await cm.global_db(request).read(
        lambda conn: sn.list_subnets(conn, filters=filters, project_id=None if c.is_admin else c.project_id,
                                     limit=limit + 1, marker=marker))
    return cm.collection(request, "subnets", [sn.subnet_view(r) for r in rows], limit)


@cm.neutron_errors
async def show_subnet(request: Request) -> Response:
    """GET /v2.0/subnets/{id}"""
    subnet, _ = await visible_subnet(request, request.path_params["subnet_id"])
    return cm.item(request, "subnet", sn.subnet_view(subnet))


def required(body: dict[str, Any], key: str) -> Any:
    """A required attribute, or a 400 naming it."""
    if body.get(key) is None:
        raise cm.bad(f"Failed to parse request. Required attribute '{key}' not specified", "HTTPBadRequest")
    return body[key]


def described(body: dict[str, Any]) -> dict[str, Any]:
    """Column values of the plain attributes create and update share."""
    values: dict[str, Any] = {"name": cm.text(body, "name"), "description": cm.text(body, "description", 1024),
                              "enable_dhcp": cm.flag(body, "enable_dhcp")}
    values = {k: v for k, v in values.items() if v is not None}
    if "segment_id" in body:
        values["segment_id"] = cm.text(body, "segment_id", 36) if body["segment_id"] is not None else None
    if "dns_nameservers" in body:
        values["dns_nameservers"] = sn.dns_nameservers(body["dns_nameservers"])
    return values


def check_segment(conn: Connection, segment_id: str | None, network_id: str) -> None:
    """A subnet's segment must be one of its network's."""
    if segment_id is None:
        return
    from canopy.network.segments import get_segment

    segment = get_segment(conn, segment_id) if is_uuid(segment_id) else None
    if segment is None or segment["network_id"] != network_id:
        raise cm.invalid("segment_id", f"segment {segment_id} is not a segment of network {network_id}")


async def subnet_plan(request: Request, c: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
    """What one subnet to create needs (checked, its network visible and the caller's) before any write."""
    for key, default in UNSUPPORTED.items():
        cm.only_default(body, key, default)
    network_id = required(body, "network_id")
    cidr = required(body, "cidr")
    version = cm.integer(body, "ip_version", 0, 99) or (6 if ":" in str(cidr) else 4)
    network = await visible_network(request, str(network_id))
    if not c.is_admin and network["project_id"] != c.project_id:
        raise cm.policy("rule:create_subnet")
    values = {**described(body), "network_id": network["id"], "project_id": cm.owner_of(body, c)}
    if "host_routes" in body:
        values["host_routes"] = sn.host_routes(body["host_routes"], version)
    addressing = {k: body[k] for k in ("gateway_ip", "allocation_pools") if k in body}
    return {"values": values, "version": version, "cidr": cidr, "addressing": addressing}


def insert_planned(conn: Connection, plan: dict[str, Any], now: Any) -> dict[str, Any]:
    """Write one planned subnet; its CIDR must not overlap the network's others (those of this request too)."""
    values = plan["values"]
    check_segment(conn, values.get("segment_id"), values["network_id"])
    existing = sn.subnets_of(conn, values["network_id"])
    address = sn.addressing(plan["version"], plan["cidr"], **plan["addressing"], existing=existing,
                            network_id=values["network_id"])
    return sn.insert_subnet(conn, {**values, **address}, now)


@cm.neutron_errors
async def create_subnet(request: Request) -> Response:
    """POST /v2.0/subnets: one subnet, or several ({"subnets": [...]}) all in one transaction."""
    c = ctx(request)
    bodies, bulk = await cm.bodies_of(request, "subnet", CREATE)
    plans = [await subnet_plan(request, c, body) for body in bodies]
    now = cm.cloud_of(request).clock.now()
    rows = await cm.global_db(request).write(lambda conn: [insert_planned(conn, plan, now) for plan in plans])
    return cm.created(request, "subnet", [sn.subnet_view(r) for r in rows], bulk)


@cm.neutron_errors
async def update_subnet(request: Request) -> Response:
    """PUT /v2.0/subnets/{id}"""
    subnet_id = request.path_params["subnet_id"]
    body = await cm.body_of(request, "subnet", UPDATE | READ_ONLY)
    for key in sorted(READ_ONLY & set(body)):
        raise cm.bad(f"Cannot update read-only attribute {key}", "HTTPBadRequest")
    cm.only_default(body, "service_types", [])
    subnet = await owned_subnet(request, subnet_id, "update")
    values = described(body)
    if "host_routes" in body:
        values["host_routes"] = sn.host_routes(body["host_routes"], subnet["ip_version"])
    readdress = {k: body[k] for k in ("gateway_ip", "allocation_pools") if k in body}
    values.update(sn.readdress(subnet, **readdress))
    gateway = values.get("gateway_ip")
    if gateway and gateway != subnet["gateway_ip"]:
        holder = await cm.cell_db(request).read_fresh(port_views.holder_of, subnet_id, gateway)
        if holder:
            raise ApiError(409, f"Current gateway ip {gateway} already in use by port {holder}. Unable to update.",
                           neutron_type="GatewayIpInUse")
    if values.get("segment_id", subnet["segment_id"]) != subnet["segment_id"]:
        if subnet["segment_id"] is not None:  # as in Neutron: a subnet's segment is set once, never moved
            raise cm.invalid("segment_id", "the segment of a subnet that has one cannot be changed")
        await cm.global_db(request).read_fresh(check_segment, values["segment_id"], subnet["network_id"])
    now = cm.cloud_of(request).clock.now()
    await cm.global_db(request).write(sn.update_subnet, subnet_id, values, now)
    return cm.item(request, "subnet", sn.subnet_view({**subnet, **values, "updated_at": now}))


@cm.neutron_errors
async def delete_subnet(request: Request) -> Response:
    """DELETE /v2.0/subnets/{id}: 409 while a port holds one of its addresses."""
    subnet_id = request.path_params["subnet_id"]
    await owned_subnet(request, subnet_id, "delete")
    if await cm.cell_db(request).read_fresh(port_views.subnet_in_use, subnet_id):
        raise SubnetInUse(f"Unable to complete operation on subnet {subnet_id}: One or more ports have an IP "
                          "allocation from this subnet.")
    await cm.global_db(request).write(sn.delete_subnet, subnet_id)
    await cm.cell_db(request).write(limits.drop_holds, [subnet_id])  # its addresses are held for nobody now
    return empty_response()


ROUTES = [
    route("/v2.0/subnets", list_subnets, ["GET"], "network.subnets.list"),
    route("/v2.0/subnets", create_subnet, ["POST"], "network.subnets.create"),
    route("/v2.0/subnets/{subnet_id}", show_subnet, ["GET"], "network.subnets.show"),
    route("/v2.0/subnets/{subnet_id}", update_subnet, ["PUT"], "network.subnets.update"),
    route("/v2.0/subnets/{subnet_id}", delete_subnet, ["DELETE"], "network.subnets.delete"),
]
