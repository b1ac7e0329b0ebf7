"""Role grants beyond a user's on a project: groups, domains and the system (the `grants` table), and
the roles a user holds on any scope, through any of them, with the implied roles added."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select

from canopy.auth.tokens import Scope
from canopy.db import tables_global as g

# A role implies these others on the same target.
IMPLIED_ROLES: dict[str, tuple[str, ...]] = {"admin": ("member", "reader"), "member": ("reader",)}
SYSTEM = "all"


def user_groups(conn: Connection, user_id: str) -> list[str]:
    """The ids of the groups a user belongs to."""
    return list(conn.execute(select(g.group_members.c.group_id).where(g.group_members.c.user_id == user_id))
                .scalars())


def _target(scope: Scope) -> tuple[str, str]:
    if scope.project_id:
        return "project", scope.project_id
    if scope.domain_id:
        return "domain", scope.domain_id
    return "system", SYSTEM


def direct_role_rows(conn: Connection, user_id: str, scope: Scope) -> list[Any]:
    """The roles granted on the scope to the user or one of its groups (no implied roles)."""
    target_type, target_id = _target(scope)
    gr = g.grants.c
    actors = [(gr.actor_type == "user") & (gr.actor_id == user_id)]
    groups = user_groups(conn, user_id)
    if groups:
        actors.append((gr.actor_type == "group") & gr.actor_id.in_(groups))
    rows = list(conn.execute(select(g.roles.c.id, g.roles.c.name).join(g.grants, gr.role_id == g.roles.c.id)
                             .where(gr.target_type == target_type, gr.target_id == target_id, or_(*actors))))
    if target_type == "project":
        ra = g.role_assignments.c
        rows += list(conn.execute(select(g.roles.c.id, g.roles.c.name).join(g.role_assignments,
                                                                             ra.role_id == g.roles.c.id)
                                  .where(ra.user_id == user_id, ra.project_id == target_id)))
    return rows


def roles_on(conn: Connection, user_id: str, scope: Scope) -> list[dict[str, str]]:
    """The roles a user holds on a scope, directly or through groups, with the implied ones added."""
    if scope.kind == "unscoped":
        return []
    rows = direct_role_rows(conn, user_id, scope)
    names = {r.name for r in rows}
    for name in list(names):
        names.update(IMPLIED_ROLES.get(name, ()))
    if names - {r.name for r in rows}:
        rows += list(conn.execute(select(g.roles.c.id, g.roles.c.name).where(g.roles.c.name.in_(names))))
    return sorted(({"id": r.id, "name": r.name} for r in {r.name: r for r in rows}.values()),
                  key=lambda r: r["name"])


def grant(conn: Connection, actor: tuple[str, str], target: tuple[str, str], role_id: str) -> None:
    """Grant a role (idempotent)."""
    if not has_grant(conn, actor, target, role_id):
        conn.execute(insert(g.grants).values(actor_type=actor[0], actor_id=actor[1], target_type=target[0],
                                             target_id=target[1], role_id=role_id))


def _where(actor: tuple[str, str] | None, target: tuple[str, str] | None, role_id: str | None) -> list[Any]:
    gr = g.grants.c
    out: list[Any] = []
    if actor:
        out += [gr.actor_type == actor[0], gr.actor_id == actor[1]]
    if target:
        out += [gr.target_type == target[0], gr.target_id == target[1]]
    if role_id:
        out.append(gr.role_id == role_id)
    return out


def has_grant(conn: Connection, actor: tuple[str, str], target: tuple[str, str], role_id: str) -> bool:
    return conn.execute(select(g.grants.c.role_id).where(*_where(actor, target, role_id))).first() is not None


def revoke(conn: Connection, actor: tuple[str, str], target: tuple[str, str], role_id: str) -> bool:
    """Remove a grant; False when there was none."""
    return conn.execute(delete(g.grants).where(*_where(actor, target, role_id))).rowcount > 0


def list_grants(conn: Connection, actor: tuple[str, str] | None = None, target: tuple[str, str] | None = None,
                role_id: str | None = None) -> list[dict[str, Any]]:
    """Grants with their role's name, ordered."""
    gr = g.grants.c
    q = (select(gr.actor_type, gr.actor_id, gr.target_type, gr.target_id, gr.role_id,
                g.roles.c.name.label("role_name")).join(g.roles, g.roles.c.id == gr.role_id)
         .where(*_where(actor, target, role_id)).order_by(gr.actor_type, gr.actor_id, gr.target_type, gr.role_id))
    return [dict(r) for r in conn.execute(q).mappings()]


def drop_actor(conn: Connection, actor_type: str, actor_id: str) -> None:
    conn.execute(delete(g.grants).where(*_where((actor_type, actor_id), None, None)))


def drop_target(conn: Connection, target_type: str, target_id: str) -> None:
    conn.execute(delete(g.grants).where(*_where(None, (target_type, target_id), None)))
