"""Compute API: os-server-groups (affinity, anti-affinity and their soft forms; `max_server_per_host`
from 2.64), and the scheduler hints of a server create (`group`, `same_host`, `different_host`).

Groups live in the global database; their members are the instances created with the `group` hint.
The scheduler enforces the policy (see canopy/scheduler/claims.py for how a hard rule stays true with
several schedulers)."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.common import cell_db, cloud_of
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import bool_param, ctx, empty_response, is_uuid, json_response, read_object, route
from canopy.context import RequestContext
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.rpc.tasks import GroupHint, SchedulerHints
from canopy.scheduler.request import POLICIES

sg, sm = g.server_groups.c, g.server_group_members.c
POLICY_SHAPE = (2, 64)  # `policy` + `rules` replace `policies` + `metadata`
SOFT_POLICIES = (2, 15)
PROJECT_FIELDS = (2, 13)
NAME_MAX = 255


def group_not_found(group_id: str) -> ApiError:
    return ApiError(404, f"Instance group {group_id} could not be found.")


def render(row: dict[str, Any], members: list[str], version: tuple[int, int]) -> dict[str, Any]:
    """A server group in the shape of the request's microversion."""
    out: dict[str, Any] = {"id": row["uuid"], "name": row["name"]}
    if version >= POLICY_SHAPE:
        out.update(policy=row["policy"], rules=row["rules"] or {})
    else:
        out.update(policies=[row["policy"]], metadata={})
    out["members"] = members
    if version >= PROJECT_FIELDS:
        out.update(project_id=row["project_id"], user_id=row["user_id"])
    return out


def _invalid(field: str, value: Any, why: str) -> ApiError:
    return bad_request(f"Invalid input for field/attribute {field}. Value: {value}. {why}")


def parse_create(body: dict[str, Any], version: tuple[int, int]) -> tuple[str, str, dict[str, int]]:
    """Name, policy and rules of a create body, checked as Nova's schema for the microversion does."""
    allowed = {"name", "policy", "rules"} if version >= POLICY_SHAPE else {"name", "policies"}
    extra = sorted(set(body) - allowed)
    if extra:
        raise bad_request(f"Invalid input for field/attribute server_group. Additional properties are not allowed "
                          f"('{extra[0]}' was unexpected)")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        raise _invalid("name", name, "'name' must be a non-empty string of at most 255 characters")
    known = [p for p in POLICIES if version >= SOFT_POLICIES or not p.startswith("soft")]
    if version >= POLICY_SHAPE:
        policy, rules = body.get("policy"), body.get("rules", {})
        field = "policy"
    else:
        policies = body.get("policies")
        if not isinstance(policies, list) or len(policies) != 1:
            raise _invalid("policies", policies, "exactly one policy is required")
        policy, rules, field = policies[0], {}, "policies"
    if policy not in known:
        raise _invalid(field, policy, f"'{policy}' is not one of {known}")
    return name, str(policy), _rules(policy, rules)


def _rules(policy: str, rules: Any) -> dict[str, int]:
    if not isinstance(rules, dict):
        raise _invalid("rules", rules, f"{rules!r} is not of type 'object'")
    if rules and policy != "anti-affinity":
        raise bad_request("Only anti-affinity policy supports rules.")
    extra = sorted(set(rules) - {"max_server_per_host"})
    if extra:
        raise bad_request(f"Invalid input for field/attribute rules. Additional properties are not allowed "
                          f"('{extra[0]}' was unexpected)")
    value = rules.get("max_server_per_host")
    if value is None:
        return {}
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() or int(value) < 1:
        raise _invalid("max_server_per_host", value, "must be a positive integer")
    return {"max_server_per_host": int(value)}


def _insert(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(g.server_groups).values(**values))


async def create_group(request: Request) -> Response:
    """POST /os-server-groups."""
    rc, version = ctx(request), mv(request)
    name, policy, rules = parse_create(await read_object(request, "server_group"), version)
    cloud = cloud_of(request)
    row = {"uuid": str(uuidlib.uuid4()), "name": name, "project_id": rc.project_id or "",
           "user_id": rc.user_id or "", "policy": policy, "rules": rules, "created_at": cloud.clock.now()}
    await cloud.dbs.global_db.write(_insert, row)
    return json_response({"server_group": render(row, [], version)})


def _visible(row: Any, rc: RequestContext) -> bool:
    return row is not None and (rc.is_admin or row["project_id"] == rc.project_id)


def _load(conn: Connection, group_id: str) -> tuple[dict[str, Any] | None, list[str]]:
    row = conn.execute(select(g.server_groups).where(sg.uuid == group_id)).mappings().first()
    if row is None:
        return None, []
    members = [r[0] for r in conn.execute(select(sm.instance_uuid).where(sm.group_id == row["id"])
                                          .order_by(sm.instance_uuid))]
    return dict(row), members


def _live(conn: Connection, uuids: list[str]) -> set[str]:
    """The instances among `uuids` that are not deleted (deleted members leave their group)."""
    if not uuids:
        return set()
    i = c.instances.c
    return {r[0] for r in conn.execute(select(i.uuid).where(i.uuid.in_(uuids), i.deleted.is_(False)))}


async def _members(request: Request, uuids: list[str]) -> list[str]:
    live = await cell_db(request).read(_live, uuids)
    return [u for u in uuids if u in live]


async def show_group(request: Request) -> Response:
    """GET /os-server-groups/{id}."""
    group_id = request.path_params["group_id"]
    row, members = await cloud_of(request).dbs.global_db.read(_load, group_id)
    if not _visible(row, ctx(request)):
        raise group_not_found(group_id)
    assert row is not None
    return json_response({"server_group": render(row, await _members(request, members), mv(request))})


def _list(conn: Connection, project_id: str | None, limit: int, offset: int) -> list[tuple[dict[str, Any], list[str]]]:
    q = select(g.server_groups).order_by(sg.id).limit(limit).offset(offset)
    if project_id is not None:
        q = q.where(sg.project_id == project_id)
    rows = [dict(r) for r in conn.execute(q).mappings()]
    members: dict[int, list[str]] = {r["id"]: [] for r in rows}
    if rows:
        for gid, uuid in conn.execute(select(sm.group_id, sm.instance_uuid).where(sm.group_id.in_(list(members)))
                                      .order_by(sm.instance_uuid)):
            members[gid].append(uuid)
    return [(r, members[r["id"]]) for r in rows]


def _int_param(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise bad_request(f"Invalid input for query parameters {name}. Value: {raw}. '{raw}' is not an integer")
    return min(int(raw), maximum) if maximum is not None else int(raw)


async def list_groups(request: Request) -> Response:
    """GET /os-server-groups (`all_projects=True` for admins; `limit`/`offset`)."""
    rc = ctx(request)
    everyone = rc.is_admin and bool_param(request.query_params.get("all_projects"), "all_projects")
    max_page = cloud_of(request).settings.api.max_page_size
    limit, offset = _int_param(request, "limit", max_page, max_page), _int_param(request, "offset", 0)
    found = await cloud_of(request).dbs.global_db.read(_list, None if everyone else rc.project_id, limit, offset)
    live = await cell_db(request).read(_live, [u for _, ms in found for u in ms])
    version = mv(request)
    return json_response({"server_groups": [render(r, [u for u in ms if u in live], version) for r, ms in found]})


def _delete(conn: Connection, group_id: str, rc: RequestContext) -> None:
    row = conn.execute(select(sg.id, sg.project_id).where(sg.uuid == group_id)).mappings().first()
    if not _visible(row, rc):
        raise group_not_found(group_id)
    assert row is not None
    conn.execute(delete(g.server_group_members).where(sm.group_id == row["id"]))
    conn.execute(delete(g.server_groups).where(sg.id == row["id"]))


async def delete_group(request: Request) -> Response:
    """DELETE /os-server-groups/{id}."""
    await cloud_of(request).dbs.global_db.write(_delete, request.path_params["group_id"], ctx(request))
    return empty_response(204)


# -- scheduler hints on server create --------------------------------------------------------------


def _uuid_list(name: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and is_uuid(v) for v in values):
        raise _invalid(name, value, f"'{value}' is not a 'uuid' or a list of them")
    return list(values)


def _find_group(conn: Connection, group_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(sg.id, sg.uuid, sg.project_id, sg.policy, sg.rules).where(sg.uuid == group_id)
                       ).mappings().first()
    return dict(row) if row else None


@dataclass(frozen=True)
class HintsRequest:
    """The `os:scheduler_hints` of a create as the body gives them, checked but not yet looked up."""

    group: str | None = None
    same_host: list[str] = field(default_factory=list)
    different_host: list[str] = field(default_factory=list)


def parse_hints(body: dict[str, Any]) -> HintsRequest:
    """The scheduler hints of a create body (either key); 400 names a wrong one. Reads no database."""
    hints = body.get("os:scheduler_hints", body.get("OS-SCH-HNT:scheduler_hints"))
    hints = {} if hints is None else hints
    if not isinstance(hints, dict):
        raise _invalid("os:scheduler_hints", hints, f"{hints!r} is not of type 'object'")
    lists = {key: _uuid_list(key, hints[key]) for key in ("same_host", "different_host") if key in hints}
    group_id = hints.get("group")
    if "group" in hints and (not isinstance(group_id, str) or not is_uuid(group_id)):
        raise _invalid("group", group_id, f"'{group_id}' is not a 'uuid'")
    return HintsRequest(group=group_id, **lists)


async def resolve_hints(request: Request, asked: HintsRequest) -> SchedulerHints:
    """The hints the scheduler gets: the group (if any) looked up and resolved to its policy and rules."""
    group = None
    if asked.group is not None:
        row = await cloud_of(request).dbs.global_db.read(_find_group, asked.group)
        if not _visible(row, ctx(request)):
            raise bad_request(f"Instance group {asked.group} could not be found.")
        assert row is not None
        group = GroupHint(id=row["id"], uuid=row["uuid"], policy=row["policy"], rules=row["rules"] or {})
    return SchedulerHints(group=group, same_host=asked.same_host, different_host=asked.different_host)


def add_group_members(conn: Connection, hints: SchedulerHints, instance_uuids: list[str]) -> None:
    """Make new instances members of the group their create named (in the create's transaction)."""
    if hints.group is not None and instance_uuids:
        conn.execute(insert(g.server_group_members), [{"group_id": hints.group.id, "instance_uuid": u}
                                                     for u in instance_uuids])


ROUTES = [
    route("/v2.1/os-server-groups", list_groups, ["GET"], "compute:server-groups"),
    route("/v2.1/os-server-groups", create_group, ["POST"], "compute:server-groups:create"),
    route("/v2.1/os-server-groups/{group_id}", show_group, ["GET"], "compute:server-groups:show"),
    route("/v2.1/os-server-groups/{group_id}", delete_group, ["DELETE"], "compute:server-groups:delete"),
]
