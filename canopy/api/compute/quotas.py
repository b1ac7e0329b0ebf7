"""Compute API: limits and os-quota-sets. Instances, cores and RAM are enforced (quota_store); Nova's other
quotas are shown at their fixed defaults, with the fields each microversion dropped left out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute import quota_store
from canopy.api.compute.common import cloud_of
from canopy.api.compute.microversion import mv
from canopy.api.errors import bad_request, forbidden
from canopy.api.http import bool_param, ctx, empty_response, json_response, read_object, route
from canopy.config import QuotaDefaults
from canopy.db import tables_global as g

MAX_INT = 2147483647
ENFORCED = quota_store.RESOURCES
FIXED = {"key_pairs": 100, "metadata_items": 128, "injected_files": 5, "injected_file_content_bytes": 10240,
         "injected_file_path_bytes": 255, "server_groups": 10, "server_group_members": 10, "floating_ips": 10,
         "fixed_ips": -1, "security_groups": 10, "security_group_rules": 20}
NETWORK_QUOTAS = frozenset({"fixed_ips", "floating_ips", "security_groups", "security_group_rules"})
PERSONALITY_QUOTAS = frozenset({"injected_files", "injected_file_content_bytes", "injected_file_path_bytes"})
LIMIT_NAMES = {"ram": ("maxTotalRAMSize",), "instances": ("maxTotalInstances",), "cores": ("maxTotalCores",),
               "key_pairs": ("maxTotalKeypairs",), "floating_ips": ("maxTotalFloatingIps",),
               "metadata_items": ("maxServerMeta", "maxImageMeta"), "injected_files": ("maxPersonality",),
               "injected_file_content_bytes": ("maxPersonalitySize",), "security_groups": ("maxSecurityGroups",),
               "security_group_rules": ("maxSecurityGroupRules",), "server_groups": ("maxServerGroups",),
               "server_group_members": ("maxServerGroupMembers",)}
USED_NAMES = {"totalRAMUsed": "ram", "totalCoresUsed": "cores", "totalInstancesUsed": "instances",
              "totalFloatingIpsUsed": "floating_ips", "totalSecurityGroupsUsed": "security_groups",
              "totalServerGroupsUsed": "server_groups"}


def hidden_quotas(version: tuple[int, int]) -> frozenset[str]:
    """The quota names a microversion no longer shows (2.36: network ones; 2.57: personality files)."""
    hidden: frozenset[str] = frozenset()
    if version >= (2, 36):
        hidden |= NETWORK_QUOTAS
    if version >= (2, 57):
        hidden |= PERSONALITY_QUOTAS
    return hidden


def _defaults(request: Request) -> QuotaDefaults:
    return cloud_of(request).settings.quota


def _all_quotas(rows: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out = {name: {"limit": value, "in_use": 0} for name, value in FIXED.items()}
    out.update(rows)
    return out


def quota_view(version: tuple[int, int], rows: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Every shown quota as {"limit", "in_use"}: the enforced ones from `rows`, the rest fixed and unused."""
    out = _all_quotas(rows)
    hidden = hidden_quotas(version)
    return {name: v for name, v in out.items() if name not in hidden}


def _hidden_limits(version: tuple[int, int]) -> frozenset[str]:
    hidden = {"floating_ips", "security_groups", "security_group_rules"} if version >= (2, 36) else set()
    if version >= (2, 57):
        hidden |= {"injected_files", "injected_file_content_bytes"}
    return frozenset(hidden)


def render_limits(version: tuple[int, int], rows: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The `limits` body: absolute maxima and usage, named as Nova names them at this microversion."""
    quotas = _all_quotas(rows)
    hidden = _hidden_limits(version)
    absolute: dict[str, int] = {}
    for name, labels in LIMIT_NAMES.items():
        if name in hidden:
            continue
        for label in labels:
            if label != "maxImageMeta" or version < (2, 39):
                absolute[label] = quotas[name]["limit"]
    for label, name in USED_NAMES.items():
        if name not in hidden:
            absolute[label] = quotas[name]["in_use"]
    return {"limits": {"rate": [], "absolute": absolute}}


def _usage(conn: Connection, project_id: str, defaults: QuotaDefaults) -> dict[str, dict[str, int]]:
    return quota_store.usage(conn, project_id, defaults)


async def limits(request: Request) -> Response:
    """GET /limits (admins may ask about another project with ?tenant_id=)."""
    rc = ctx(request)
    project_id = request.query_params.get("tenant_id") or rc.project_id or ""
    if project_id != rc.project_id and not rc.is_admin:
        raise forbidden()
    rows = await cloud_of(request).dbs.global_db.read(_usage, project_id, _defaults(request))
    return json_response(render_limits(mv(request), rows))


def _check_project(conn: Connection, project_id: str) -> None:
    if conn.execute(select(g.projects.c.id).where(g.projects.c.id == project_id)).first() is None:
        raise bad_request(f"Project ID {project_id} is not a valid project.")


def _project_usage(conn: Connection, project_id: str, defaults: QuotaDefaults) -> dict[str, dict[str, int]]:
    _check_project(conn, project_id)
    return quota_store.usage(conn, project_id, defaults)


async def _visible_usage(request: Request) -> tuple[str, dict[str, dict[str, int]]]:
    project_id = request.path_params["project_id"]
    rc = ctx(request)
    if project_id != rc.project_id and not rc.is_admin:
        raise forbidden()
    rows = await cloud_of(request).dbs.global_db.read(_project_usage, project_id, _defaults(request))
    return project_id, rows


async def show_quotas(request: Request) -> Response:
    """GET /os-quota-sets/{project_id}."""
    project_id, rows = await _visible_usage(request)
    view = quota_view(mv(request), rows)
    return json_response({"quota_set": {"id": project_id, **{k: v["limit"] for k, v in view.items()}}})


async def show_quota_detail(request: Request) -> Response:
    """GET /os-quota-sets/{project_id}/detail: limit, in_use and reserved (always 0) per quota."""
    project_id, rows = await _visible_usage(request)
    view = quota_view(mv(request), rows)
    detail = {k: {"in_use": v["in_use"], "limit": v["limit"], "reserved": 0} for k, v in view.items()}
    return json_response({"quota_set": {"id": project_id, **detail}})


async def show_defaults(request: Request) -> Response:
    """GET /os-quota-sets/{project_id}/defaults."""
    project_id = request.path_params["project_id"]
    await cloud_of(request).dbs.global_db.read(_check_project, project_id)
    defaults = await cloud_of(request).dbs.global_db.read(quota_store.class_limits, "default", _defaults(request))
    rows = {res: {"limit": getattr(defaults, res), "in_use": 0} for res in ENFORCED}
    view = quota_view(mv(request), rows)
    return json_response({"quota_set": {"id": project_id, **{k: v["limit"] for k, v in view.items()}}})


def _quota_value(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad_request(f"Invalid input for field/attribute {key}. Value: {value}. "
                          f"{value!r} is not of type 'integer', 'string'")
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"Invalid input for field/attribute {key}. Value: {value}. "
                          f"'{value}' does not match '^-?[0-9]+$'") from None
    if not -1 <= number <= MAX_INT:
        bound = "less than the minimum of -1" if number < -1 else f"greater than the maximum of {MAX_INT}"
        raise bad_request(f"Invalid input for field/attribute {key}. Value: {value}. {value} is {bound}")
    return number


def parse_quota_set(raw: dict[str, Any], version: tuple[int, int]) -> tuple[dict[str, int], bool]:
    """The enforced limits a PUT body sets, and whether `force` was given; other known keys are accepted."""
    allowed = (set(ENFORCED) | set(FIXED)) - hidden_quotas(version)
    for key in raw:
        if key != "force" and key not in allowed:
            raise bad_request(f"Invalid input for field/attribute quota_set. Additional properties are not "
                              f"allowed ('{key}' was unexpected)")
    force = bool(bool_param(str(raw["force"]), "force")) if "force" in raw else False
    values = {key: _quota_value(key, v) for key, v in raw.items() if key != "force" and v not in ("", None)}
    return {k: v for k, v in values.items() if k in ENFORCED}, force


def _update(conn: Connection, project_id: str, limits_: dict[str, int], force: bool,
            defaults: QuotaDefaults) -> dict[str, dict[str, int]]:
    current = _project_usage(conn, project_id, defaults)
    for res, limit in limits_.items():
        used = current[res]["in_use"]
        if not force and limit != -1 and limit < used:
            raise bad_request(f"Quota limit {limit} for {res} must be greater than or equal to already used "
                              f"and reserved {used}.")
    quota_store.set_limits(conn, project_id, limits_, defaults)
    return quota_store.usage(conn, project_id, defaults)


async def update_quotas(request: Request) -> Response:
    """PUT /os-quota-sets/{project_id} (admin)."""
    version = mv(request)
    limits_, force = parse_quota_set(await read_object(request, "quota_set"), version)
    rows = await cloud_of(request).dbs.global_db.write(
        _update, request.path_params["project_id"], limits_, force, _defaults(request))
    view = quota_view(version, rows)
    return json_response({"quota_set": {k: v["limit"] for k, v in view.items()}})


def _reset(conn: Connection, project_id: str, defaults: QuotaDefaults) -> None:
    defaults = quota_store.class_limits(conn, "default", defaults)
    quota_store.set_limits(conn, project_id, {res: getattr(defaults, res) for res in ENFORCED}, defaults)


async def delete_quotas(request: Request) -> Response:
    """DELETE /os-quota-sets/{project_id} (admin): back to the defaults."""
    await cloud_of(request).dbs.global_db.write(_reset, request.path_params["project_id"], _defaults(request))
    return empty_response(202)


ROUTES: list[BaseRoute] = [
    route("/v2.1/limits", limits, ["GET"], "compute:limits"),
    route("/v2.1/os-quota-sets/{project_id}", show_quotas, ["GET"], "compute:quota-sets:show"),
    route("/v2.1/os-quota-sets/{project_id}", update_quotas, ["PUT"], "compute:quota-sets:update"),
    route("/v2.1/os-quota-sets/{project_id}", delete_quotas, ["DELETE"], "compute:quota-sets:delete"),
    route("/v2.1/os-quota-sets/{project_id}/defaults", show_defaults, ["GET"], "compute:quota-sets:defaults"),
    route("/v2.1/os-quota-sets/{project_id}/detail", show_quota_detail, ["GET"], "compute:quota-sets:detail"),
]
