"""Who is asking for a token: the password, token and application_credential methods, and the scope
they ask for, checked against the current state of users, projects, domains and grants."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, update

from canopy.api.errors import ApiError, bad_request
from canopy.api.identity import grants, store
from canopy.api.identity.passwords import check_password, hash_password, needs_rehash
from canopy.api.token_state import TokenGuard
from canopy.auth.tokens import InvalidToken, Scope, TokenData
from canopy.db import tables_global as g
from canopy.runtime import Cloud

UNAUTHORIZED = "The request you have made requires authentication."


def unauthorized(message: str = UNAUTHORIZED) -> ApiError:
    return ApiError(401, message)


@dataclass
class Identity:
    """The user a request proved to be, and how."""

    user: dict[str, Any]
    method: str
    parent: TokenData | None = None
    app_cred: dict[str, Any] | None = None
    login_key: str = ""


@dataclass
class Scoped:
    """The scope a token will carry, with the records it names and the roles on it."""

    scope: Scope = field(default_factory=Scope)
    project: dict[str, Any] | None = None
    domain: dict[str, Any] | None = None
    roles: list[dict[str, str]] = field(default_factory=list)


def _user_ref(conn: Connection, ref: dict[str, Any]) -> dict[str, Any] | None:
    if ref.get("id"):
        return store.find_user(conn, user_id=ref["id"])
    domain = store.find_domain(conn, ref.get("domain"))
    if domain is None or not ref.get("name"):
        return None
    return store.find_user(conn, name=ref["name"], domain_id=domain["id"])


def login_key(ref: dict[str, Any]) -> str:
    """The throttling key for a user reference: by id, or by domain and name."""
    dom = ref.get("domain") or {}
    return ref.get("id") or f"{dom.get('id') or dom.get('name') or 'default'}/{ref.get('name', '')}"


def user_usable(conn: Connection, user: dict[str, Any] | None) -> bool:
    """An existing, enabled user in an enabled domain."""
    if user is None or not user["enabled"]:
        return False
    domain = store.find_domain(conn, {"id": user["domain_id"]})
    return domain is not None and bool(domain["enabled"])


async def by_password(cloud: Cloud, identity: dict[str, Any]) -> Identity:
    """The user whose password matches; an unknown user costs the same hash as a wrong password."""
    ref = identity["password"].get("user") or {}
    if not (ref.get("id") or ref.get("name")):
        raise bad_request("Invalid input for field 'identity/password/user': an id or a name is required")
    user = await cloud.dbs.global_db.read_fresh(_user_ref, ref)
    stored = user["password_hash"] if user else None
    ok = await asyncio.to_thread(check_password, str(ref.get("password") or ""), stored)
    usable = user is not None and await cloud.dbs.global_db.read_fresh(user_usable, user)
    if not ok or not usable or user is None:
        raise unauthorized()
    if stored and needs_rehash(stored):
        new_hash = await asyncio.to_thread(hash_password, str(ref.get("password")))
        await cloud.dbs.global_db.write(_rehash, user["id"], stored, new_hash)
    return Identity(user, "password", login_key=login_key(ref))


def _rehash(conn: Connection, user_id: str, old: str, new: str) -> None:
    # Only if the hash is still the one we verified (a concurrent password change wins).
    conn.execute(update(g.users).where(g.users.c.id == user_id, g.users.c.password_hash == old)
                 .values(password_hash=new))


async def by_token(cloud: Cloud, guard: TokenGuard, identity: dict[str, Any]) -> Identity:
    """The user of a valid token; a disabled or deleted user, or a revoked token, cannot rescope."""
    try:
        parent = await guard.check(str(identity["token"].get("id") or ""))
    except InvalidToken:
        raise unauthorized() from None
    if parent.app_cred_id:
        raise ApiError(403, "A token created from an application credential cannot be rescoped.")
    user = await cloud.dbs.global_db.read_fresh(lambda conn: store.find_user(conn, user_id=parent.user_id))
    if not await cloud.dbs.global_db.read_fresh(user_usable, user) or user is None:
        raise unauthorized()
    return Identity(user, "token", parent=parent)


def _find_app_cred(conn: Connection, ref: dict[str, Any]) -> dict[str, Any] | None:
    t = g.application_credentials
    if ref.get("id"):
        row = conn.execute(select(t).where(t.c.id == ref["id"])).mappings().first()
    else:
        user = _user_ref(conn, ref.get("user") or {})
        if user is None:
            return None
        row = conn.execute(select(t).where(t.c.user_id == user["id"], t.c.name == ref.get("name"))).mappings().first()
    return dict(row) if row else None


async def by_app_cred(cloud: Cloud, identity: dict[str, Any]) -> Identity:
    """The user of an application credential whose secret matches and which has not expired."""
    ref = identity["application_credential"]
    if not ref.get("id") and not (ref.get("name") and ref.get("user")):
        raise bad_request("Invalid input for field 'identity/application_credential': an id, or a name and a "
                          "user, is required")
    db = cloud.dbs.global_db
    cred = await db.read_fresh(_find_app_cred, ref)
    ok = await asyncio.to_thread(check_password, str(ref.get("secret") or ""), cred["secret_hash"] if cred else None)
    if cred is None or not ok:
        raise unauthorized()
    if cred["expires_at"] is not None and cred["expires_at"] <= cloud.clock.now():
        raise unauthorized("The application credential has expired.")
    user = await db.read_fresh(lambda conn: store.find_user(conn, user_id=cred["user_id"]))
    if not await db.read_fresh(user_usable, user) or user is None:
        raise unauthorized()
    return Identity(user, "application_credential", app_cred=cred)


def resolve_scope(conn: Connection, who: Identity, scope: Any) -> Scoped:
    """The scope asked for (or the credential's, or the user's default project), checked and with roles."""
    if who.app_cred is not None:
        if isinstance(scope, dict) and scope and (scope.get("project") or {}).get("id") not in (
                None, who.app_cred["project_id"]):
            raise unauthorized("An application credential is scoped to its own project only.")
        scope = {"project": {"id": who.app_cred["project_id"]}}
    out = Scoped()
    if isinstance(scope, dict) and scope.get("project"):
        out.project = _scoped_project(conn, scope["project"])
        out.scope = Scope(project_id=out.project["id"])
    elif isinstance(scope, dict) and scope.get("domain"):
        out.domain = store.find_domain(conn, scope["domain"])
        if out.domain is None or not out.domain["enabled"]:
            raise unauthorized(f"Could not find domain: {_ref_name(scope['domain'])}.")
        out.scope = Scope(domain_id=out.domain["id"])
    elif isinstance(scope, dict) and scope.get("system"):
        out.scope = Scope(system=True)
    elif not scope and who.method == "password" and who.user.get("default_project_id"):
        project = store.find_project(conn, project_id=who.user["default_project_id"])
        if project is not None and project["enabled"] and grants.roles_on(conn, who.user["id"],
                                                                           Scope(project["id"])):
            out.project, out.scope = project, Scope(project_id=project["id"])
    out.roles = grants.roles_on(conn, who.user["id"], out.scope)
    if who.app_cred is not None and not who.app_cred["unrestricted"]:
        allowed = {r["name"] for r in who.app_cred["roles"]}
        out.roles = [r for r in out.roles if r["name"] in allowed]
    if out.scope.kind != "unscoped" and not out.roles:
        raise unauthorized(f"User {who.user['id']} has no access to {out.scope.kind} "
                           f"{out.scope.project_id or out.scope.domain_id or 'all'}")
    return out


def _ref_name(ref: dict[str, Any]) -> str:
    return str(ref.get("id") or ref.get("name"))


def _scoped_project(conn: Connection, ref: dict[str, Any]) -> dict[str, Any]:
    if ref.get("id"):
        project = store.find_project(conn, project_id=ref["id"])
    else:
        domain = store.find_domain(conn, ref.get("domain"))
        project = store.find_project(conn, name=ref.get("name"), domain_id=domain["id"]) if domain else None
    if project is None or not project["enabled"]:
        raise unauthorized(f"Could not find project: {_ref_name(ref)}.")
    domain = store.find_domain(conn, {"id": project["domain_id"]})
    if domain is None or not domain["enabled"]:
        raise unauthorized(f"Could not find project: {_ref_name(ref)}.")
    return project


def app_cred_expiry(cred: dict[str, Any] | None) -> float | None:
    """The end of an application credential's life as a timestamp, if it has one."""
    if cred is None or cred["expires_at"] is None:
        return None
    return float(cred["expires_at"].replace(tzinfo=dt.UTC).timestamp())
