"""Identity v3 (Keystone-shaped): tokens, and projects, users, roles and their assignments."""

from __future__ import annotations

from canopy.api.app import Service
from canopy.api.http import route
from canopy.api.identity import (
    admin,
    app_creds,
    assignments,
    audit_routes,
    auth,
    catalog_admin,
    domains,
    group_admin,
    project_tags,
    scopes,
)

PUBLIC = {("GET", "/"), ("GET", "/v3"), ("GET", "/v3/"), ("POST", "/v3/auth/tokens")}


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC


def service() -> Service:
    routes = [
        route("/", auth.versions, ["GET"], "identity:versions"),
        route("/v3", auth.version_v3, ["GET"], "identity:version"),
        route("/v3/", auth.version_v3, ["GET"], "identity:version/"),
        route("/v3/auth/tokens", auth.issue_token, ["POST"], "identity:issue_token"),
        route("/v3/auth/tokens", auth.check_token, ["GET", "HEAD"], "identity:check_token"),
        route("/v3/auth/tokens", auth.revoke_token, ["DELETE"], "identity:revoke_token"),
        *admin.ROUTES,
        *assignments.ROUTES,
        *domains.ROUTES,
        *group_admin.ROUTES,
        *catalog_admin.ROUTES,
        *project_tags.ROUTES,
        *app_creds.ROUTES,
        *scopes.ROUTES,
        *audit_routes.ROUTES,
    ]
    return Service("identity", routes, is_public)
