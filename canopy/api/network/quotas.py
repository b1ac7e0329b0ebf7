"""Network v2.0 quotas (Neutron's shapes): per-project limits on ports and on public addresses
(`public_ip`, Canopy's name for addresses on external networks, the scarce resource). The other
resources Neutron names are shown as unlimited (-1) and cannot be set: Canopy does not limit them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canopy.api.http import ctx, empty_response, json_response, route
from canopy.api.network import common as cm
from canopy.network import limits

UNLIMITED_ONLY = ("network", "subnet", "router", "floatingip", "rbac_policy", "subnetpool")


def _defaults(request: Request) -> dict[str, int]:
    return cm.cloud_of(request).settings.network.quota_defaults()


def quota_view(values: dict[str, int]) -> dict[str, int]:
    """The limits in Neutron's shape."""
    return {**{k: -1 for k in UNLIMITED_ONLY}, **values}


def _project(request: Request, action: str) -> str:
    """The project in the path: admins any, a project only its own."""
    project_id: str = request.path_params["project_id"]
    c = ctx(request)
    if not c.is_admin and (action != "get" or project_id != c.project_id):
        raise cm.policy(f"rule:{action}_quota")
    return project_id


@cm.neutron_errors
async def list_quotas(request: Request) -> Response:
    """GET /v2.0/quotas: the projects with limits of their own (admin, by policy)."""
    from sqlalchemy import select

    from canopy.db import tables_global as g

    def work(conn: Any) -> list[dict[str, Any]]:
        rows = conn.execute(select(g.network_quotas.c.project_id)).scalars().all()
        return [{"project_id": p, "tenant_id": p, **quota_view(limits.quota_of(conn, p, _defaults(request)))}
                for p in rows]

    return json_response({"quotas": await cm.global_db(request).read(work)})


@cm.neutron_errors
async def show_quota(request: Request) -> Response:
    """GET /v2.0/quotas/{project_id}"""
    project_id = _project(request, "get")
    values = await cm.global_db(request).read_fresh(limits.quota_of, project_id, _defaults(request))
    return json_response({"quota": quota_view(values)})


@cm.neutron_errors
async def show_default(request: Request) -> Response:
    """GET /v2.0/quotas/{project_id}/default"""
    _project(request, "get")
    return json_response({"quota": quota_view(_defaults(request))})


@cm.neutron_errors
async def show_details(request: Request) -> Response:
    """GET /v2.0/quotas/{project_id}/details: limits with what is in use."""
    project_id = _project(request, "get")
    net = cm.cloud_of(request).settings.network
    policy = await cm.global_db(request).read_fresh(limits.load_policy, project_id, net.quota_defaults(), 0.0)
    used = await cm.cell_db(request).read_fresh(limits.usage, project_id, policy.public_networks)
    details = {k: {"limit": -1, "used": 0, "reserved": 0} for k in UNLIMITED_ONLY}
    details["port"] = {"limit": policy.port_limit, "used": used["port"], "reserved": 0}
    details["public_ip"] = {"limit": policy.public_ip_limit, "used": used["public_ip"], "reserved": 0}
    limit = await cm.global_db(request).read_fresh(limits.quota_of, project_id, _defaults(request))
    groups = await cm.global_db(request).read_fresh(secgroup_usage, project_id)
    for key in ("security_group", "security_group_rule"):
        details[key] = {"limit": limit[key], "used": groups[key], "reserved": 0}
    return json_response({"quota": details})


@cm.neutron_errors
async def update_quota(request: Request) -> Response:
    """PUT /v2.0/quotas/{project_id} (admin): port, public_ip, security_group, security_group_rule (>= -1)."""
    project_id = _project(request, "update")
    body = await cm.body_of(request, "quota", frozenset({*limits.RESOURCES, *UNLIMITED_ONLY}))
    for key in UNLIMITED_ONLY:
        cm.only_default(body, key, -1)
    values: dict[str, int | None] = {}
    for key in limits.RESOURCES:
        if key in body:
            values[key] = cm.integer(body, key, -1, 2**31 - 1)
    await cm.global_db(request).write(limits.set_quota, project_id, values)
    shown = await cm.global_db(request).read_fresh(limits.quota_of, project_id, _defaults(request))
    return json_response({"quota": quota_view(shown)})


@cm.neutron_errors
async def delete_quota(request: Request) -> Response:
    """DELETE /v2.0/quotas/{project_id} (admin): back to the defaults."""
    project_id = _project(request, "delete")
    await cm.global_db(request).write(limits.reset_quota, project_id)
    return empty_response()


def secgroup_usage(conn: Any, project_id: str) -> dict[str, int]:
    """How many security groups and rules a project holds (global database)."""
    from sqlalchemy import func, select

    from canopy.db import tables_global as g

    out = {}
    for key, table in (("security_group", g.security_groups), ("security_group_rule", g.security_group_rules)):
        stmt = select(func.count()).select_from(table).where(table.c.project_id == project_id)
        out[key] = int(conn.execute(stmt).scalar_one())
    return out


ROUTES = [
    route("/v2.0/quotas", list_quotas, ["GET"], "network.quotas.list"),
    route("/v2.0/quotas/{project_id}", show_quota, ["GET"], "network.quotas.show"),
    route("/v2.0/quotas/{project_id}", update_quota, ["PUT"], "network.quotas.update"),
    route("/v2.0/quotas/{project_id}", delete_quota, ["DELETE"], "network.quotas.delete"),
    route("/v2.0/quotas/{project_id}/default", show_default, ["GET"], "network.quotas.default"),
    route("/v2.0/quotas/{project_id}/details", show_details, ["GET"], "network.quotas.details"),
]
