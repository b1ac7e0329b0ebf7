"""Identity v3 version discovery and tokens: `POST/GET/HEAD/DELETE /v3/auth/tokens`."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError, forbidden
from canopy.api.http import ctx, empty_response, json_response, read_object
from canopy.api.identity import authenticate as authn
from canopy.api.identity import store
from canopy.api.identity.auth_body import check_auth_body
from canopy.api.identity.catalog import load_catalog
from canopy.api.token_state import TokenGuard
from canopy.auth.revocation import RevocationEvent
from canopy.auth.throttle import LoginThrottle
from canopy.auth.tokens import InvalidToken, TokenData, TokenRequest
from canopy.runtime import Cloud

UPDATED = "2024-01-01T00:00:00Z"
METHODS = ("password", "token", "application_credential")


def version_document(base: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


def cloud_of(request: Request) -> Cloud:
    return request.app.state.cloud


def guard_of(request: Request) -> TokenGuard:
    return request.app.state.guard


def throttle_of(request: Request) -> LoginThrottle:
    """The api process's failed-login counts (created on first use)."""
    state = request.app.state
    if getattr(state, "login_throttle", None) is None:
        cloud = cloud_of(request)
        a = cloud.settings.auth
        state.login_throttle = LoginThrottle(a.login_failures_per_user, a.login_failures_per_source,
                                             a.login_failure_window_s, cloud.clock.monotonic)
    return state.login_throttle


async def versions(request: Request) -> Response:
    base = cloud_of(request).settings.api.public_url.rstrip("/")
    return json_response({"versions": {"values": [version_document(base)]}}, status=300)


async def version_v3(request: Request) -> Response:
    base = cloud_of(request).settings.api.public_url.rstrip("/")
    return json_response({"version": version_document(base)})


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _identify(request: Request, identity: dict[str, Any]) -> authn.Identity:
    cloud, methods = cloud_of(request), identity["methods"]
    if "password" in methods:
        throttle = throttle_of(request)
        key = authn.login_key(identity["password"].get("user") or {})
        source = request.client.host if request.client else "-"
        wait = throttle.retry_after(key, source)
        if wait > 0:
            raise ApiError(429, "Too many failed logins; try again later.", retry_after=int(wait) + 1)
        try:
            who = await authn.by_password(cloud, identity)
        except ApiError as err:
            if err.status == 401:
                throttle.failed(key, source)
            raise
        throttle.succeeded(key)
        return who
    if "token" in methods:
        return await authn.by_token(cloud, guard_of(request), identity)
    if "application_credential" in methods:
        return await authn.by_app_cred(cloud, identity)
    raise authn.unauthorized(f"Unsupported authentication methods: {methods}")


async def issue_token(request: Request) -> Response:
    cloud = cloud_of(request)
    auth = await read_object(request, "auth")
    check_auth_body(auth)
    who = await _identify(request, auth["identity"])
    scoped = await cloud.dbs.global_db.read_fresh(authn.resolve_scope, who, auth.get("scope"))
    domains = tuple(sorted({who.user["domain_id"], *(p["domain_id"] for p in [scoped.project] if p)}))
    methods = tuple(m for m in auth["identity"]["methods"] if m in METHODS)
    req = TokenRequest(who.user["id"], scoped.scope, tuple(r["name"] for r in scoped.roles), methods, domains,
                       parent=who.parent, app_cred_id=who.app_cred["id"] if who.app_cred else "",
                       expires_at=authn.app_cred_expiry(who.app_cred))
    token, data = cloud.tokens.issue_for(req)
    body = await _token_body(cloud, data, who.user, scoped)
    return json_response(body, status=201, headers={"X-Subject-Token": token})


async def _token_body(cloud: Cloud, data: TokenData, user: dict[str, Any], scoped: authn.Scoped) -> dict[str, Any]:
    user_domain = {"id": user["domain_id"], "name": await _domain_name(cloud, user["domain_id"])}
    token: dict[str, Any] = {
        "methods": list(data.methods),
        "user": {"id": user["id"], "name": user["name"], "domain": user_domain, "password_expires_at": None},
        "audit_ids": list(data.audit_chain),
        "issued_at": iso(data.issued_at),
        "expires_at": iso(data.expires_at),
    }
    if scoped.project is not None:
        p = scoped.project
        token["project"] = {"id": p["id"], "name": p["name"],
                            "domain": {"id": p["domain_id"], "name": await _domain_name(cloud, p["domain_id"])}}
        token["is_domain"] = False
    elif scoped.domain is not None:
        token["domain"] = {"id": scoped.domain["id"], "name": scoped.domain["name"]}
    elif data.system:
        token["system"] = {"all": True}
    if data.app_cred_id:
        token["application_credential"] = {"id": data.app_cred_id, "restricted": True}
    if scoped.scope.kind != "unscoped":
        token["roles"] = scoped.roles
        token["catalog"] = await cloud.dbs.global_db.read(load_catalog, cloud.settings.api.public_url)
    return {"token": token}


async def _domain_name(cloud: Cloud, domain_id: str) -> str:
    if domain_id == "default":
        return "Default"
    found = await cloud.dbs.global_db.read(lambda conn: store.find_domain(conn, {"id": domain_id}))
    return str(found["name"]) if found else domain_id


async def _subject(request: Request) -> TokenData:
    """The token named by X-Subject-Token, if it stands and the caller owns it or is an admin."""
    guard = guard_of(request)
    try:
        data = await guard.check(request.headers.get("x-subject-token", ""))
    except InvalidToken:
        raise ApiError(404, "Could not find token.") from None
    caller = ctx(request)
    if caller.user_id != data.user_id and not caller.is_admin:
        raise forbidden("You are not authorized to perform the requested action: identity:validate_token.")
    return data


async def check_token(request: Request) -> Response:
    cloud = cloud_of(request)
    data = await _subject(request)
    if request.method == "HEAD":
        return empty_response(200)

    def load(conn: Connection) -> tuple[dict[str, Any] | None, authn.Scoped]:
        user = store.find_user(conn, user_id=data.user_id)
        scoped = authn.Scoped(scope=data.scope)
        if data.project_id:
            scoped.project = store.find_project(conn, project_id=data.project_id)
        if data.domain_id:
            scoped.domain = store.find_domain(conn, {"id": data.domain_id})
        if user is not None:
            scoped.roles = [r for r in authn.grants.roles_on(conn, user["id"], data.scope) if r["name"] in data.roles]
        return user, scoped

    user, scoped = await cloud.dbs.global_db.read(load)
    if user is None:
        raise ApiError(404, "Could not find token.")
    return json_response(await _token_body(cloud, data, user, scoped),
                         headers={"X-Subject-Token": request.headers["x-subject-token"]})


async def revoke_token(request: Request) -> Response:
    """DELETE /v3/auth/tokens: the token and every token made from it, on every api process."""
    data = await _subject(request)
    await guard_of(request).revoke([RevocationEvent(time.time(), audit_id=data.audit_id)])
    return empty_response(204)

