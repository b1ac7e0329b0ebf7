"""What hosts need of security groups, read from the databases: the groups of their ports with the
rules as the compiler takes them (global), and the member addresses of the remote groups those rules
name (cell: the ports in the group and their addresses)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network import secgroups as sg
from canopy.network.port_views import chunks
from canopy.rpc.calls import NetSecGroup


def compiled_rule(r: dict[str, Any]) -> dict[str, Any]:
    """A rule row as the agent's compiler takes it."""
    return {"mark": r["mark"], "direction": r["direction"], "ethertype": sg.ETHERTYPES[r["ethertype"]],
            "protocol": sg.protocol_number(r["protocol"], r["ethertype"]), "port_min": r["port_range_min"],
            "port_max": r["port_range_max"], "prefix": r["remote_ip_prefix"], "remote_group": r["remote_group_id"],
            "id": r["id"]}


def group_defs(conn: Connection, group_ids: Iterable[str]) -> list[NetSecGroup]:
    """The groups with their rules (global database; two statements)."""
    ids = sorted(set(group_ids))
    if not ids:
        return []
    s = g.security_groups.c
    rows = conn.execute(select(s.id, s.tag, s.name).where(s.id.in_(ids))).all()
    rules = sg.rules_of(conn, ids)
    return [NetSecGroup(id=gid, tag=tag, name=name, rules=[compiled_rule(r) for r in rules[gid]])
            for gid, tag, name in rows]


def remote_groups(defs: Iterable[NetSecGroup]) -> list[str]:
    """The remote groups the rules of these groups name."""
    return sorted({r["remote_group"] for d in defs for r in d.rules if r.get("remote_group")})


def referencing(conn: Connection, group_ids: list[str]) -> list[str]:
    """The groups with a rule naming one of these as its remote group (global database)."""
    r = g.security_group_rules.c
    return sorted(set(conn.execute(select(r.security_group_id).where(r.remote_group_id.in_(group_ids))).scalars()))


def remote_of(conn: Connection, group_ids: list[str]) -> dict[str, set[str]]:
    """group -> which of these groups its rules name as remote group (global database; one statement)."""
    r = g.security_group_rules.c
    out: dict[str, set[str]] = {}
    for part in chunks(group_ids):
        stmt = select(r.security_group_id, r.remote_group_id).where(r.remote_group_id.in_(part)).distinct()
        for gid, remote in conn.execute(stmt):
            out.setdefault(gid, set()).add(remote)
    return out


def members(conn: Connection, group_ids: list[str]) -> dict[str, list[str]]:
    """group -> the addresses of its ports (cell database; one statement per 500 groups)."""
    b, a = c.port_security_groups.c, c.ip_allocations.c
    out: dict[str, list[str]] = {gid: [] for gid in group_ids}
    for part in chunks(group_ids):
        stmt = (select(b.security_group_id, a.ip_address)
                .join_from(c.port_security_groups, c.ip_allocations, a.port_id == b.port_id)
                .where(b.security_group_id.in_(part)))
        for gid, ip in conn.execute(stmt):
            out[gid].append(ip)
    return {gid: sorted(ips) for gid, ips in out.items()}


def hosts_of(conn: Connection, group_ids: list[str]) -> dict[str, set[str]]:
    """host -> which of these groups its bound ports are in (cell database)."""
    b, p = c.port_security_groups.c, c.ports.c
    out: dict[str, set[str]] = {}
    for part in chunks(group_ids):
        stmt = (select(p.host_id, b.security_group_id).join_from(c.port_security_groups, c.ports, p.id == b.port_id)
                .where(b.security_group_id.in_(part), p.host_id != "").distinct())
        for host, gid in conn.execute(stmt):
            out.setdefault(host, set()).add(gid)
    return out
