"""Identity v3 groups beyond list/create/membership (canopy/api/identity/scopes.py): show, update, delete,
their users, a user's groups, and role grants to users and groups on domains and to groups on projects.

Removing a grant, or a group, ends the tokens of the users it gave roles to (a user event each), as the
revocation events of a removed project role do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field
from sqlalchemy import Connection, delete, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.errors import not_found
from canopy.api.http import empty_response, json_response, read_object, route
from canopy.api.identity import grants, store
from canopy.api.identity.admin import (
    _Body,
    _changes,
    _cloud,
    _collection,
    _duplicate,
    _missing,
    _parse,
    _read,
    _write,
    domain_limit,
    role_view,
    user_view,
)
from canopy.api.token_state import record_events, user_event
from canopy.auth.revocation import RevocationEvent
from canopy.db import tables_global as g


class GroupUpdate(_Body):
    name: str = Field(default="", min_length=1, max_length=64)
    description: str = ""


def _base(request: Request) -> str:
    return _cloud(request).settings.api.public_url.rstrip("/") + "/identity/v3"


def group_view(base: str, r: dict[str, Any]) -> dict[str, Any]:
    """A group as Keystone shows it."""
    return {"id": r["id"], "name": r["name"], "description": r["description"], "domain_id": r["domain_id"],
            "links": {"self": f"{base}/groups/{r['id']}"}}


def find_group(conn: Connection, group_id: str) -> dict[str, Any] | None:
    """The group with this id."""
    row = conn.execute(select(g.groups).where(g.groups.c.id == group_id)).mappings().first()
    return dict(row) if row else None


def members(conn: Connection, group_id: str) -> list[str]:
    """The ids of a group's users."""
    return list(conn.execute(select(g.group_members.c.user_id).where(g.group_members.c.group_id == group_id))
                .scalars())


def _actor_events(conn: Connection, actor: tuple[str, str]) -> list[RevocationEvent]:
    ids = [actor[1]] if actor[0] == "user" else members(conn, actor[1])
    return [user_event(i) for i in ids]


def _group_in_reach(request: Request, conn: Connection, group_id: str) -> dict[str, Any]:
    found = find_group(conn, group_id)
    limit = domain_limit(request)
    if found is None or (limit is not None and found["domain_id"] != limit):
        raise _missing("group", group_id)
    return found


async def get_group(request: Request) -> Response:
    """GET /v3/groups/{group_id}."""
    group_id = request.path_params["group_id"]
    found = await _read(request, lambda conn: _group_in_reach(request, conn, group_id))
    return json_response({"group": group_view(_base(request), found)})


async def update_group(request: Request) -> Response:
    """PATCH /v3/groups/{group_id}."""
    group_id = request.path_params["group_id"]
    changes = _changes(_parse(GroupUpdate, await read_object(request, "group")))

    def apply(conn: Connection) -> dict[str, Any]:
        found = _group_in_reach(request, conn, group_id)
        if "name" in changes:
            taken = conn.execute(select(g.groups.c.id).where(g.groups.c.name == changes["name"],
                                                             g.groups.c.domain_id == found["domain_id"],
                                                             g.groups.c.id != group_id)).first()
            if taken is not None:
                raise _duplicate("group", changes["name"])
        if changes:
            conn.execute(update(g.groups).where(g.groups.c.id == group_id).values(**changes))
        return {**found, **changes}

    return json_response({"group": group_view(_base(request), await _write(request, apply))})


async def delete_group(request: Request) -> Response:
    """DELETE /v3/groups/{group_id}: its grants go, and its members' tokens end."""
    group_id = request.path_params["group_id"]
    made: list[RevocationEvent] = []

    def apply(conn: Connection) -> None:
        _group_in_reach(request, conn, group_id)
        made.extend(_actor_events(conn, ("group", group_id)))
        grants.drop_actor(conn, "group", group_id)
        conn.execute(delete(g.group_members).where(g.group_members.c.group_id == group_id))
        conn.execute(delete(g.groups).where(g.groups.c.id == group_id))
        record_events(conn, made, _cloud(request).settings.auth.token_ttl_s + 60)

    await _write(request, apply)
    request.app.state.guard.note(made)
    return empty_response(204)


async def list_group_users(request: Request) -> Response:
    """GET /v3/groups/{group_id}/users."""
    group_id = request.path_params["group_id"]

    def load(conn: Connection) -> list[dict[str, Any]]:
        _group_in_reach(request, conn, group_id)
        ids = members(conn, group_id)
        return [dict(r) for r in conn.execute(select(g.users).where(g.users.c.id.in_(ids))
                                              .order_by(g.users.c.name)).mappings()]

    rows = await _read(request, load)
    return _collection(request, "users", [user_view(_base(request), u) for u in rows])


async def list_user_groups(request: Request) -> Response:
    """GET /v3/users/{user_id}/groups."""
    user_id = request.path_params["user_id"]

    def load(conn: Connection) -> list[dict[str, Any]]:
        if store.find_user(conn, user_id=user_id) is None:
            raise _missing("user", user_id)
        ids = grants.user_groups(conn, user_id)
        return [dict(r) for r in conn.execute(select(g.groups).where(g.groups.c.id.in_(ids))
                                              .order_by(g.groups.c.name)).mappings()]

    rows = await _read(request, load)
    return _collection(request, "groups", [group_view(_base(request), r) for r in rows])


def grant_actor(request: Request) -> tuple[str, str]:
    """The user or group a grant route names."""
    pp = request.path_params
    return ("user", pp["user_id"]) if "user_id" in pp else ("group", pp["group_id"])


def check_actor(conn: Connection, actor: tuple[str, str]) -> None:
    """404 unless the user or group exists."""
    table = g.users if actor[0] == "user" else g.groups
    if conn.execute(select(table.c.id).where(table.c.id == actor[1])).first() is None:
        raise not_found(f"Could not find {actor[0]}: {actor[1]}.")


async def apply_grant(request: Request, target: tuple[str, str], exists: Callable[[Connection], None]) -> Response:
    """PUT (grant), HEAD (check) or DELETE (revoke, ending the actor's tokens) one role of the path's actor."""
    actor, role_id = grant_actor(request), request.path_params["role_id"]
    made: list[RevocationEvent] = []

    def apply(conn: Connection) -> bool:
        exists(conn)
        check_actor(conn, actor)
        if store.find_role(conn, role_id=role_id) is None:
            raise _missing("role", role_id)
        if request.method == "PUT":
            grants.grant(conn, actor, target, role_id)
            return True
        if request.method == "DELETE":
            gone = grants.revoke(conn, actor, target, role_id)
            if gone:
                made.extend(_actor_events(conn, actor))
                record_events(conn, made, _cloud(request).settings.auth.token_ttl_s + 60)
            return gone
        return grants.has_grant(conn, actor, target, role_id)

    found = await (_write if request.method in ("PUT", "DELETE") else _read)(request, apply)
    request.app.state.guard.note(made)
    if not found:
        raise not_found(f"Could not find role assignment with role: {role_id}, user or group: {actor[1]}, "
                        f"project, domain, or system: {target[1]}.")
    return empty_response(204)


def _project_exists(project_id: str) -> Callable[[Connection], None]:
    def check(conn: Connection) -> None:
        if store.find_project(conn, project_id=project_id) is None:
            raise _missing("project", project_id)
    return check


async def project_group_grant(request: Request) -> Response:
    """PUT, HEAD, DELETE /v3/projects/{project_id}/groups/{group_id}/roles/{role_id}."""
    project_id = request.path_params["project_id"]
    return await apply_grant(request, ("project", project_id), _project_exists(project_id))


async def project_group_grants(request: Request) -> Response:
    """GET /v3/projects/{project_id}/groups/{group_id}/roles."""
    project_id, group_id = request.path_params["project_id"], request.path_params["group_id"]

    def load(conn: Connection) -> list[dict[str, Any]]:
        _project_exists(project_id)(conn)
        check_actor(conn, ("group", group_id))
        return grants.list_grants(conn, ("group", group_id), ("project", project_id))

    rows = await _read(request, load)
    return _collection(request, "roles", [role_view(_base(request), {"id": r["role_id"], "name": r["role_name"]})
                                          for r in rows])


ROUTES: list[BaseRoute] = [
    route("/v3/groups/{group_id}", get_group, ["GET"], "identity:get_group"),
    route("/v3/groups/{group_id}", update_group, ["PATCH"], "identity:update_group"),
    route("/v3/groups/{group_id}", delete_group, ["DELETE"], "identity:delete_group"),
    route("/v3/groups/{group_id}/users", list_group_users, ["GET"], "identity:list_group_users"),
    route("/v3/users/{user_id}/groups", list_user_groups, ["GET"], "identity:list_user_groups"),
    route("/v3/projects/{project_id}/groups/{group_id}/roles", project_group_grants, ["GET"],
          "identity:project_group_grants"),
    route("/v3/projects/{project_id}/groups/{group_id}/roles/{role_id}", project_group_grant,
          ["PUT", "HEAD", "DELETE"], "identity:project_group_grant"),
]
