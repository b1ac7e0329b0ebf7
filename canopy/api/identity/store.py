"""Identity data: projects, users, roles and role assignments (global tables)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from canopy.api.identity import grants, tags
from canopy.auth.tokens import Scope
from canopy.db import tables_global as g

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}
IMPLIED_ROLES = grants.IMPLIED_ROLES


class NameTaken(Exception):
    """A rename collides with an existing name."""


def new_id() -> str:
    return uuid.uuid4().hex


def find_domain(conn: Connection, ref: dict[str, Any] | None) -> dict[str, Any] | None:
    """The domain a `{"id"}` or `{"name"}` reference names; no reference means `default`."""
    ref = ref or {"id": "default"}
    q = select(g.domains)
    q = q.where(g.domains.c.id == ref["id"]) if ref.get("id") else q.where(g.domains.c.name == ref.get("name"))
    row = conn.execute(q).mappings().first()
    if row is None and (ref.get("id") == "default" or ref.get("name") == "Default"):
        return {**DEFAULT_DOMAIN, "enabled": True, "description": "The default domain"}  # before the seed ran
    return dict(row) if row else None


def domain_matches(ref: dict[str, Any] | None) -> bool:
    """Whether a domain reference names `default` (or names none)."""
    if not ref:
        return True
    return ref.get("id") == "default" or ref.get("name") == "Default"


def find_user(conn: Connection, *, user_id: str | None = None, name: str | None = None,
              domain_id: str = "default") -> dict[str, Any] | None:
    q = select(g.users)
    q = q.where(g.users.c.id == user_id) if user_id else q.where(g.users.c.name == name,
                                                                   g.users.c.domain_id == domain_id)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def find_project(conn: Connection, *, project_id: str | None = None, name: str | None = None,
                 domain_id: str = "default") -> dict[str, Any] | None:
    q = select(g.projects)
    q = q.where(g.projects.c.id == project_id) if project_id else q.where(g.projects.c.name == name,
                                                                            g.projects.c.domain_id == domain_id)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def roles_on_project(conn: Connection, user_id: str, project_id: str) -> list[dict[str, str]]:
    """The roles a user holds on a project (directly or through a group), with the implied ones."""
    return grants.roles_on(conn, user_id, Scope(project_id=project_id))


# --- administration: plain functions of a Connection, used by the admin API -------------------------------


def _rows(conn: Connection, q: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(q).mappings()]


def list_projects(conn: Connection, *, name: str | None = None, project_id: str | None = None,
                  enabled: bool | None = None, domain_id: str | None = None) -> list[dict[str, Any]]:
    """Projects, optionally filtered by name, id, enabled or domain, ordered by name."""
    q = select(g.projects).order_by(g.projects.c.name)
    if domain_id is not None:
        q = q.where(g.projects.c.domain_id == domain_id)
    if name is not None:
        q = q.where(g.projects.c.name == name)
    if project_id is not None:
        q = q.where(g.projects.c.id == project_id)
    if enabled is not None:
        q = q.where(g.projects.c.enabled == enabled)
    return _rows(conn, q)


def create_project(conn: Connection, values: dict[str, Any]) -> dict[str, Any] | None:
    """Insert a project; None when its name is taken."""
    if find_project(conn, name=values["name"], domain_id=values.get("domain_id") or "default") is not None:
        return None
    row = {"id": values.get("id") or new_id(), "domain_id": "default", **values}
    project_tags = row.pop("tags", None)
    conn.execute(insert(g.projects).values(**row))
    if project_tags:
        tags.set_tags(conn, row["id"], project_tags)
    return project_with_tags(conn, row["id"])


def update_project(conn: Connection, project_id: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """Apply `values` to a project; raises NameTaken on a duplicate name, None when it does not exist."""
    found = find_project(conn, project_id=project_id)
    if found is None:
        return None
    if "name" in values:
        other = find_project(conn, name=values["name"], domain_id=found["domain_id"])
        if other is not None and other["id"] != project_id:
            raise NameTaken(values["name"])
    values = dict(values)
    if "tags" in values:
        tags.set_tags(conn, project_id, values.pop("tags"))
    if values:
        conn.execute(update(g.projects).where(g.projects.c.id == project_id).values(**values))
    return project_with_tags(conn, project_id)


def project_with_tags(conn: Connection, project_id: str) -> dict[str, Any] | None:
    """A project with its `tags`."""
    found = find_project(conn, project_id=project_id)
    return tags.with_tags(conn, [found])[0] if found else None


def delete_project(conn: Connection, project_id: str) -> bool:
    """Delete a project and its role assignments; False when it does not exist."""
    conn.execute(delete(g.role_assignments).where(g.role_assignments.c.project_id == project_id))
    grants.drop_target(conn, "project", project_id)
    conn.execute(delete(g.project_tags).where(g.project_tags.c.project_id == project_id))
    return conn.execute(delete(g.projects).where(g.projects.c.id == project_id)).rowcount > 0


def list_users(conn: Connection, *, name: str | None = None, enabled: bool | None = None,
               domain_id: str | None = None) -> list[dict[str, Any]]:
    """Users, optionally filtered by name, enabled or domain, ordered by name."""
    q = select(g.users).order_by(g.users.c.name)
    if domain_id is not None:
        q = q.where(g.users.c.domain_id == domain_id)
    if name is not None:
        q = q.where(g.users.c.name == name)
    if enabled is not None:
        q = q.where(g.users.c.enabled == enabled)
    return _rows(conn, q)


def create_user(conn: Connection, values: dict[str, Any]) -> dict[str, Any] | None:
    """Insert a user (`values` carries `password_hash`); None when its name is taken."""
    if find_user(conn, name=values["name"], domain_id=values.get("domain_id") or "default") is not None:
        return None
    row = {"id": values.get("id") or new_id(), "domain_id": "default", **values}
    conn.execute(insert(g.users).values(**row))
    return find_user(conn, user_id=row["id"])


def update_user(conn: Connection, user_id: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """Apply `values` to a user; raises NameTaken on a duplicate name, None when it does not exist."""
    found = find_user(conn, user_id=user_id)
    if found is None:
        return None
    if "name" in values:
        other = find_user(conn, name=values["name"], domain_id=found["domain_id"])
        if other is not None and other["id"] != user_id:
            raise NameTaken(values["name"])
    if values:
        conn.execute(update(g.users).where(g.users.c.id == user_id).values(**values))
    return find_user(conn, user_id=user_id)


def delete_user(conn: Connection, user_id: str) -> bool:
    """Delete a user and its role assignments; False when it does not exist."""
    conn.execute(delete(g.role_assignments).where(g.role_assignments.c.user_id == user_id))
    grants.drop_actor(conn, "user", user_id)
    conn.execute(delete(g.group_members).where(g.group_members.c.user_id == user_id))
    return conn.execute(delete(g.users).where(g.users.c.id == user_id)).rowcount > 0


def user_projects(conn: Connection, user_id: str) -> list[dict[str, Any]] | None:
    """The projects a user holds any role on; None when the user does not exist."""
    if find_user(conn, user_id=user_id) is None:
        return None
    ids = {a["project_id"] for a in list_assignments(conn, user_id=user_id)}
    return [p for p in list_projects(conn) if p["id"] in ids]


def find_role(conn: Connection, *, role_id: str | None = None, name: str | None = None) -> dict[str, Any] | None:
    q = select(g.roles)
    q = q.where(g.roles.c.id == role_id) if role_id else q.where(g.roles.c.name == name)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def list_roles(conn: Connection, *, name: str | None = None) -> list[dict[str, Any]]:
    """Roles, optionally filtered by name, ordered by name."""
    q = select(g.roles).order_by(g.roles.c.name)
    if name is not None:
        q = q.where(g.roles.c.name == name)
    return _rows(conn, q)


def create_role(conn: Connection, name: str) -> dict[str, Any] | None:
    """Insert a role; None when its name is taken."""
    if find_role(conn, name=name) is not None:
        return None
    role_id = new_id()
    conn.execute(insert(g.roles).values(id=role_id, name=name))
    return {"id": role_id, "name": name}


def delete_role(conn: Connection, role_id: str) -> bool:
    """Delete a role and every assignment of it; False when it does not exist."""
    conn.execute(delete(g.role_assignments).where(g.role_assignments.c.role_id == role_id))
    return conn.execute(delete(g.roles).where(g.roles.c.id == role_id)).rowcount > 0


def _assignment_filter(user_id: str | None, project_id: str | None, role_id: str | None) -> list[Any]:
    ra = g.role_assignments.c
    wanted = ((ra.user_id, user_id), (ra.project_id, project_id), (ra.role_id, role_id))
    return [col == value for col, value in wanted if value is not None]


def has_assignment(conn: Connection, user_id: str, project_id: str, role_id: str) -> bool:
    q = select(g.role_assignments.c.role_id).where(*_assignment_filter(user_id, project_id, role_id))
    return conn.execute(q).first() is not None


def grant_role(conn: Connection, user_id: str, project_id: str, role_id: str) -> None:
    """Assign a role to a user on a project (idempotent)."""
    if not has_assignment(conn, user_id, project_id, role_id):
        conn.execute(insert(g.role_assignments).values(user_id=user_id, project_id=project_id, role_id=role_id))


def revoke_role(conn: Connection, user_id: str, project_id: str, role_id: str) -> bool:
    """Remove an assignment; False when there was none."""
    q = delete(g.role_assignments).where(*_assignment_filter(user_id, project_id, role_id))
    return conn.execute(q).rowcount > 0


def direct_roles(conn: Connection, user_id: str, project_id: str) -> list[dict[str, Any]]:
    """The roles assigned to a user on a project, without the implied ones."""
    q = (select(g.roles).join(g.role_assignments, g.role_assignments.c.role_id == g.roles.c.id)
         .where(*_assignment_filter(user_id, project_id, None)).order_by(g.roles.c.name))
    return _rows(conn, q)


def list_assignments(conn: Connection, *, user_id: str | None = None, project_id: str | None = None,
                     role_id: str | None = None) -> list[dict[str, Any]]:
    """Assignments with the names of their user, project and role, ordered by user, project, role."""
    ra, u, p, r = g.role_assignments, g.users, g.projects, g.roles
    q = (select(ra.c.user_id, ra.c.project_id, ra.c.role_id, u.c.name.label("user_name"),
                p.c.name.label("project_name"), r.c.name.label("role_name"))
         .join(u, u.c.id == ra.c.user_id).join(p, p.c.id == ra.c.project_id).join(r, r.c.id == ra.c.role_id)
         .where(*_assignment_filter(user_id, project_id, role_id))
         .order_by(u.c.name, p.c.name, r.c.name))
    return _rows(conn, q)


def missing_party(conn: Connection, project_id: str, user_id: str, role_id: str | None) -> tuple[str, str] | None:
    """The first of project, user and role (when given) that does not exist, as (kind, id)."""
    if find_project(conn, project_id=project_id) is None:
        return "project", project_id
    if find_user(conn, user_id=user_id) is None:
        return "user", user_id
    if role_id is not None and find_role(conn, role_id=role_id) is None:
        return "role", role_id
    return None


def effective_assignments(conn: Connection, *, user_id: str | None = None, project_id: str | None = None,
                          role_id: str | None = None) -> list[tuple[dict[str, Any], str | None]]:
    """Assignments with the roles each implies added; each paired with the implying role's id (None if direct)."""
    by_name = {r["name"]: r for r in list_roles(conn)}
    out: list[tuple[dict[str, Any], str | None]] = []
    seen: set[tuple[str, str, str]] = set()
    for a in list_assignments(conn, user_id=user_id, project_id=project_id):
        for name in (a["role_name"], *IMPLIED_ROLES.get(a["role_name"], ())):
            role = by_name.get(name)
            if role is None or (role_id and role["id"] != role_id):
                continue
            key = (a["user_id"], a["project_id"], role["id"])
            if key not in seen:
                seen.add(key)
                prior = a["role_id"] if name != a["role_name"] else None
                out.append(({**a, "role_id": role["id"], "role_name": name}, prior))
    return out
