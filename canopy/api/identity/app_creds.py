"""Application credentials (`/v3/users/{user_id}/application_credentials`): a secret bound to one user, one
project and a subset of the user's roles there, for automation; deleting one ends its tokens."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from typing import Any

from pydantic import Field
from sqlalchemy import Connection, delete, insert, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.errors import ApiError, bad_request, conflict, not_found
from canopy.api.http import ctx, empty_response, json_response, read_object, route
from canopy.api.identity import grants
from canopy.api.identity.admin import _Body, _parse
from canopy.api.identity.passwords import hash_password
from canopy.api.token_state import record_events
from canopy.auth.revocation import RevocationEvent
from canopy.auth.tokens import Scope
from canopy.clock import isotime
from canopy.db import tables_global as g


class AppCredCreate(_Body):
    name: str = Field(min_length=1, max_length=255)
    description: str = ""
    secret: str | None = Field(default=None, min_length=1, max_length=4096)
    expires_at: str | None = None
    roles: list[dict[str, str]] | None = None
    unrestricted: bool = False


def _view(base: str, c: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    view = {"id": c["id"], "name": c["name"], "description": c["description"], "project_id": c["project_id"],
            "user_id": c["user_id"], "roles": c["roles"], "unrestricted": c["unrestricted"],
            "expires_at": isotime(c["expires_at"]), "access_rules": [],
            "links": {"self": f"{base}/users/{c['user_id']}/application_credentials/{c['id']}"}}
    if secret is not None:
        view["secret"] = secret
    return view


def _base(request: Request) -> str:
    return request.app.state.cloud.settings.api.public_url.rstrip("/") + "/identity/v3"


async def create_app_cred(request: Request) -> Response:
    """POST: a credential on the caller's project with (a subset of) the caller's roles there."""
    c, cloud = ctx(request), request.app.state.cloud
    user_id = request.path_params["user_id"]
    if c.user_id != user_id or not c.project_id:
        raise ApiError(403, "An application credential is made by its user, with a project-scoped token.")
    body = _parse(AppCredCreate, await read_object(request, "application_credential"))
    expires = None
    if body.expires_at:
        try:
            expires = dt.datetime.fromisoformat(body.expires_at.replace("Z", "+00:00")).replace(tzinfo=None)
        except ValueError:
            raise bad_request(f"Invalid input for field 'expires_at': {body.expires_at!r} is not a date-time") from None
    secret = body.secret or secrets.token_urlsafe(48)
    secret_hash = await asyncio.to_thread(hash_password, secret)
    project_id = c.project_id

    def save(conn: Connection) -> dict[str, Any]:
        held = grants.roles_on(conn, user_id, Scope(project_id=project_id))
        wanted = body.roles or held
        names = {r.get("name") or next((h["name"] for h in held if h["id"] == r.get("id")), "") for r in wanted}
        roles = [r for r in held if r["name"] in names]
        if len(roles) != len(names):
            raise not_found(f"Could not find role: {sorted(names - {r['name'] for r in roles})}.")
        t = g.application_credentials
        if conn.execute(select(t.c.id).where(t.c.user_id == user_id, t.c.name == body.name)).first():
            raise conflict(f"Conflict occurred attempting to store application_credential - Duplicate entry "
                           f"found with name {body.name}.")
        row = {"id": secrets.token_hex(16), "user_id": user_id, "project_id": project_id, "name": body.name,
               "description": body.description, "secret_hash": secret_hash, "roles": roles,
               "unrestricted": body.unrestricted, "expires_at": expires, "created_at": cloud.clock.now()}
        conn.execute(insert(t).values(**row))
        return row

    row = await cloud.dbs.global_db.write(save)
    return json_response({"application_credential": _view(_base(request), row, secret)}, status=201)


async def list_app_creds(request: Request) -> Response:
    """GET: the user's credentials (never their secrets)."""
    user_id = request.path_params["user_id"]
    t = g.application_credentials
    rows = await request.app.state.cloud.dbs.global_db.read(
        lambda conn: [dict(r) for r in conn.execute(select(t).where(t.c.user_id == user_id)
                                                     .order_by(t.c.name)).mappings()])
    base = _base(request)
    return json_response({"application_credentials": [_view(base, r) for r in rows],
                          "links": {"self": f"{base}/users/{user_id}/application_credentials", "previous": None,
                                    "next": None}})


async def get_app_cred(request: Request) -> Response:
    """GET one credential."""
    pp, t = request.path_params, g.application_credentials
    row = await request.app.state.cloud.dbs.global_db.read(
        lambda conn: conn.execute(select(t).where(t.c.id == pp["cred_id"], t.c.user_id == pp["user_id"]))
        .mappings().first())
    if row is None:
        raise not_found(f"Could not find application credential: {pp['cred_id']}.")
    return json_response({"application_credential": _view(_base(request), dict(row))})


async def delete_app_cred(request: Request) -> Response:
    """DELETE: the credential and every token issued from it."""
    pp, t, cloud = request.path_params, g.application_credentials, request.app.state.cloud
    event = RevocationEvent(0.0, app_cred_id=pp["cred_id"])

    def drop(conn: Connection) -> bool:
        gone = conn.execute(delete(t).where(t.c.id == pp["cred_id"], t.c.user_id == pp["user_id"])).rowcount > 0
        if gone:
            nonlocal event
            event = RevocationEvent(time.time(), app_cred_id=pp["cred_id"])
            record_events(conn, [event], cloud.settings.auth.token_ttl_s + 60)
        return gone

    if not await cloud.dbs.global_db.write(drop):
        raise not_found(f"Could not find application credential: {pp['cred_id']}.")
    request.app.state.guard.note([event])
    return empty_response(204)


ROUTES: list[BaseRoute] = [
    route("/v3/users/{user_id}/application_credentials", list_app_creds, ["GET"], "identity:list_app_creds"),
    route("/v3/users/{user_id}/application_credentials", create_app_cred, ["POST"], "identity:create_app_cred"),
    route("/v3/users/{user_id}/application_credentials/{cred_id}", get_app_cred, ["GET"], "identity:get_app_cred"),
    route("/v3/users/{user_id}/application_credentials/{cred_id}", delete_app_cred, ["DELETE"],
          "identity:delete_app_cred"),
]
