"""Network v2.0 QoS: policies and their bandwidth_limit rules (Neutron's shapes). Admins manage them; a
project sees its own and shared ones. A change is fanned out to every conductor, which re-send the
affected ports to their hosts (the meters follow)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError
from canopy.api.http import ctx, empty_response, is_uuid, json_response, route
from canopy.api.network import common as cm
from canopy.network import qos
from canopy.rpc.calls import PortChange

FILTERS: dict[str, tuple[str, cm.Converter]] = {
    "id": ("id", cm.as_text), "name": ("name", cm.as_text), "shared": ("shared", cm.as_bool),
    "project_id": ("project_id", cm.as_text), "tenant_id": ("project_id", cm.as_text),
    "is_default": ("is_default", cm.as_bool), "description": ("description", cm.as_text),
}
POLICY_UPDATE = frozenset({"name", "description", "shared", "is_default"})
POLICY_CREATE = POLICY_UPDATE | {"project_id", "tenant_id"}
RULE_FIELDS = frozenset({"max_kbps", "max_burst_kbps", "direction"})



async def visible_policy(request: Request, policy_id: str) -> dict[str, Any]:
    """The policy row; 404 QosPolicyNotFound unless the caller may see it."""
    row = await cm.global_db(request).read_fresh(qos.get_policy, policy_id) if is_uuid(policy_id) else None
    c = ctx(request)
    if row is None or not qos.can_use(row, c.project_id, c.is_admin):
        raise ApiError(404, f"QoS policy {policy_id} could not be found.", neutron_type="QosPolicyNotFound")
    return row


async def _view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    rules = await cm.global_db(request).read_fresh(qos.rules_of, [row["id"]])
    return qos.policy_view(row, rules[row["id"]])


def _values(body: dict[str, Any]) -> dict[str, Any]:
    values = {"name": cm.text(body, "name"), "description": cm.text(body, "description", 1024),
              "shared": cm.flag(body, "shared"), "is_default": cm.flag(body, "is_default")}
    return {k: v for k, v in values.items() if v is not None}


async def changed(request: Request, policy_id: str) -> None:
    """Re-send the ports the policy applies to (directly, or through their network), from every conductor."""
    networks = await cm.global_db(request).read_fresh(qos.networks_using, policy_id)
    ports = await cm.cell_db(request).read_fresh(qos.ports_using, policy_id)
    await cm.announce(request, [PortChange(port_id=p, network_id=n) for p, n in ports], networks, everywhere=True)


async def usable_qos_policy(request: Request, body: dict[str, Any]) -> str | None:
    """The QoS policy a port asks for, if the caller may use it (404 QosPolicyNotFound otherwise)."""
    policy_id = body.get("qos_policy_id")
    if policy_id is None:
        return None
    if not isinstance(policy_id, str) or not is_uuid(policy_id):
        raise cm.invalid("qos_policy_id", f"'{policy_id}' is not a valid UUID")
    c = ctx(request)
    row = await cm.global_db(request).read_fresh(qos.get_policy, policy_id)
    if row is None or not qos.can_use(row, c.project_id, c.is_admin):
        raise ApiError(404, f"QoS policy {policy_id} could not be found.", neutron_type="QosPolicyNotFound")
    return policy_id


@cm.neutron_errors
async def list_policies(request: Request) -> Response:
    """GET /v2.0/qos/policies"""
    c = ctx(request)
    filters = cm.filters_of(request, FILTERS)
    limit, marker = cm.page_of(request)

    def work(conn: Connection) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        rows = qos.list_policies(conn, filters=filters, project_id=None if c.is_admin else c.project_id,
                                 limit=limit + 1, marker=marker)
        return rows, qos.rules_of(conn, [r["id"] for r in rows])

    rows, rules = await cm.global_db(request).read(work)
    return cm.collection(request, "policies", [qos.policy_view(r, rules[r["id"]]) for r in rows], limit)


@cm.neutron_errors
async def show_policy(request: Request) -> Response:
    """GET /v2.0/qos/policies/{id}"""
    row = await visible_policy(request, request.path_params["policy_id"])
    return cm.item(request, "policy", await _view(request, row))


@cm.neutron_errors
async def create_policy(request: Request) -> Response:
    """POST /v2.0/qos/policies (admin)"""
    body = await cm.body_of(request, "policy", POLICY_CREATE)
    values = {**_values(body), "project_id": cm.owner_of(body, ctx(request))}
    row = await cm.global_db(request).write(qos.create_policy, values, cm.cloud_of(request).clock.now())
    return cm.item(request, "policy", qos.policy_view(row, []), status=201)


@cm.neutron_errors
async def update_policy(request: Request) -> Response:
    """PUT /v2.0/qos/policies/{id} (admin)"""
    row = await visible_policy(request, request.path_params["policy_id"])
    body = await cm.body_of(request, "policy", POLICY_UPDATE)
    values = _values(body)
    now = cm.cloud_of(request).clock.now()
    await cm.global_db(request).write(qos.update_policy, row["id"], values, now)
    return cm.item(request, "policy", await _view(request, {**row, **values, "updated_at": now}))


@cm.neutron_errors
async def delete_policy(request: Request) -> Response:
    """DELETE /v2.0/qos/policies/{id} (admin): 409 while a port or a network uses it."""
    row = await visible_policy(request, request.path_params["policy_id"])
    ports = await cm.cell_db(request).read_fresh(qos.ports_using, row["id"])
    if ports:
        raise qos.QosPolicyInUse(f"QoS Policy {row['id']} is used by port {ports[0][0]}.")
    await cm.global_db(request).write(qos.delete_policy, row["id"])
    return empty_response()


@cm.neutron_errors
async def list_rules(request: Request) -> Response:
    """GET /v2.0/qos/policies/{id}/bandwidth_limit_rules"""
    row = await visible_policy(request, request.path_params["policy_id"])
    rules = await cm.global_db(request).read_fresh(qos.rules_of, [row["id"]])
    return json_response({"bandwidth_limit_rules": [qos.rule_view(r) for r in rules[row["id"]]]})


@cm.neutron_errors
async def create_rule(request: Request) -> Response:
    """POST /v2.0/qos/policies/{id}/bandwidth_limit_rules (admin)"""
    row = await visible_policy(request, request.path_params["policy_id"])
    body = await cm.body_of(request, "bandwidth_limit_rule", RULE_FIELDS)
    rule = await cm.global_db(request).write(qos.add_rule, row["id"], qos.rule_values(body))
    await changed(request, row["id"])
    return cm.item(request, "bandwidth_limit_rule", qos.rule_view(rule), status=201)


@cm.neutron_errors
async def show_rule(request: Request) -> Response:
    """GET /v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule_id}"""
    row = await visible_policy(request, request.path_params["policy_id"])
    rule = await cm.global_db(request).read_fresh(qos.get_rule, row["id"], request.path_params["rule_id"])
    return cm.item(request, "bandwidth_limit_rule", qos.rule_view(rule))


@cm.neutron_errors
async def update_rule(request: Request) -> Response:
    """PUT /v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule_id} (admin)"""
    row = await visible_policy(request, request.path_params["policy_id"])
    body = await cm.body_of(request, "bandwidth_limit_rule", RULE_FIELDS)
    rule = await cm.global_db(request).write(qos.update_rule, row["id"], request.path_params["rule_id"],
                                             qos.rule_values(body, partial=True))
    await changed(request, row["id"])
    return cm.item(request, "bandwidth_limit_rule", qos.rule_view(rule))


@cm.neutron_errors
async def delete_rule(request: Request) -> Response:
    """DELETE /v2.0/qos/policies/{id}/bandwidth_limit_rules/{rule_id} (admin)"""
    row = await visible_policy(request, request.path_params["policy_id"])
    await cm.global_db(request).write(qos.delete_rule, row["id"], request.path_params["rule_id"])
    await changed(request, row["id"])
    return empty_response()


async def rule_types(request: Request) -> Response:
    """GET /v2.0/qos/rule-types"""
    return json_response({"rule_types": [{"type": "bandwidth_limit"}]})


P = "/v2.0/qos/policies/{policy_id}"
ROUTES = [
    route("/v2.0/qos/rule-types", rule_types, ["GET"], "network.qos.rule_types"),
    route("/v2.0/qos/policies", list_policies, ["GET"], "network.qos.policies.list"),
    route("/v2.0/qos/policies", create_policy, ["POST"], "network.qos.policies.create"),
    route(P, show_policy, ["GET"], "network.qos.policies.show"),
    route(P, update_policy, ["PUT"], "network.qos.policies.update"),
    route(P, delete_policy, ["DELETE"], "network.qos.policies.delete"),
    route(f"{P}/bandwidth_limit_rules", list_rules, ["GET"], "network.qos.rules.list"),
    route(f"{P}/bandwidth_limit_rules", create_rule, ["POST"], "network.qos.rules.create"),
    route(P + "/bandwidth_limit_rules/{rule_id}", show_rule, ["GET"], "network.qos.rules.show"),
    route(P + "/bandwidth_limit_rules/{rule_id}", update_rule, ["PUT"], "network.qos.rules.update"),
    route(P + "/bandwidth_limit_rules/{rule_id}", delete_rule, ["DELETE"], "network.qos.rules.delete"),
]
