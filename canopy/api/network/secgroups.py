"""Network v2.0 security groups and rules (Neutron's shapes). A project manages its own groups (admins
any); its `default` group is created on first use. A change reaches only the hosts whose ports are in
the group or in a group whose rules name it (see canopy/conductor/sgsync.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError
from canopy.api.http import ctx, empty_response, is_uuid, route
from canopy.api.network import common as cm
from canopy.network import secgroups as sg

GROUP_FILTERS: dict[str, tuple[str, cm.Converter]] = {
    "id": ("id", cm.as_text), "name": ("name", cm.as_text), "description": ("description", cm.as_text),
    "project_id": ("project_id", cm.as_text), "tenant_id": ("project_id", cm.as_text),
}
RULE_FILTERS: dict[str, tuple[str, cm.Converter]] = {
    "id": ("id", cm.as_text), "security_group_id": ("security_group_id", cm.as_text),
    "direction": ("direction", cm.as_text), "ethertype": ("ethertype", cm.as_text),
    "protocol": ("protocol", cm.as_text), "remote_group_id": ("remote_group_id", cm.as_text),
    "remote_ip_prefix": ("remote_ip_prefix", cm.as_text), "port_range_min": ("port_range_min", cm.as_int),
    "port_range_max": ("port_range_max", cm.as_int), "project_id": ("project_id", cm.as_text),
    "tenant_id": ("project_id", cm.as_text), "description": ("description", cm.as_text),
}
GROUP_UPDATE = frozenset({"name", "description", "stateful"})
GROUP_CREATE = GROUP_UPDATE | {"project_id", "tenant_id"}
RULE_CREATE = frozenset({"security_group_id", "direction", "ethertype", "protocol", "port_range_min",
                         "port_range_max", "remote_ip_prefix", "remote_group_id", "remote_address_group_id",
                         "description", "project_id", "tenant_id"})


def _quotas(request: Request) -> dict[str, int]:
    return cm.cloud_of(request).settings.network.quota_defaults()


def _not_found(kind: str, ident: object) -> ApiError:
    if kind == "rule":
        return ApiError(404, f"Security group rule {ident} does not exist", neutron_type="SecurityGroupRuleNotFound")
    return ApiError(404, f"Security group {ident} does not exist", neutron_type="SecurityGroupNotFound")


async def visible_group(request: Request, group_id: object) -> dict[str, Any]:
    """The group row; 404 SecurityGroupNotFound unless it is the caller's (admins: any)."""
    row = await cm.global_db(request).read_fresh(sg.get_group, group_id) if is_uuid(str(group_id)) else None
    c = ctx(request)
    if row is None or not (c.is_admin or row["project_id"] == c.project_id):
        raise _not_found("group", group_id)
    return row


async def ensure_default(request: Request, project_id: str) -> str:
    """The project's default group (created on first use)."""
    now = cm.cloud_of(request).clock.now()
    return str(await cm.global_db(request).write(sg.ensure_default, project_id, now))


async def changed(request: Request, group_ids: list[str], members: bool = False) -> None:
    """Tell a conductor that these groups' rules (or, `members`, their members) changed."""
    from canopy.conductor.sgsync import announce

    await announce(cm.cloud_of(request).bus, group_ids, members=members)


@cm.neutron_errors
async def list_groups(request: Request) -> Response:
    """GET /v2.0/security-groups (the caller's default group is created on first use)."""
    c = ctx(request)
    filters = cm.filters_of(request, GROUP_FILTERS)
    limit, marker = cm.page_of(request)
    if c.project_id:
        await ensure_default(request, c.project_id)

    def work(conn: Connection) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        rows = sg.list_groups(conn, filters=filters, project_id=None if c.is_admin else c.project_id,
                              limit=limit + 1, marker=marker)
        return rows, sg.rules_of(conn, [r["id"] for r in rows])

    rows, rules = await cm.global_db(request).read_fresh(work)
    return cm.collection(request, "security_groups", [sg.group_view(r, rules[r["id"]]) for r in rows], limit)


@cm.neutron_errors
async def show_group(request: Request) -> Response:
    """GET /v2.0/security-groups/{id}"""
    row = await visible_group(request, request.path_params["group_id"])
    rules = await cm.global_db(request).read_fresh(sg.rules_of, [row["id"]])
    return cm.item(request, "security_group", sg.group_view(row, rules[row["id"]]))


def _group_values(body: dict[str, Any]) -> dict[str, Any]:
    cm.only_default(body, "stateful", True)
    values = {"name": cm.text(body, "name"), "description": cm.text(body, "description", 255)}
    return {k: v for k, v in values.items() if v is not None}


@cm.neutron_errors
async def create_group(request: Request) -> Response:
    """POST /v2.0/security-groups (quota security_group)"""
    body = await cm.body_of(request, "security_group", GROUP_CREATE)
    values = {**_group_values(body), "project_id": cm.owner_of(body, ctx(request))}
    now = cm.cloud_of(request).clock.now()

    def work(conn: Connection) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        row = sg.create_group(conn, values, now, _quotas(request))
        return row, sg.rules_of(conn, [row["id"]])[row["id"]]

    row, rules = await cm.global_db(request).write(work)
    return cm.item(request, "security_group", sg.group_view(row, rules), status=201)


@cm.neutron_errors
async def update_group(request: Request) -> Response:
    """PUT /v2.0/security-groups/{id}: name and description."""
    row = await visible_group(request, request.path_params["group_id"])
    body = await cm.body_of(request, "security_group", GROUP_UPDATE)
    values = _group_values(body)
    now = cm.cloud_of(request).clock.now()
    await cm.global_db(request).write(sg.update_group, row, values, now)
    rules = await cm.global_db(request).read_fresh(sg.rules_of, [row["id"]])
    return cm.item(request, "security_group", sg.group_view({**row, **values, "updated_at": now}, rules[row["id"]]))


@cm.neutron_errors
async def delete_group(request: Request) -> Response:
    """DELETE /v2.0/security-groups/{id}: 409 while a port is in it; the default group only by an admin."""
    row = await visible_group(request, request.path_params["group_id"])
    if row["is_default"] and not ctx(request).is_admin:
        raise sg.SecurityGroupCannotRemoveDefault("Insufficient rights for removing default security group.")
    if await cm.cell_db(request).read_fresh(sg.group_in_use, row["id"]) is not None:
        raise sg.SecurityGroupInUse(f"Security Group {row['id']} in use.")
    referencing = await cm.global_db(request).read_fresh(sg.referencing, row["id"])
    await cm.global_db(request).write(sg.delete_group, row["id"])
    if row["is_default"]:
        sg.forget_default(str(cm.global_db(request).url), row["project_id"])
    if referencing:  # their remote-group rules now name a group with no member
        await changed(request, referencing)
    return empty_response()


@cm.neutron_errors
async def list_rules(request: Request) -> Response:
    """GET /v2.0/security-group-rules"""
    c = ctx(request)
    filters = cm.filters_of(request, RULE_FILTERS)
    limit, marker = cm.page_of(request)
    rows = await cm.global_db(request).read(
        lambda conn: sg.list_rules(conn, filters=filters, project_id=None if c.is_admin else c.project_id,
                                   limit=limit + 1, marker=marker))
    return cm.collection(request, "security_group_rules", [sg.rule_view(r) for r in rows], limit)


async def visible_rule(request: Request, rule_id: str) -> dict[str, Any]:
    """The rule row; 404 SecurityGroupRuleNotFound unless it is the caller's (admins: any)."""
    row = await cm.global_db(request).read_fresh(sg.get_rule, rule_id) if is_uuid(rule_id) else None
    c = ctx(request)
    if row is None or not (c.is_admin or row["project_id"] == c.project_id):
        raise _not_found("rule", rule_id)
    return row


@cm.neutron_errors
async def show_rule(request: Request) -> Response:
    """GET /v2.0/security-group-rules/{id}"""
    row = await visible_rule(request, request.path_params["rule_id"])
    return cm.item(request, "security_group_rule", sg.rule_view(row))


@cm.neutron_errors
async def create_rule(request: Request) -> Response:
    """POST /v2.0/security-group-rules (quota security_group_rule)"""
    body = await cm.body_of(request, "security_group_rule", RULE_CREATE)
    if "security_group_id" not in body:
        raise cm.bad("Failed to parse request. Required attribute 'security_group_id' not specified",
                     "HTTPBadRequest")
    values = sg.rule_values(body)
    group = await visible_group(request, body["security_group_id"])
    owner = cm.owner_of(body, ctx(request))
    if owner != group["project_id"] and not ctx(request).is_admin:
        raise cm.policy("rule:create_security_group_rule")
    if values["remote_group_id"] is not None:
        await visible_group(request, values["remote_group_id"])
    now = cm.cloud_of(request).clock.now()
    row = await cm.global_db(request).write(sg.insert_rule, group, values, now, _quotas(request))
    await changed(request, [group["id"]])
    return cm.item(request, "security_group_rule", sg.rule_view(row), status=201)


@cm.neutron_errors
async def delete_rule(request: Request) -> Response:
    """DELETE /v2.0/security-group-rules/{id}: the connections it allowed stop too."""
    row = await visible_rule(request, request.path_params["rule_id"])
    await cm.global_db(request).write(sg.delete_rule, row["id"])
    await changed(request, [row["security_group_id"]])
    return empty_response()


async def port_groups(request: Request, body: dict[str, Any], project_id: str, security: bool,
                      creating: bool) -> list[str] | None:
    """The groups a port create or update asks for (None: unchanged), each one the port's project's; on
    create with port security on and none named, the project's default group."""
    wanted = body.get("security_groups")
    if wanted is None:
        if not creating:
            return None
        return [await ensure_default(request, project_id)] if security else []
    if not isinstance(wanted, list) or len(wanted) > 64 or not all(isinstance(g, str) for g in wanted):
        raise cm.invalid("security_groups", f"{wanted!r} is not a list of security group ids")
    if wanted and not security:
        raise ApiError(400, "Port security must be enabled and port must have an IP address in order to use "
                            "security groups.", neutron_type="PortSecurityAndIPRequiredForSecurityGroups")
    for gid in sorted(set(wanted)):
        row = await visible_group(request, gid)
        if row["project_id"] != project_id:
            raise _not_found("group", gid)
    return sorted(set(wanted))


G = "/v2.0/security-groups"
R = "/v2.0/security-group-rules"
ROUTES = [
    route(G, list_groups, ["GET"], "network.security_groups.list"),
    route(G, create_group, ["POST"], "network.security_groups.create"),
    route(G + "/{group_id}", show_group, ["GET"], "network.security_groups.show"),
    route(G + "/{group_id}", update_group, ["PUT"], "network.security_groups.update"),
    route(G + "/{group_id}", delete_group, ["DELETE"], "network.security_groups.delete"),
    route(R, list_rules, ["GET"], "network.security_group_rules.list"),
    route(R, create_rule, ["POST"], "network.security_group_rules.create"),
    route(R + "/{rule_id}", show_rule, ["GET"], "network.security_group_rules.show"),
    route(R + "/{rule_id}", delete_rule, ["DELETE"], "network.security_group_rules.delete"),
]
