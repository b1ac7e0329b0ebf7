"""GET /v3/role_assignments: a user's roles on projects (the `role_assignments` table) and every other
grant (users and groups on projects, domains and the system: the `grants` table), filtered by `user.id`,
`group.id`, `role.id`, `scope.project.id`, `scope.domain.id` and `scope.system`; `effective` adds the
implied roles of direct assignments and replaces a group's grants by its members'; `include_names` names them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.http import route
from canopy.api.identity import grants, store
from canopy.api.identity.admin import _base, _collection, _present, _read
from canopy.db import tables_global as g

SCOPE_PATHS = {"project": "projects/{}", "domain": "domains/{}", "system": "system"}


def _assignment_view(base: str, a: dict[str, Any], names: bool, prior: str | None = None) -> dict[str, Any]:
    source = prior or a["role_id"]
    links = {"assignment": f"{base}/projects/{a['project_id']}/users/{a['user_id']}/roles/{source}"}
    if prior:
        links["prior_role"] = f"{base}/roles/{prior}"
    view: dict[str, Any] = {"role": {"id": a["role_id"]}, "user": {"id": a["user_id"]},
                            "scope": {"project": {"id": a["project_id"]}}, "links": links}
    if names:
        view["role"]["name"] = a["role_name"]
        view["user"].update(name=a["user_name"], domain=dict(store.DEFAULT_DOMAIN))
        view["scope"]["project"].update(name=a["project_name"], domain=dict(store.DEFAULT_DOMAIN))
    return view


def _grant_view(base: str, gr: dict[str, Any], names: dict[tuple[str, str], str] | None,
                via_group: str | None = None) -> dict[str, Any]:
    target_type, target_id = gr["target_type"], gr["target_id"]
    scope: dict[str, Any] = {"system": {"all": True}} if target_type == "system" else {target_type: {"id": target_id}}
    where = SCOPE_PATHS[target_type].format(target_id)
    actor_type, actor_id = ("group", via_group) if via_group else (gr["actor_type"], gr["actor_id"])
    prior = gr.get("prior_role")
    links = {"assignment": f"{base}/{where}/{actor_type}s/{actor_id}/roles/{prior or gr['role_id']}"}
    if prior:
        links["prior_role"] = f"{base}/roles/{prior}"
    if via_group:
        links["membership"] = f"{base}/groups/{via_group}/users/{gr['actor_id']}"
    view: dict[str, Any] = {"role": {"id": gr["role_id"]}, gr["actor_type"]: {"id": gr["actor_id"]},
                            "scope": scope, "links": links}
    if names is not None:
        view["role"]["name"] = gr["role_name"]
        view[gr["actor_type"]]["name"] = names.get((gr["actor_type"], gr["actor_id"]), "")
        if target_type != "system":
            scope[target_type]["name"] = names.get((target_type, target_id), "")
    return view


def _names(conn: Connection, rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """The names of the users, groups, projects and domains the grants name, one query per kind."""
    out: dict[tuple[str, str], str] = {}
    tables = {"user": g.users, "group": g.groups, "project": g.projects, "domain": g.domains}
    for kind, table in tables.items():
        ids = {r["actor_id"] for r in rows if r["actor_type"] == kind}
        ids |= {r["target_id"] for r in rows if r["target_type"] == kind}
        if ids:
            for row in conn.execute(select(table.c.id, table.c.name).where(table.c.id.in_(ids))):
                out[(kind, row.id)] = row.name
    return out


def _grant_filters(request: Request) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    q = request.query_params
    actor = ("user", q["user.id"]) if q.get("user.id") else ("group", q["group.id"]) if q.get("group.id") else None
    target = (("project", q["scope.project.id"]) if q.get("scope.project.id") else
              ("domain", q["scope.domain.id"]) if q.get("scope.domain.id") else
              ("system", grants.SYSTEM) if q.get("scope.system") else None)
    return actor, target


def _grant_rows(conn: Connection, request: Request, effective: bool) -> list[tuple[dict[str, Any], str | None]]:
    """(grant, the group it came through) for the grants the query asks for; groups expanded when effective."""
    actor, target = _grant_filters(request)
    role_id = request.query_params.get("role.id")
    if not effective:
        return [(r, None) for r in grants.list_grants(conn, actor, target, role_id)]
    out: list[tuple[dict[str, Any], str | None]] = []
    user_id = actor[1] if actor and actor[0] == "user" else None
    for r in grants.list_grants(conn, None if user_id else actor, target, role_id):
        if r["actor_type"] == "user":
            if user_id in (None, r["actor_id"]):
                out.append((r, None))
            continue
        members = conn.execute(select(g.group_members.c.user_id).where(g.group_members.c.group_id == r["actor_id"]))
        for member in members.scalars():
            if user_id in (None, member):
                out.append(({**r, "actor_type": "user", "actor_id": member}, r["actor_id"]))
    return _with_implied(conn, out, role_id)


def _with_implied(conn: Connection, rows: list[tuple[dict[str, Any], str | None]],
                  role_id: str | None) -> list[tuple[dict[str, Any], str | None]]:
    """Effective grants: each with the roles it implies (marked with the implying `prior_role`), once each."""
    by_name = {r.name: r.id for r in conn.execute(select(g.roles.c.id, g.roles.c.name))}
    out: list[tuple[dict[str, Any], str | None]] = []
    seen: set[tuple[str, str, str, str]] = set()
    for r, via in rows:
        implied = [(n, by_name[n]) for n in grants.IMPLIED_ROLES.get(r["role_name"], ()) if n in by_name]
        for name, rid, prior in [(r["role_name"], r["role_id"], None), *((n, i, r["role_id"]) for n, i in implied)]:
            key = (r["actor_id"], r["target_type"], r["target_id"], rid)
            if key in seen or (role_id and rid != role_id):
                continue
            seen.add(key)
            out.append(({**r, "role_id": rid, "role_name": name, "prior_role": prior}, via))
    return out


async def list_role_assignments(request: Request) -> Response:
    """GET /v3/role_assignments."""
    q = request.query_params
    names, effective = _present(request, "include_names"), _present(request, "effective")
    user_id, project_id, role_id = q.get("user.id"), q.get("scope.project.id"), q.get("role.id")
    only_grants = bool(q.get("scope.domain.id") or q.get("group.id") or q.get("scope.system"))

    def load(conn: Connection) -> tuple[list[Any], list[Any], dict[tuple[str, str], str] | None]:
        direct: list[tuple[dict[str, Any], str | None]] = []
        if not only_grants and effective:
            direct = store.effective_assignments(conn, user_id=user_id, project_id=project_id, role_id=role_id)
        elif not only_grants:
            direct = [(a, None) for a in store.list_assignments(conn, user_id=user_id, project_id=project_id,
                                                                 role_id=role_id)]
        other = _grant_rows(conn, request, effective)
        return direct, other, _names(conn, [r for r, _ in other]) if names else None

    direct, other, named = await _read(request, load)
    base = _base(request)
    return _collection(request, "role_assignments",
                       [_assignment_view(base, a, names, p) for a, p in direct]
                       + [_grant_view(base, r, named, via) for r, via in other])


ROUTES: list[BaseRoute] = [
    route("/v3/role_assignments", list_role_assignments, ["GET"], "identity:list_role_assignments"),
]
