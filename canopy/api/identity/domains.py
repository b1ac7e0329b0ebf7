"""Identity v3 domains (a hosting provider's resellers each get one): create, update, disable, delete, and
role grants on a domain to a user or a group (`/v3/domains/{domain_id}/users|groups/{id}/roles/{role_id}`).

A domain is deleted only once disabled, as Keystone's; disabling or deleting it writes a domain revocation
event, so every token of its users and projects stops within the revocation cache's bound."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import Connection, delete, insert, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.errors import forbidden
from canopy.api.http import bool_param, ctx, empty_response, json_response, read_object, route
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
    _write_revoking,
    role_view,
)
from canopy.api.identity.group_admin import apply_grant, check_actor, grant_actor
from canopy.api.token_state import domain_event
from canopy.db import tables_global as g


class DomainCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    enabled: bool = True


class DomainUpdate(_Body):
    name: str = Field(default="", min_length=1, max_length=64)
    description: str = ""
    enabled: bool = True


def _base(request: Request) -> str:
    return _cloud(request).settings.api.public_url.rstrip("/") + "/identity/v3"


def domain_view(base: str, d: dict[str, Any]) -> dict[str, Any]:
    """A domain as Keystone shows it."""
    return {"id": d["id"], "name": d["name"], "description": d.get("description") or "",
            "enabled": bool(d["enabled"]), "tags": [], "options": {}, "links": {"self": f"{base}/domains/{d['id']}"}}


def find(conn: Connection, domain_id: str) -> dict[str, Any] | None:
    """The domain with this id."""
    row = conn.execute(select(g.domains).where(g.domains.c.id == domain_id)).mappings().first()
    return dict(row) if row else None


def _by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(g.domains).where(g.domains.c.name == name)).mappings().first()
    return dict(row) if row else None


async def list_domains(request: Request) -> Response:
    """GET /v3/domains: every domain for a cloud admin; a domain-scoped caller sees its own."""
    c, q = ctx(request), request.query_params
    enabled = bool_param(q.get("enabled"), "enabled")

    def load(conn: Connection) -> list[dict[str, Any]]:
        s = select(g.domains).order_by(g.domains.c.name)
        if q.get("name") is not None:
            s = s.where(g.domains.c.name == q["name"])
        if enabled is not None:
            s = s.where(g.domains.c.enabled == enabled)
        if c.domain_id:
            s = s.where(g.domains.c.id == c.domain_id)
        return [dict(r) for r in conn.execute(s).mappings()]

    rows = await _read(request, load)
    return _collection(request, "domains", [domain_view(_base(request), d) for d in rows])


async def get_domain(request: Request) -> Response:
    """GET /v3/domains/{domain_id}."""
    domain_id = request.path_params["domain_id"]
    found = await _read(request, find, domain_id)
    if found is None:
        raise _missing("domain", domain_id)
    return json_response({"domain": domain_view(_base(request), found)})


async def create_domain(request: Request) -> Response:
    """POST /v3/domains."""
    body = _parse(DomainCreate, await read_object(request, "domain"))
    row = {"id": store.new_id(), "name": body.name, "description": body.description, "enabled": body.enabled,
           "created_at": _cloud(request).clock.now()}

    def create(conn: Connection) -> dict[str, Any] | None:
        if _by_name(conn, body.name) is not None:
            return None
        conn.execute(insert(g.domains).values(**row))
        return row

    if await _write(request, create) is None:
        raise _duplicate("domain", body.name)
    return json_response({"domain": domain_view(_base(request), row)}, status=201)


async def update_domain(request: Request) -> Response:
    """PATCH /v3/domains/{domain_id}; disabling it ends the tokens of its users and projects."""
    domain_id = request.path_params["domain_id"]
    changes = _changes(_parse(DomainUpdate, await read_object(request, "domain")))
    if domain_id == "default" and changes.get("enabled") is False:
        raise forbidden("The default domain cannot be disabled.")

    def apply(conn: Connection) -> dict[str, Any] | None:
        if find(conn, domain_id) is None:
            return None
        other = _by_name(conn, changes["name"]) if "name" in changes else None
        if other is not None and other["id"] != domain_id:
            raise _duplicate("domain", changes["name"])
        if changes:
            conn.execute(update(g.domains).where(g.domains.c.id == domain_id).values(**changes))
        return find(conn, domain_id)

    events = (lambda: [domain_event(domain_id)]) if changes.get("enabled") is False else list
    found = await _write_revoking(request, events, apply)
    if found is None:
        raise _missing("domain", domain_id)
    return json_response({"domain": domain_view(_base(request), found)})


def _delete_contents(conn: Connection, domain_id: str) -> None:
    """Everything of a domain: its projects, users and groups, and every grant to or on them."""
    projects = list(conn.execute(select(g.projects.c.id).where(g.projects.c.domain_id == domain_id)).scalars())
    users = list(conn.execute(select(g.users.c.id).where(g.users.c.domain_id == domain_id)).scalars())
    groups = list(conn.execute(select(g.groups.c.id).where(g.groups.c.domain_id == domain_id)).scalars())
    ra = g.role_assignments.c
    conn.execute(delete(g.role_assignments).where(ra.project_id.in_(projects) | ra.user_id.in_(users)))
    gr = g.grants.c
    conn.execute(delete(g.grants).where(((gr.target_type == "project") & gr.target_id.in_(projects))
                                        | ((gr.target_type == "domain") & (gr.target_id == domain_id))
                                        | ((gr.actor_type == "user") & gr.actor_id.in_(users))
                                        | ((gr.actor_type == "group") & gr.actor_id.in_(groups))))
    conn.execute(delete(g.group_members).where(g.group_members.c.group_id.in_(groups)
                                               | g.group_members.c.user_id.in_(users)))
    conn.execute(delete(g.project_tags).where(g.project_tags.c.project_id.in_(projects)))
    conn.execute(delete(g.application_credentials).where(g.application_credentials.c.user_id.in_(users)))
    conn.execute(delete(g.groups).where(g.groups.c.domain_id == domain_id))
    conn.execute(delete(g.users).where(g.users.c.domain_id == domain_id))
    conn.execute(delete(g.projects).where(g.projects.c.domain_id == domain_id))


async def delete_domain(request: Request) -> Response:
    """DELETE /v3/domains/{domain_id}: only a disabled domain, with everything in it."""
    domain_id = request.path_params["domain_id"]
    if domain_id == "default":
        raise forbidden("The default domain cannot be deleted.")

    def apply(conn: Connection) -> bool:
        found = find(conn, domain_id)
        if found is None:
            raise _missing("domain", domain_id)
        if found["enabled"]:
            raise forbidden("Cannot delete a domain that is enabled, please disable it first.")
        _delete_contents(conn, domain_id)
        conn.execute(delete(g.domains).where(g.domains.c.id == domain_id))
        return True

    await _write_revoking(request, lambda: [domain_event(domain_id)], apply)
    return empty_response(204)


async def domain_grants(request: Request) -> Response:
    """GET /v3/domains/{domain_id}/users|groups/{id}/roles: the roles granted on the domain."""
    domain_id, actor = request.path_params["domain_id"], grant_actor(request)

    def load(conn: Connection) -> list[dict[str, Any]]:
        if find(conn, domain_id) is None:
            raise _missing("domain", domain_id)
        check_actor(conn, actor)
        return grants.list_grants(conn, actor, ("domain", domain_id))

    rows = await _read(request, load)
    return _collection(request, "roles", [role_view(_base(request), {"id": r["role_id"], "name": r["role_name"]})
                                          for r in rows])


async def domain_grant(request: Request) -> Response:
    """PUT, HEAD, DELETE /v3/domains/{domain_id}/users|groups/{id}/roles/{role_id}."""
    domain_id = request.path_params["domain_id"]
    actor = grant_actor(request)

    def exists(conn: Connection) -> None:
        if find(conn, domain_id) is None:
            raise _missing("domain", domain_id)
        if ctx(request).domain_id is not None:  # a domain's admin grants to its own users and groups only
            table = g.users if actor[0] == "user" else g.groups
            home = conn.execute(select(table.c.domain_id).where(table.c.id == actor[1])).scalar()
            if home not in (None, domain_id):
                raise forbidden(f"{actor[0]} {actor[1]} is not in domain {domain_id}.")

    return await apply_grant(request, ("domain", domain_id), exists)


ROUTES: list[BaseRoute] = [
    route("/v3/domains", list_domains, ["GET"], "identity:list_domains"),
    route("/v3/domains", create_domain, ["POST"], "identity:create_domain"),
    route("/v3/domains/{domain_id}", get_domain, ["GET"], "identity:get_domain"),
    route("/v3/domains/{domain_id}", update_domain, ["PATCH"], "identity:update_domain"),
    route("/v3/domains/{domain_id}", delete_domain, ["DELETE"], "identity:delete_domain"),
    route("/v3/domains/{domain_id}/users/{user_id}/roles", domain_grants, ["GET"], "identity:domain_grants"),
    route("/v3/domains/{domain_id}/users/{user_id}/roles/{role_id}", domain_grant, ["PUT", "HEAD", "DELETE"],
          "identity:domain_grant"),
    route("/v3/domains/{domain_id}/groups/{group_id}/roles", domain_grants, ["GET"], "identity:domain_grants"),
    route("/v3/domains/{domain_id}/groups/{group_id}/roles/{role_id}", domain_grant, ["PUT", "HEAD", "DELETE"],
          "identity:domain_grant"),
]
