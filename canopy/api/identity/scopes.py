"""What a token may be scoped to (`/v3/auth/projects`, `/auth/domains`, `/auth/system`, `/auth/catalog`),
group listing, creation and membership, and
system-scoped role grants (`/v3/system/users/{user_id}/roles/{role_id}`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import Connection, delete, insert, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.errors import not_found
from canopy.api.http import ctx, empty_response, json_response, read_object, route
from canopy.api.identity import grants, store
from canopy.api.identity.admin import _Body, _collection, _parse, _read, _write, project_view, role_view
from canopy.api.identity.catalog import load_catalog
from canopy.api.identity.domains import domain_view
from canopy.api.token_state import record_events, user_event
from canopy.auth.tokens import Scope
from canopy.db import tables_global as g


def _base(request: Request) -> str:
    return request.app.state.cloud.settings.api.public_url.rstrip("/") + "/identity/v3"


def _public(request: Request) -> str:
    return str(request.app.state.cloud.settings.api.public_url)


async def auth_projects(request: Request) -> Response:
    """GET /v3/auth/projects: the enabled projects the caller holds a role on."""
    user_id = ctx(request).user_id or ""

    def load(conn: Connection) -> list[dict[str, Any]]:
        return [p for p in store.list_projects(conn, enabled=True)
                if grants.roles_on(conn, user_id, Scope(project_id=p["id"]))]

    rows = await _read(request, load)
    return _collection(request, "projects", [project_view(_base(request), p) for p in rows])


async def auth_domains(request: Request) -> Response:
    """GET /v3/auth/domains: the enabled domains the caller holds a role on."""
    user_id = ctx(request).user_id or ""

    def load(conn: Connection) -> list[dict[str, Any]]:
        rows = [dict(r) for r in conn.execute(select(g.domains).where(g.domains.c.enabled.is_(True))).mappings()]
        return [d for d in rows if grants.roles_on(conn, user_id, Scope(domain_id=d["id"]))]

    rows = await _read(request, load)
    return _collection(request, "domains", [domain_view(_base(request), d) for d in rows])


async def auth_system(request: Request) -> Response:
    """GET /v3/auth/system: `[{"all": true}]` when the caller holds a role on the system."""
    user_id = ctx(request).user_id or ""
    roles = await _read(request, lambda conn: grants.roles_on(conn, user_id, Scope(system=True)))
    return _collection(request, "system", [{"all": True}] if roles else [])


async def auth_catalog(request: Request) -> Response:
    """GET /v3/auth/catalog: the catalog a scoped token carries."""
    catalog = await _read(request, load_catalog, _public(request))
    return json_response({"catalog": catalog, "links": {"self": f"{_base(request)}/auth/catalog"}})


class GroupCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    domain_id: str = "default"


def group_view(base: str, r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "name": r["name"], "description": r["description"], "domain_id": r["domain_id"],
            "links": {"self": f"{base}/groups/{r['id']}"}}


async def list_groups(request: Request) -> Response:
    """GET /v3/groups, filtered by name and domain_id."""
    q = request.query_params
    wanted = [g.groups.c[f] == q[f] for f in ("name", "domain_id") if q.get(f) is not None]
    rows = await _read(request, lambda conn: [dict(r) for r in conn.execute(
        select(g.groups).where(*wanted).order_by(g.groups.c.name)).mappings()])
    return _collection(request, "groups", [group_view(_base(request), r) for r in rows])


async def create_group(request: Request) -> Response:
    body = _parse(GroupCreate, await read_object(request, "group"))
    if await _read(request, lambda conn: store.find_domain(conn, {"id": body.domain_id})) is None:
        raise not_found(f"Could not find domain: {body.domain_id}.")
    row = {"id": store.new_id(), "name": body.name, "description": body.description, "domain_id": body.domain_id}
    await _write(request, lambda conn: conn.execute(insert(g.groups).values(**row)))
    return json_response({"group": group_view(_base(request), row)}, status=201)


async def group_member(request: Request) -> Response:
    """PUT, HEAD, DELETE /v3/groups/{group_id}/users/{user_id}; leaving a group ends the user's tokens."""
    group_id, user_id = request.path_params["group_id"], request.path_params["user_id"]
    gm = g.group_members.c
    keep_s = request.app.state.cloud.settings.auth.token_ttl_s + 60

    def apply(conn: Connection) -> bool:
        if conn.execute(select(g.groups.c.id).where(g.groups.c.id == group_id)).first() is None:
            raise not_found(f"Could not find group: {group_id}.")
        if store.find_user(conn, user_id=user_id) is None:
            raise not_found(f"Could not find user: {user_id}.")
        there = conn.execute(select(gm.user_id).where(gm.group_id == group_id, gm.user_id == user_id)).first()
        if request.method == "PUT" and there is None:
            conn.execute(insert(g.group_members).values(group_id=group_id, user_id=user_id))
        if request.method == "DELETE" and there is not None:
            conn.execute(delete(g.group_members).where(gm.group_id == group_id, gm.user_id == user_id))
            record_events(conn, [user_event(user_id)], keep_s)
        return request.method == "PUT" or there is not None

    if not await _write(request, apply):
        raise not_found(f"Could not find user {user_id} in group {group_id}.")
    return empty_response(204)


async def system_grant(request: Request) -> Response:
    """PUT, HEAD, DELETE /v3/system/users/{user_id}/roles/{role_id}."""
    user_id, role_id = request.path_params["user_id"], request.path_params["role_id"]
    actor, target = ("user", user_id), ("system", grants.SYSTEM)
    keep_s = request.app.state.cloud.settings.auth.token_ttl_s + 60

    def apply(conn: Connection) -> bool:
        if store.find_user(conn, user_id=user_id) is None:
            raise not_found(f"Could not find user: {user_id}.")
        if store.find_role(conn, role_id=role_id) is None:
            raise not_found(f"Could not find role: {role_id}.")
        if request.method == "PUT":
            grants.grant(conn, actor, target, role_id)
            return True
        if request.method == "DELETE":
            gone = grants.revoke(conn, actor, target, role_id)
            if gone:
                record_events(conn, [user_event(user_id)], keep_s)
            return gone
        return grants.has_grant(conn, actor, target, role_id)

    if not await _write(request, apply):
        raise not_found(f"Could not find role assignment with role: {role_id}, user or group: {user_id}, "
                        "project, domain, or system: all.")
    return empty_response(204)


async def list_system_grants(request: Request) -> Response:
    """GET /v3/system/users/{user_id}/roles."""
    user_id = request.path_params["user_id"]
    rows = await _read(request, lambda conn: grants.list_grants(conn, ("user", user_id), ("system", grants.SYSTEM)))
    return _collection(request, "roles", [role_view(_base(request), {"id": r["role_id"], "name": r["role_name"]})
                                          for r in rows])


ROUTES: list[BaseRoute] = [
    route("/v3/auth/projects", auth_projects, ["GET"], "identity:auth_projects"),
    route("/v3/auth/domains", auth_domains, ["GET"], "identity:auth_domains"),
    route("/v3/auth/system", auth_system, ["GET"], "identity:auth_system"),
    route("/v3/auth/catalog", auth_catalog, ["GET"], "identity:auth_catalog"),
    route("/v3/groups", list_groups, ["GET"], "identity:list_groups"),
    route("/v3/groups", create_group, ["POST"], "identity:create_group"),
    route("/v3/groups/{group_id}/users/{user_id}", group_member, ["PUT", "HEAD", "DELETE"], "identity:group_member"),
    route("/v3/system/users/{user_id}/roles", list_system_grants, ["GET"], "identity:scoped_grants"),
    route("/v3/system/users/{user_id}/roles/{role_id}", system_grant, ["PUT", "HEAD", "DELETE"],
          "identity:scoped_grant"),
]
