"""The `addSecurityGroup` and `removeSecurityGroup` server actions (Nova's shapes and errors): the group
joins or leaves every port of the server, and the hosts concerned hear of it (the server's host its ports,
the hosts whose rules name the group its new member list)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, update
from starlette.requests import Request

from canopy.api.compute.common import cell_db, cloud_of
from canopy.api.compute.server_secgroups import default_group, find_groups, server_ports
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx
from canopy.db import tables_cell as c
from canopy.network import secgroups as sg


def _group_name(action: str, arg: Any) -> str:
    name = arg.get("name") if isinstance(arg, dict) else None
    if not isinstance(name, str) or not 1 <= len(name) <= 255 or set(arg) != {"name"}:
        raise bad_request(f"Invalid input for field/attribute {action}. It must be {{\"name\": <a group's name "
                          "or id>}.")
    return name


async def _group(request: Request, project_id: str, name: str) -> dict[str, Any]:
    """The server's project's group by name or id; 404 as Nova says it."""
    found = await cloud_of(request).dbs.global_db.read_fresh(find_groups, project_id, [name])
    by_id = [r for r in found if r["id"] == name]
    by_name = [r for r in found if r["name"] == name]
    if by_id:
        return by_id[0]
    if len(by_name) > 1:
        raise ApiError(409, f"Multiple security_group matches found for name '{name}', use an ID to be more "
                            "specific.")
    if not by_name:
        raise ApiError(404, f"Security group {name} not found for project {project_id}.")
    return by_name[0]


def _change(conn: Connection, uuid: str, rc: Any, name: str, group: dict[str, Any], adding: bool,
            now: Any) -> list[dict[str, Any]]:
    """Bind or unbind the group on all the server's ports (checked first: nothing half-done)."""
    inst, ports = server_ports(conn, uuid, rc.project_id, rc.is_admin)
    if group["project_id"] != inst["project_id"]:
        raise ApiError(404, f"Security group {name} not found for project {inst['project_id']}.")
    if not ports:
        raise ApiError(404, f"Security group {name} not found: instance {uuid} has no port.")
    gid = group["id"]
    if adding:
        if any(not p["port_security_enabled"] for p in ports):
            raise bad_request("Network requires port_security_enabled and subnet associated in order to apply "
                              "security groups.")
        todo = [p for p in ports if gid not in p["security_groups"]]
        if not todo:
            raise bad_request(f"Security group {gid} is already associated with the instance {uuid}")
        conn.execute(insert(c.port_security_groups), [{"port_id": p["id"], "security_group_id": gid} for p in todo])
    else:
        todo = [p for p in ports if gid in p["security_groups"]]
        if not todo:
            raise bad_request(f"Security group {gid} not associated with the instance {uuid}")
        b = c.port_security_groups.c
        conn.execute(delete(c.port_security_groups).where(b.security_group_id == gid,
                                                          b.port_id.in_([p["id"] for p in todo])))
    # a new revision: the host takes the port's new groups over what it holds
    conn.execute(update(c.ports).where(c.ports.c.id.in_([p["id"] for p in todo])).values(updated_at=now))
    return todo


async def _apply(request: Request, uuid: str, arg: Any, action: str, adding: bool) -> None:
    from canopy.api.network.common import announce
    from canopy.api.network.secgroups import changed
    from canopy.rpc.calls import PortChange

    name, rc = _group_name(action, arg), ctx(request)
    project = await cell_db(request).read_fresh(lambda conn: server_ports(conn, uuid, rc.project_id,
                                                                          rc.is_admin)[0]["project_id"])
    if name == sg.DEFAULT:
        await default_group(request, project)
    group = await _group(request, project, name)
    now = cloud_of(request).clock.now()
    ports = await cell_db(request).write(_change, uuid, rc, name, group, adding, now)
    bound = [p for p in ports if p["host_id"]]
    if bound:
        await announce(request, [PortChange(port_id=p["id"], network_id=p["network_id"]) for p in bound])
        await changed(request, [group["id"]], members=True)


async def add_security_group(request: Request, uuid: str, arg: Any) -> None:
    """addSecurityGroup: {"name": group name or id} → 202."""
    await _apply(request, uuid, arg, "addSecurityGroup", adding=True)


async def remove_security_group(request: Request, uuid: str, arg: Any) -> None:
    """removeSecurityGroup: {"name": group name or id} → 202."""
    await _apply(request, uuid, arg, "removeSecurityGroup", adding=False)


ACTIONS = {"addSecurityGroup": add_security_group, "removeSecurityGroup": remove_security_group}
