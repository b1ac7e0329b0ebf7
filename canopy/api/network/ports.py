"""Network v2.0 ports: list, show, create, update, delete, with their fixed IPs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError
from canopy.api.http import ctx, empty_response, is_uuid, route
from canopy.api.network import common as cm
from canopy.api.network.networks import can_see
from canopy.api.network.qos import usable_qos_policy
from canopy.api.network.secgroups import changed as groups_changed
from canopy.api.network.secgroups import port_groups
from canopy.context import RequestContext
from canopy.network import networks as nets
from canopy.network import ports as pt
from canopy.network import secgroups as sg
from canopy.network.port_record import PortRecord
from canopy.network.port_views import list_ports as query_ports
from canopy.network.port_views import port_view, public_view
from canopy.rpc.calls import PortChange

FILTERS: dict[str, tuple[str, cm.Converter]] = {
    "id": ("id", cm.as_text), "name": ("name", cm.as_text), "network_id": ("network_id", cm.as_text),
    "project_id": ("project_id", cm.as_text), "tenant_id": ("project_id", cm.as_text),
    "mac_address": ("mac_address", cm.as_text), "device_id": ("device_id", cm.as_text),
    "device_owner": ("device_owner", cm.as_text), "status": ("status", cm.as_text),
    "admin_state_up": ("admin_state_up", cm.as_bool), "description": ("description", cm.as_text),
}
ADMIN_FILTERS: dict[str, tuple[str, cm.Converter]] = {"binding:host_id": ("host_id", cm.as_text)}
UNSUPPORTED: dict[str, Any] = {"binding:vnic_type": "normal", "binding:profile": {}, "extra_dhcp_opts": []}
UPDATE = frozenset({"name", "description", "admin_state_up", "fixed_ips", "device_id", "device_owner",
                    "allowed_address_pairs", "port_security_enabled", "binding:host_id", "qos_policy_id",
                    "security_groups", *UNSUPPORTED})
READ_ONLY = frozenset({"id", "network_id", "project_id", "tenant_id", "mac_address", "status"})
CREATE = UPDATE | {"network_id", "mac_address", "project_id", "tenant_id"}


def shown(c: RequestContext, view: dict[str, Any]) -> dict[str, Any]:
    """The port view as the caller may see it."""
    return view if c.is_admin else public_view(view)


def ip_filters_of(request: Request) -> list[tuple[str, str]]:
    """`fixed_ips=ip_address=...`, `fixed_ips=ip_address_substr=...` and `fixed_ips=subnet_id=...` filters."""
    out = []
    for raw in request.query_params.getlist("fixed_ips"):
        key, _, value = raw.partition("=")
        if key not in ("ip_address", "ip_address_substr", "subnet_id") or not value or len(value) > 64:
            raise cm.invalid("fixed_ips", f"'{raw[:80]}' is not ip_address=<ip>, ip_address_substr=<text> or "
                                          "subnet_id=<id>")
        out.append((key, value))
    return out


async def visible_port(request: Request, port_id: str) -> dict[str, Any]:
    """The port's view; 404 PortNotFound unless it exists and is the caller's (admins see all)."""
    view = await cm.cell_db(request).read_fresh(pt.get_port, port_id) if is_uuid(port_id) else None
    c = ctx(request)
    if view is None or not (c.is_admin or view["project_id"] == c.project_id):
        raise cm.missing("port", port_id)
    return view


@cm.neutron_errors
async def list_ports(request: Request) -> Response:
    """GET /v2.0/ports"""
    c = ctx(request)
    filters = cm.filters_of(request, {**FILTERS, **(ADMIN_FILTERS if c.is_admin else {})})
    ip_filters = ip_filters_of(request)
    limit, marker = cm.page_of(request)
    views = await cm.cell_db(request).read(
        lambda conn: query_ports(conn, filters=filters, ip_filters=ip_filters,
                                 project_id=None if c.is_admin else c.project_id, limit=limit + 1, marker=marker))
    return cm.collection(request, "ports", [shown(c, v) for v in views], limit)


@cm.neutron_errors
async def show_port(request: Request) -> Response:
    """GET /v2.0/ports/{id}"""
    view = await visible_port(request, request.path_params["port_id"])
    return cm.item(request, "port", shown(ctx(request), view))


def check_policy(c: RequestContext, network: dict[str, Any], body: dict[str, Any], action: str,
                 held: Sequence[dict[str, str]] = ()) -> None:
    """What only admins (or the network's owner) may ask for: specific addresses, address pairs, a MAC,
    binding:host_id, and port security off (on a shared network it would turn anti-spoofing off too)."""
    if c.is_admin:
        return
    owner = network["project_id"] == c.project_id
    have = {f["ip_address"] for f in held}
    fixed = body.get("fixed_ips")
    if not owner and isinstance(fixed, list) and any(
            isinstance(f, dict) and f.get("ip_address") not in (None, *have) for f in fixed):
        raise cm.policy(f"rule:{action}_port and rule:{action}_port:fixed_ips:ip_address")
    for key in ("allowed_address_pairs", "mac_address"):
        if key in body and not owner:
            raise cm.policy(f"rule:{action}_port and rule:{action}_port:{key}")
    if "binding:host_id" in body:
        raise cm.policy(f"rule:{action}_port and rule:{action}_port:binding:host_id")
    if body.get("port_security_enabled") is False and not owner:
        raise cm.policy(f"rule:{action}_port and rule:{action}_port:port_security_enabled")


def column_values(body: dict[str, Any]) -> dict[str, Any]:
    """Column values of the plain attributes create and update share."""
    for key, default in UNSUPPORTED.items():
        cm.only_default(body, key, default)
    values: dict[str, Any] = {
        "name": cm.text(body, "name"), "description": cm.text(body, "description", 1024),
        "admin_state_up": cm.flag(body, "admin_state_up"),
        "port_security_enabled": cm.flag(body, "port_security_enabled"),
        "device_id": cm.text(body, "device_id"), "device_owner": cm.text(body, "device_owner"),
        "host_id": cm.text(body, "binding:host_id"),
    }
    if "allowed_address_pairs" in body:
        values["allowed_address_pairs"] = body["allowed_address_pairs"]
    return {k: v for k, v in values.items() if v is not None}


async def network_with_subnets(request: Request, network_id: str, check: bool = True
                               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The network row and its subnets; 404 NetworkNotFound when (`check`) the caller cannot see it."""
    loaded = await cm.global_db(request).read_fresh(nets.load_network, network_id) if is_uuid(network_id) else None
    if loaded is None or (check and not can_see(ctx(request), loaded[0])):
        raise cm.missing("network", network_id)
    return loaded


async def port_plan(request: Request, c: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
    """The create_port arguments of one port (checked: network visible, policy, QoS, quotas) before any write."""
    network_id = body.get("network_id")
    if not isinstance(network_id, str):
        raise cm.bad("Failed to parse request. Required attribute 'network_id' not specified", "HTTPBadRequest")
    network, subnets = await network_with_subnets(request, network_id)
    if not (c.is_admin or network["project_id"] == c.project_id or network["shared"]):
        raise cm.policy("rule:create_port")
    check_policy(c, network, body, "create")
    values = column_values(body)
    project_id = cm.owner_of(body, c)
    groups = await port_groups(request, body, project_id, values.get("port_security_enabled", True), creating=True)
    return {"network": network, "subnets": subnets, "project_id": project_id, "fixed_ips": body.get("fixed_ips"),
            "mac_address": body.get("mac_address"), "qos_policy_id": await usable_qos_policy(request, body),
            "policy": await cm.address_policy(request, project_id), "security_groups": groups or [], **values}


def _create_with_groups(conn: Any, now: Any, plan: dict[str, Any]) -> PortRecord:
    """One planned port, bound to its security groups in the same transaction."""
    args = {k: v for k, v in plan.items() if k != "security_groups"}
    port = pt.create_port(conn, now=now, **args)
    sg.set_port_groups(conn, port.id, plan["security_groups"])
    return dataclasses.replace(port, security_groups=list(plan["security_groups"]))


@cm.neutron_errors
async def create_port(request: Request) -> Response:
    """POST /v2.0/ports: one port, or several ({"ports": [...]}) all in one transaction (one bad port: none)."""
    c = ctx(request)
    bodies, bulk = await cm.bodies_of(request, "port", CREATE)
    plans = [await port_plan(request, c, body) for body in bodies]
    now = cm.cloud_of(request).clock.now()
    made = await cm.cell_db(request).write(lambda conn: [_create_with_groups(conn, now, plan) for plan in plans])
    bound = [p for p in made if p.host_id]
    await cm.announce(request, [PortChange(port_id=p.id, network_id=p.network_id) for p in bound])
    if bound:
        await groups_changed(request, sorted({g for p in bound for g in p.security_groups}), members=True)
    return cm.created(request, "port", [shown(c, port_view(p.row(), p.fixed_ips)) for p in made], bulk)


@cm.neutron_errors
async def update_port(request: Request) -> Response:
    """PUT /v2.0/ports/{id}"""
    c = ctx(request)
    port_id = request.path_params["port_id"]
    body = await cm.body_of(request, "port", UPDATE | READ_ONLY)
    for key in sorted(READ_ONLY & set(body)):
        raise cm.bad(f"Cannot update read-only attribute {key}", "HTTPBadRequest")
    current = await visible_port(request, port_id)
    network, subnets = await network_with_subnets(request, current["network_id"], check=False)
    check_policy(c, network, body, "update", current["fixed_ips"])
    values = column_values(body)
    if "fixed_ips" in body:
        values["fixed_ips"] = body["fixed_ips"]
    if "qos_policy_id" in body:
        values["qos_policy_id"] = await usable_qos_policy(request, body)
    security = values.get("port_security_enabled", current["port_security_enabled"])
    groups = await port_groups(request, body, current["project_id"], security, creating=False)
    if not security and (current["security_groups"] if groups is None else groups):
        raise ApiError(409, "Port has security group associated. Cannot disable port security or ip address until "
                            "security group is removed", neutron_type="PortSecurityPortHasSecurityGroup")
    policy = await cm.address_policy(request, current["project_id"]) if "fixed_ips" in body else None
    now = cm.cloud_of(request).clock.now()

    def write(conn: Any) -> dict[str, Any]:
        view = pt.update_port(conn, port_id, values, now=now, network=network, subnets=subnets,
                              **({"policy": policy} if policy is not None else {}))
        if groups is not None:
            sg.set_port_groups(conn, port_id, groups)
        return {**view, "security_groups": groups if groups is not None else current["security_groups"]}

    view = await cm.cell_db(request).write(write)
    old_host = current["binding:host_id"]
    if old_host or view["binding:host_id"]:
        await cm.announce(request, [PortChange(port_id=port_id, network_id=view["network_id"], old_host=old_host)])
        moved = set(current["security_groups"]) ^ set(view["security_groups"])
        if moved or "fixed_ips" in body:
            await groups_changed(request, sorted(moved | set(view["security_groups"])), members=True)
    return cm.item(request, "port", shown(c, view))


@cm.neutron_errors
async def delete_port(request: Request) -> Response:
    """DELETE /v2.0/ports/{id}: its addresses are released."""
    port_id = request.path_params["port_id"]
    view = await visible_port(request, port_id)
    net = cm.cloud_of(request).settings.network
    policy = await cm.address_policy(request, view["project_id"]) if net.public_ip_hold_s > 0 else None
    now = cm.cloud_of(request).clock.now()
    if not await cm.cell_db(request).write(
            lambda conn: pt.delete_port(conn, port_id, now=now, **({"policy": policy} if policy else {}))):
        raise cm.missing("port", port_id)
    if view["binding:host_id"]:
        await cm.announce(request, [PortChange(port_id=port_id, network_id=view["network_id"],
                                               old_host=view["binding:host_id"])])
        await groups_changed(request, view["security_groups"], members=True)
    return empty_response()


ROUTES = [
    route("/v2.0/ports", list_ports, ["GET"], "network.ports.list"),
    route("/v2.0/ports", create_port, ["POST"], "network.ports.create"),
    route("/v2.0/ports/{port_id}", show_port, ["GET"], "network.ports.show"),
    route("/v2.0/ports/{port_id}", update_port, ["PUT"], "network.ports.update"),
    route("/v2.0/ports/{port_id}", delete_port, ["DELETE"], "network.ports.delete"),
]
