"""Security groups seen from Compute (Nova's shapes, backed by the network's groups): server create's
`security_groups`, the `addSecurityGroup`/`removeSecurityGroup` actions (on all the server's ports) and
`GET /servers/{id}/os-security-groups`, and the group names of the server view."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, or_, select
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.common import cell_db, cloud_of, load_visible_instance
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, json_response, route
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network import secgroups as sg

MAX_GROUPS = 64  # per server: more is a hostile request, not a firewall


def _names_of(raw: list[dict[str, str]] | None) -> list[str]:
    """The names (or ids) a create asks for, checked for shape."""
    if raw is None:
        return []
    if len(raw) > MAX_GROUPS:
        raise bad_request(f"Invalid input for field/attribute security_groups. At most {MAX_GROUPS} groups.")
    names = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 255 or set(item) != {"name"}:
            raise bad_request("Invalid input for field/attribute security_groups. Each item must be "
                              "{\"name\": <a group's name or id>}.")
        names.append(name)
    return list(dict.fromkeys(names))


def find_groups(conn: Connection, project_id: str, names: list[str]) -> list[dict[str, Any]]:
    """The project's groups whose name or id is one of `names` (one statement)."""
    s = g.security_groups.c
    stmt = select(s.id, s.name, s.description, s.project_id).where(
        s.project_id == project_id, or_(s.name.in_(names), s.id.in_(names)))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def _pick(found: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The group a name or id means; 409 when a name is not unique, as Nova says it."""
    by_id = [r for r in found if r["id"] == name]
    if by_id:
        return by_id[0]
    by_name = [r for r in found if r["name"] == name]
    if len(by_name) > 1:
        raise ApiError(409, f"Multiple security_group matches found for name '{name}', use an ID to be more "
                            "specific.")
    return by_name[0] if by_name else None


async def default_group(request: Request, project_id: str) -> str:
    """The project's default group, made on first use; one known to exist costs no statement."""
    gid, cloud = sg.default_group_id(project_id), cloud_of(request)
    scope = str(cloud.dbs.global_db.url)
    if sg.default_known(scope, project_id):
        return gid
    await cloud.dbs.global_db.write(sg.ensure_default, project_id, cloud.clock.now())
    sg.remember_default(scope, project_id)
    return gid


async def resolve_create_groups(request: Request, raw: list[dict[str, str]] | None) -> list[str]:
    """The group ids of a create's `security_groups` (none named: the project's default group); 400 for a
    name the project does not have, before anything is written."""
    project_id = ctx(request).project_id or ""
    names = _names_of(raw)
    if not names or names == [sg.DEFAULT]:
        return [await default_group(request, project_id)]
    ids: list[str] = []
    if sg.DEFAULT in names:
        ids.append(await default_group(request, project_id))
    wanted = [n for n in names if n != sg.DEFAULT]
    found = await cloud_of(request).dbs.global_db.read_fresh(find_groups, project_id, wanted)
    for name in wanted:
        row = _pick(found, name)
        if row is None:
            raise bad_request(f"Security group {name} not found.")
        ids.append(row["id"])
    return sorted(set(ids))


# -- the server's ports and their groups ------------------------------------------------------------------


def server_ports(conn: Connection, uuid: str, project_id: str | None, is_admin: bool
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The instance (404 unless visible) and its ports, each with its groups."""
    inst = load_visible_instance(conn, uuid, project_id, is_admin)
    p = c.ports.c
    rows = [dict(r) for r in conn.execute(select(p.id, p.network_id, p.port_security_enabled, p.host_id)
                                          .where(p.device_id == uuid).order_by(p.id)).mappings()]
    groups = sg.groups_of_ports(conn, [r["id"] for r in rows])
    return inst, [{**r, "security_groups": groups[r["id"]]} for r in rows]


def group_rows(conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
    """Group rows by id, in name order."""
    s = g.security_groups
    return [dict(r) for r in conn.execute(select(s).where(s.c.id.in_(ids)).order_by(s.c.name, s.c.id)).mappings()]


async def attach_names(request: Request, instances: list[dict[str, Any]]) -> None:
    """Set each instance's `security_group_names` (its ports' groups, as the server view shows them)."""
    uuids = [i["uuid"] for i in instances]
    if not uuids:
        return

    def cell(conn: Connection) -> dict[str, set[str]]:
        b, p = c.port_security_groups.c, c.ports.c
        stmt = (select(p.device_id, b.security_group_id).join_from(c.port_security_groups, c.ports,
                                                                    p.id == b.port_id)
                .where(p.device_id.in_(uuids)))
        out: dict[str, set[str]] = {}
        for device, gid in conn.execute(stmt):
            out.setdefault(device, set()).add(gid)
        return out

    by_server = await cell_db(request).read(cell)
    ids = sorted({gid for gids in by_server.values() for gid in gids})
    names = {r["id"]: r["name"] for r in await cloud_of(request).dbs.global_db.read(group_rows, ids)} if ids else {}
    for inst in instances:
        inst["security_group_names"] = sorted({names[gid] for gid in by_server.get(inst["uuid"], ()) if gid in names})


def nova_group(row: dict[str, Any], rules: list[dict[str, Any]], names: dict[str, str]) -> dict[str, Any]:
    """A group in Nova's (os-security-groups) shape."""
    return {"id": row["id"], "name": row["name"], "description": row["description"],
            "tenant_id": row["project_id"], "rules": [_nova_rule(r, row, names) for r in rules
                                                      if r["direction"] == "ingress"]}


def _nova_rule(r: dict[str, Any], group: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    remote = r["remote_group_id"]
    cidr = r["remote_ip_prefix"] or (None if remote else ("0.0.0.0/0" if r["ethertype"] == "IPv4" else "::/0"))
    return {"id": r["id"], "parent_group_id": group["id"], "ip_protocol": r["protocol"],
            "from_port": r["port_range_min"] if r["port_range_min"] is not None else -1,
            "to_port": r["port_range_max"] if r["port_range_max"] is not None else -1,
            "ip_range": {"cidr": cidr} if cidr else {},
            "group": {"name": names.get(remote, ""), "tenant_id": group["project_id"]} if remote else {}}


async def list_server_groups(request: Request) -> Response:
    """GET /servers/{id}/os-security-groups: the groups of the server's ports, in Nova's shape."""
    uuid, rc = request.path_params["server_id"], ctx(request)
    _, ports = await cell_db(request).read(server_ports, uuid, rc.project_id, rc.is_admin)
    ids = sorted({gid for p in ports for gid in p["security_groups"]})

    def read(conn: Connection) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, str]]:
        rows = group_rows(conn, ids)
        rules = sg.rules_of(conn, ids)
        remotes = sorted({r["remote_group_id"] for rs in rules.values() for r in rs if r["remote_group_id"]})
        return rows, rules, {r["id"]: r["name"] for r in group_rows(conn, remotes)} if remotes else {}

    rows, rules, names = await cloud_of(request).dbs.global_db.read(read) if ids else ([], {}, {})
    return json_response({"security_groups": [nova_group(r, rules[r["id"]], names) for r in rows]})


ROUTES = [
    route("/v2.1/servers/{server_id}/os-security-groups", list_server_groups, ["GET"],
          "compute:servers:security-groups"),
]

