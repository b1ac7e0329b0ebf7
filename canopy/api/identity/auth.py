"""Identity v3 version discovery and tokens: `POST/GET/HEAD/DELETE /v3/auth/tokens`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError, bad_request
from canopy.api.http import empty_response, json_response, read_object
from canopy.api.identity import store
from canopy.api.identity.catalog import build_catalog
from canopy.api.identity.passwords import check_password
from canopy.auth.tokens import InvalidToken, TokenData
from canopy.runtime import Cloud

UPDATED = "2024-01-01T00:00:00Z"
_revoked_audit_ids: set[str] = set()


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


async def versions(request: Request) -> Response:
    base = cloud_of(request).settings.api.public_url.rstrip("/")
    return json_response({"versions": {"values": [version_document(base)]}}, status=300)


async def version_v3(request: Request) -> Response:
    base = cloud_of(request).settings.api.public_url.rstrip("/")
    return json_response({"version": version_document(base)})


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _authenticate(conn: Connection, auth: dict[str, Any], tokens: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The user named by the request's identity section, checked; and the project its scope names."""
    identity = auth.get("identity")
    if not isinstance(identity, dict) or not isinstance(identity.get("methods"), list):
        raise bad_request("Invalid input for field 'identity': 'methods' is a required property")
    methods = identity["methods"]
    if "password" in methods:
        user_ref = (identity.get("password") or {}).get("user") or {}
        if not isinstance(user_ref, dict) or not (user_ref.get("id") or user_ref.get("name")):
            raise bad_request("Invalid input for field 'identity/password/user': an id or a name is required")
        if not store.domain_matches(user_ref.get("domain")):
            raise ApiError(401, "The request you have made requires authentication.")
        user = store.find_user(conn, user_id=user_ref.get("id"), name=user_ref.get("name"))
        if user is None or not user["enabled"] or not check_password(str(user_ref.get("password", "")),
                                                                      user["password_hash"]):
            raise ApiError(401, "The request you have made requires authentication.")
    elif "token" in methods:
        try:
            data = tokens.validate(str((identity.get("token") or {}).get("id", "")))
        except InvalidToken:
            raise ApiError(401, "The request you have made requires authentication.") from None
        user = store.find_user(conn, user_id=data.user_id)
        if user is None:
            raise ApiError(401, "The request you have made requires authentication.")
    else:
        raise ApiError(401, f"Unsupported authentication methods: {methods}")
    scope = auth.get("scope")
    project = None
    if isinstance(scope, dict) and "project" in scope:
        ref = scope["project"] or {}
        if not store.domain_matches(ref.get("domain")):
            raise ApiError(401, "The request you have made requires authentication.")
        project = store.find_project(conn, project_id=ref.get("id"), name=ref.get("name"))
        if project is None:
            raise ApiError(401, f"Could not find project: {ref.get('id') or ref.get('name')}.")
    elif user.get("default_project_id"):
        project = store.find_project(conn, project_id=user["default_project_id"])
    return user, project


async def issue_token(request: Request) -> Response:
    cloud = cloud_of(request)
    auth = (await read_object(request, "auth"))

    def load(conn: Connection) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, str]]]:
        user, project = _authenticate(conn, auth, cloud.tokens)
        roles = store.roles_on_project(conn, user["id"], project["id"]) if project else []
        return user, project, roles

    user, project, roles = await cloud.dbs.global_db.read_fresh(load)
    if project is not None and not roles:
        raise ApiError(401, f"User {user['id']} has no access to project {project['id']}")
    methods = tuple(m for m in auth["identity"]["methods"] if m in ("password", "token"))
    token, data = cloud.tokens.issue(user["id"], project["id"] if project else "",
                                     tuple(r["name"] for r in roles), methods)
    body = _token_body(cloud, data, user, project, roles)
    return json_response(body, status=201, headers={"X-Subject-Token": token})


def _token_body(cloud: Cloud, data: TokenData, user: dict[str, Any], project: dict[str, Any] | None,
                roles: list[dict[str, str]]) -> dict[str, Any]:
    token: dict[str, Any] = {
        "methods": list(data.methods),
        "user": {"id": user["id"], "name": user["name"], "domain": store.DEFAULT_DOMAIN,
                 "password_expires_at": None},
        "audit_ids": [data.audit_id],
        "issued_at": _iso(data.issued_at),
        "expires_at": _iso(data.expires_at),
    }
    if project is not None:
        token["project"] = {"id": project["id"], "name": project["name"], "domain": store.DEFAULT_DOMAIN}
        token["is_domain"] = False
        token["roles"] = roles
        token["catalog"] = build_catalog(cloud.settings.api.public_url, cloud.settings.api.region)
    return {"token": token}


async def check_token(request: Request) -> Response:
    cloud = cloud_of(request)
    subject = request.headers.get("x-subject-token", "")
    try:
        data = cloud.tokens.validate(subject)
    except InvalidToken:
        raise ApiError(404, "Could not find token.") from None
    if data.audit_id in _revoked_audit_ids:
        raise ApiError(404, "Could not find token.")
    if request.method == "HEAD":
        return empty_response(200)

    def load(conn: Connection) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[dict[str, str]]]:
        user = store.find_user(conn, user_id=data.user_id)
        project = store.find_project(conn, project_id=data.project_id) if data.project_id else None
        roles = store.roles_on_project(conn, data.user_id, data.project_id) if project else []
        return user, project, roles

    user, project, roles = await cloud.dbs.global_db.read(load)
    if user is None:
        raise ApiError(404, "Could not find token.")
    return json_response(_token_body(cloud, data, user, project, roles), headers={"X-Subject-Token": subject})


async def revoke_token(request: Request) -> Response:
    cloud = cloud_of(request)
    try:
        data = cloud.tokens.validate(request.headers.get("x-subject-token", ""))
    except InvalidToken:
        raise ApiError(404, "Could not find token.") from None
    # Revocation is remembered by this api process only; tokens are short-lived and signed.
    _revoked_audit_ids.add(data.audit_id)
    return empty_response(204)
