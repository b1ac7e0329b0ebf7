"""Identity data: projects, users, roles and role assignments (global tables)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, select

from canopy.db import tables_global as g

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}


def new_id() -> str:
    return uuid.uuid4().hex


def domain_matches(ref: dict[str, Any] | None) -> bool:
    """Only the `Default` domain exists; accept it by id or by name."""
    if not ref:
        return True
    return ref.get("id") == "default" or ref.get("name") == "Default"


def find_user(conn: Connection, *, user_id: str | None = None, name: str | None = None) -> dict[str, Any] | None:
    q = select(g.users)
    q = q.where(g.users.c.id == user_id) if user_id else q.where(g.users.c.name == name)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def find_project(conn: Connection, *, project_id: str | None = None, name: str | None = None) -> dict[str, Any] | None:
    q = select(g.projects)
    q = q.where(g.projects.c.id == project_id) if project_id else q.where(g.projects.c.name == name)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def roles_on_project(conn: Connection, user_id: str, project_id: str) -> list[dict[str, str]]:
    """The roles a user holds on a project; `admin` implies `member` and `reader`, `member` implies `reader`."""
    rows = conn.execute(
        select(g.roles.c.id, g.roles.c.name)
        .join(g.role_assignments, g.role_assignments.c.role_id == g.roles.c.id)
        .where(g.role_assignments.c.user_id == user_id, g.role_assignments.c.project_id == project_id)
    ).all()
    names = {r.name for r in rows}
    implied = {"admin": ("member", "reader"), "member": ("reader",)}
    for name in list(names):
        names.update(implied.get(name, ()))
    if names - {r.name for r in rows}:
        extra = conn.execute(select(g.roles.c.id, g.roles.c.name).where(g.roles.c.name.in_(names))).all()
        rows = list({r.name: r for r in list(rows) + list(extra)}.values())
    return [{"id": r.id, "name": r.name} for r in rows]
