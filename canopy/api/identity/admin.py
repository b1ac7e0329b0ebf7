"""Identity v3 administration: domains, projects, users, roles and role assignments (Keystone's shapes)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.errors import ApiError, bad_request, conflict, forbidden, not_found
from canopy.api.http import bool_param, ctx, empty_response, json_response, read_object, route
from canopy.api.identity import store, tags
from canopy.api.identity.passwords import hash_password
from canopy.api.token_state import project_event, record_events, user_event
from canopy.auth.revocation import RevocationEvent
from canopy.runtime import Cloud

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
JSON_TYPES = {"string_type": "string", "bool_type": "boolean", "int_type": "integer", "list_type": "array"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ProjectCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    enabled: bool = True
    domain_id: str | None = None
    parent_id: str | None = None
    is_domain: bool = False
    tags: list[str] = Field(default_factory=list)


class ProjectUpdate(_Body):
    # Defaults never reach the database (only the keys a body sets do); an explicit null is a 400.
    name: str = Field(default="", min_length=1, max_length=64)
    description: str = ""
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)


class UserCreate(_Body):
    name: str = Field(min_length=1, max_length=255)
    password: str | None = None
    default_project_id: str | None = None
    email: str | None = None
    enabled: bool = True
    domain_id: str | None = None


class UserUpdate(_Body):
    name: str = Field(default="", min_length=1, max_length=255)
    password: str = ""
    default_project_id: str | None = None
    email: str | None = None
    enabled: bool = True


class RoleCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
    domain_id: str | None = None


def _parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate a body; the first problem is a 400 naming the field, as Keystone words it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            raise bad_request(f"Invalid input for field '{field}': '{field}' is a required property") from None
        kind = JSON_TYPES.get(err["type"])
        reason = f"{err.get('input')!r} is not of type '{kind}'" if kind else err["msg"]
        raise bad_request(f"Invalid input for field '{field}': {reason}") from None


def _changes(body: BaseModel) -> dict[str, Any]:
    """The known fields a PATCH body sets (extra keys are accepted and ignored, as Keystone stores them)."""
    known = set(type(body).model_fields)
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if k in known}


def _cloud(request: Request) -> Cloud:
    return request.app.state.cloud


def _base(request: Request) -> str:
    return _cloud(request).settings.api.public_url.rstrip("/") + "/identity/v3"


async def _read(request: Request, fn: Callable[..., T], *args: Any) -> T:
    return await _cloud(request).dbs.global_db.read(fn, *args)


async def _write(request: Request, fn: Callable[..., T], *args: Any) -> T:
    try:
        return await _cloud(request).dbs.global_db.write(fn, *args)
    except (IntegrityError, store.NameTaken):
        raise conflict("Conflict occurred attempting to store the resource - Duplicate entry.") from None


async def _write_revoking(request: Request, events: Callable[[], list[RevocationEvent]], fn: Callable[..., T],
                          *args: Any) -> T:
    """`_write`, recording revocation events in the same transaction when `fn` changed something."""
    keep_s = _cloud(request).settings.auth.token_ttl_s + 60
    made: list[RevocationEvent] = []

    def unit(conn: Connection) -> T:
        result = fn(conn, *args)
        if result:
            made.extend(events())
            record_events(conn, made, keep_s)
        return result

    result = await _write(request, unit)
    request.app.state.guard.note(made)
    return result


def _collection(request: Request, key: str, items: list[dict[str, Any]]) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return json_response({key: items, "links": {"self": f"{_base(request)}{request.url.path.split('/v3', 1)[1]}"
                                                         f"{query}", "previous": None, "next": None}})


async def _show(request: Request, kind: str, ident: str, fn: Callable[..., Any], view: Callable[..., Any]) -> Response:
    """`{kind: view}` of the record `fn(conn, ident)` finds, or 404."""
    found = await _read(request, fn, ident)
    if found is None:
        raise _missing(kind, ident)
    return json_response({kind: view(_base(request), found)})


async def _remove(request: Request, kind: str, ident: str, fn: Callable[..., bool]) -> Response:
    """Delete with `fn(conn, ident)`: 204, or 404 when there was nothing."""
    if kind in ("user", "project"):
        await _in_reach(request, kind, ident)
    events = {"user": lambda: [user_event(ident)], "project": lambda: [project_event(ident)]}.get(kind, list)
    if not await _write_revoking(request, events, fn, ident):
        raise _missing(kind, ident)
    return empty_response(204)


def _saved(request: Request, kind: str, record: dict[str, Any] | None, view: Callable[..., Any],
           duplicate: str | None = None) -> Response:
    """The response to a create (`duplicate` names it: None means taken, 409) or an update (None means 404)."""
    if record is None:
        raise _duplicate(kind, duplicate) if duplicate else _missing(kind, request.path_params[f"{kind}_id"])
    return json_response({kind: view(_base(request), record)}, status=201 if duplicate else 200)


def _missing(kind: str, ident: str) -> ApiError:
    return not_found(f"Could not find {kind}: {ident}.")


def _duplicate(kind: str, name: str) -> ApiError:
    return conflict(f"Conflict occurred attempting to store {kind} - Duplicate entry found with name {name}.")


def domain_limit(request: Request) -> str | None:
    """The one domain a domain-scoped caller (a reseller's admin) may manage; None for a cloud admin."""
    return ctx(request).domain_id


async def _domain_for(request: Request, domain_id: str | None) -> str:
    """The domain a new user or project goes into: the body's, else the caller's, else `default`;
    it must exist, and a domain's admin may only create in its own."""
    limit = domain_limit(request)
    wanted = domain_id or limit or "default"
    if limit is not None and wanted != limit:
        raise forbidden(f"A domain's admin manages its own domain only, not {wanted}.")
    found = await _read(request, lambda conn: store.find_domain(conn, {"id": wanted}))
    if found is None:
        raise _missing("domain", wanted)
    return wanted


async def _in_reach(request: Request, kind: str, ident: str) -> None:
    """403 when a domain's admin names a user or project of another domain (a missing one is left to 404)."""
    limit = domain_limit(request)
    if limit is None:
        return
    find = store.find_user if kind == "user" else store.find_project
    found = await _read(request, lambda conn: find(conn, **{f"{kind}_id": ident}))
    if found is not None and found["domain_id"] != limit:
        raise forbidden(f"{kind} {ident} is not in domain {limit}.")


def _present(request: Request, name: str) -> bool:
    """A Keystone presence flag: `?effective` or `?effective=true` are on; absent, `0` and `false` are off."""
    value = request.query_params.get(name)
    return value is not None and value.lower() not in ("0", "false", "no", "off")


def project_view(base: str, p: dict[str, Any]) -> dict[str, Any]:
    """A project as Keystone shows it."""
    return {"id": p["id"], "name": p["name"], "domain_id": p["domain_id"], "description": p["description"],
            "enabled": p["enabled"], "parent_id": p["domain_id"], "is_domain": False, "tags": p.get("tags", []),
            "options": {},
            "links": {"self": f"{base}/projects/{p['id']}"}}


def user_view(base: str, u: dict[str, Any]) -> dict[str, Any]:
    """A user as Keystone shows it (never the password)."""
    view = {"id": u["id"], "name": u["name"], "domain_id": u["domain_id"], "enabled": u["enabled"],
            "password_expires_at": None, "options": {}, "links": {"self": f"{base}/users/{u['id']}"}}
    if u.get("default_project_id"):
        view["default_project_id"] = u["default_project_id"]
    if u.get("email"):
        view["email"] = u["email"]
    return view


def role_view(base: str, r: dict[str, Any]) -> dict[str, Any]:
    """A role as Keystone shows it."""
    return {"id": r["id"], "name": r["name"], "domain_id": None, "description": None, "options": {},
            "links": {"self": f"{base}/roles/{r['id']}"}}


async def list_projects(request: Request) -> Response:
    """GET /v3/projects: every project for an admin; a member sees only its own."""
    c, limit = ctx(request), domain_limit(request)
    q = request.query_params
    only = None if c.is_admin or limit else (c.project_id or "-")
    enabled = bool_param(q.get("enabled"), "enabled")
    domain_id = q.get("domain_id") or limit
    wanted = tags.tag_filter(request)

    def load(conn: Connection) -> list[dict[str, Any]]:
        found = store.list_projects(conn, name=q.get("name"), project_id=only, enabled=enabled, domain_id=domain_id)
        return [p for p in tags.with_tags(conn, found) if tags.matches(p["tags"], wanted)]

    rows = [] if limit and domain_id != limit else await _read(request, load)
    return _collection(request, "projects", [project_view(_base(request), p) for p in rows])


async def create_project(request: Request) -> Response:
    """POST /v3/projects."""
    body = _parse(ProjectCreate, await read_object(request, "project"))
    domain_id = await _domain_for(request, body.domain_id)
    if body.is_domain or body.parent_id not in (None, domain_id):
        raise bad_request("Invalid input for field 'parent_id': nested projects are not supported")
    values = {"name": body.name, "description": body.description, "enabled": body.enabled,
              "domain_id": domain_id, "tags": tags.check_tags(body.tags), "created_at": _cloud(request).clock.now()}
    return _saved(request, "project", await _write(request, store.create_project, values), project_view, body.name)


async def get_project(request: Request) -> Response:
    """GET /v3/projects/{project_id}: admins, and members of that project."""
    project_id = request.path_params["project_id"]
    c = ctx(request)
    if not c.is_admin and not c.domain_id and c.project_id != project_id:
        raise forbidden()
    await _in_reach(request, "project", project_id)
    return await _show(request, "project", project_id, store.project_with_tags, project_view)


async def update_project(request: Request) -> Response:
    """PATCH /v3/projects/{project_id}."""
    project_id = request.path_params["project_id"]
    await _in_reach(request, "project", project_id)
    changes = _changes(_parse(ProjectUpdate, await read_object(request, "project")))
    if "tags" in changes:
        changes["tags"] = tags.check_tags(changes["tags"])
    events = (lambda: [project_event(project_id)]) if changes.get("enabled") is False else list
    return _saved(request, "project", await _write_revoking(request, events, store.update_project, project_id,
                                                            changes), project_view)


async def delete_project(request: Request) -> Response:
    """DELETE /v3/projects/{project_id}."""
    return await _remove(request, "project", request.path_params["project_id"], store.delete_project)


async def list_users(request: Request) -> Response:
    """GET /v3/users."""
    q, limit = request.query_params, domain_limit(request)
    enabled = bool_param(q.get("enabled"), "enabled")
    domain_id = q.get("domain_id") or limit
    rows = [] if limit and domain_id != limit else await _read(
        request, lambda conn: store.list_users(conn, name=q.get("name"), enabled=enabled, domain_id=domain_id))
    return _collection(request, "users", [user_view(_base(request), u) for u in rows])


async def _user_values(request: Request, changes: dict[str, Any]) -> dict[str, Any]:
    """Table values for a user body: the password hashed (off the event loop), the default project checked."""
    values = dict(changes)
    if "password" in values:
        password = values.pop("password") or secrets.token_urlsafe(32)
        values["password_hash"] = await asyncio.to_thread(hash_password, password)
    project_id = values.get("default_project_id")
    if project_id:
        found = await _read(request, lambda conn: store.find_project(conn, project_id=project_id))
        if found is None:
            raise _missing("project", project_id)
    return values


async def create_user(request: Request) -> Response:
    """POST /v3/users."""
    body = _parse(UserCreate, await read_object(request, "user"))
    domain_id = await _domain_for(request, body.domain_id)
    values = await _user_values(request, {"name": body.name, "password": body.password, "email": body.email,
                                          "default_project_id": body.default_project_id,
                                          "enabled": body.enabled, "domain_id": domain_id})
    values["created_at"] = _cloud(request).clock.now()
    return _saved(request, "user", await _write(request, store.create_user, values), user_view, body.name)


async def get_user(request: Request) -> Response:
    """GET /v3/users/{user_id}: admins, and the user itself."""
    user_id = request.path_params["user_id"]
    c = ctx(request)
    if not c.is_admin and not c.domain_id and c.user_id != user_id:
        raise forbidden()
    if c.user_id != user_id:
        await _in_reach(request, "user", user_id)
    return await _show(request, "user", user_id, lambda conn, i: store.find_user(conn, user_id=i), user_view)


async def update_user(request: Request) -> Response:
    """PATCH /v3/users/{user_id}."""
    user_id = request.path_params["user_id"]
    await _in_reach(request, "user", user_id)
    changes = _changes(_parse(UserUpdate, await read_object(request, "user")))
    values = await _user_values(request, changes)
    # A new password or a disabled user ends every token the user holds (Keystone does the same).
    revoking = "password_hash" in values or values.get("enabled") is False
    events = (lambda: [user_event(user_id)]) if revoking else list
    return _saved(request, "user", await _write_revoking(request, events, store.update_user, user_id, values),
                  user_view)


async def delete_user(request: Request) -> Response:
    """DELETE /v3/users/{user_id}."""
    return await _remove(request, "user", request.path_params["user_id"], store.delete_user)


async def list_user_projects(request: Request) -> Response:
    """GET /v3/users/{user_id}/projects: the projects a user holds a role on (admins, and the user itself)."""
    user_id = request.path_params["user_id"]
    c = ctx(request)
    if not c.is_admin and c.user_id != user_id:
        raise forbidden()

    rows = await _read(request, store.user_projects, user_id)
    if rows is None:
        raise _missing("user", user_id)
    return _collection(request, "projects", [project_view(_base(request), p) for p in rows])


async def list_roles(request: Request) -> Response:
    """GET /v3/roles."""
    name = request.query_params.get("name")
    rows = await _read(request, lambda conn: store.list_roles(conn, name=name))
    return _collection(request, "roles", [role_view(_base(request), r) for r in rows])


async def create_role(request: Request) -> Response:
    """POST /v3/roles."""
    body = _parse(RoleCreate, await read_object(request, "role"))
    if body.domain_id is not None:
        raise bad_request("Invalid input for field 'domain_id': domain-specific roles are not supported")
    return _saved(request, "role", await _write(request, store.create_role, body.name), role_view, body.name)


async def get_role(request: Request) -> Response:
    """GET /v3/roles/{role_id}."""
    return await _show(request, "role", request.path_params["role_id"],
                       lambda conn, i: store.find_role(conn, role_id=i), role_view)


async def delete_role(request: Request) -> Response:
    """DELETE /v3/roles/{role_id}."""
    return await _remove(request, "role", request.path_params["role_id"], store.delete_role)


def _check_parties(conn: Connection, project_id: str, user_id: str, role_id: str | None) -> None:
    missing = store.missing_party(conn, project_id, user_id, role_id)
    if missing is not None:
        raise _missing(*missing)


async def grant(request: Request) -> Response:
    """PUT, HEAD and DELETE /v3/projects/{project_id}/users/{user_id}/roles/{role_id}."""
    pp = request.path_params
    project_id, user_id, role_id = pp["project_id"], pp["user_id"], pp["role_id"]
    await _in_reach(request, "project", project_id)
    await _in_reach(request, "user", user_id)

    def apply(conn: Connection) -> bool:
        _check_parties(conn, project_id, user_id, role_id)
        if request.method == "PUT":
            store.grant_role(conn, user_id, project_id, role_id)
            return True
        if request.method == "DELETE":
            gone = store.revoke_role(conn, user_id, project_id, role_id)
            if gone:  # the user's tokens on the project carry the role: they end
                event = project_event(project_id, user_id)
                record_events(conn, [event], _cloud(request).settings.auth.token_ttl_s + 60)
                made.append(event)
            return gone
        return store.has_assignment(conn, user_id, project_id, role_id)

    made: list[RevocationEvent] = []
    run = _write if request.method in ("PUT", "DELETE") else _read
    found = await run(request, apply)
    request.app.state.guard.note(made)
    if not found:
        raise not_found(f"Could not find role assignment with role: {role_id}, user or group: {user_id}, "
                        f"project, domain, or system: {project_id}.")
    return empty_response(204)


async def list_grants(request: Request) -> Response:
    """GET /v3/projects/{project_id}/users/{user_id}/roles: the roles assigned directly."""
    project_id, user_id = request.path_params["project_id"], request.path_params["user_id"]
    await _in_reach(request, "project", project_id)

    def load(conn: Connection) -> list[dict[str, Any]]:
        _check_parties(conn, project_id, user_id, None)
        return store.direct_roles(conn, user_id, project_id)

    rows = await _read(request, load)
    return _collection(request, "roles", [role_view(_base(request), r) for r in rows])


ROUTES: list[BaseRoute] = [
    route("/v3/projects", list_projects, ["GET"], "identity:list_projects"),
    route("/v3/projects", create_project, ["POST"], "identity:create_project"),
    route("/v3/projects/{project_id}", get_project, ["GET"], "identity:get_project"),
    route("/v3/projects/{project_id}", update_project, ["PATCH"], "identity:update_project"),
    route("/v3/projects/{project_id}", delete_project, ["DELETE"], "identity:delete_project"),
    route("/v3/projects/{project_id}/users/{user_id}/roles", list_grants, ["GET"], "identity:list_grants"),
    route("/v3/projects/{project_id}/users/{user_id}/roles/{role_id}", grant, ["PUT", "HEAD", "DELETE"],
          "identity:grant"),
    route("/v3/users", list_users, ["GET"], "identity:list_users"),
    route("/v3/users", create_user, ["POST"], "identity:create_user"),
    route("/v3/users/{user_id}", get_user, ["GET"], "identity:get_user"),
    route("/v3/users/{user_id}", update_user, ["PATCH"], "identity:update_user"),
    route("/v3/users/{user_id}", delete_user, ["DELETE"], "identity:delete_user"),
    route("/v3/users/{user_id}/projects", list_user_projects, ["GET"], "identity:list_user_projects"),
    route("/v3/roles", list_roles, ["GET"], "identity:list_roles"),
    route("/v3/roles", create_role, ["POST"], "identity:create_role"),
    route("/v3/roles/{role_id}", get_role, ["GET"], "identity:get_role"),
    route("/v3/roles/{role_id}", delete_role, ["DELETE"], "identity:delete_role"),
]
