"""Which racks can give a new port an address on a network: the network side of the scheduler's
reachability filter.

On a flat provider network spread over many racks (a routed provider network), each rack is cabled to
one segment (the admin's `segment_racks` map), and a subnet with a `segment_id` serves only the racks of
that segment. A host can therefore give an address only from the subnets of its rack's segment, and only
while one of them has a free address. A subnet without a segment serves every rack; a segment no rack
is mapped to serves none. Racks are named `datacenter/rack`, as the segments API names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network import ipam

EVERY_RACK = None


@dataclass(frozen=True)
class SubnetRoom:
    """How many addresses a subnet still has, and the segment it serves (None: every rack)."""

    subnet_id: str
    network_id: str
    segment_id: str | None
    free: int


def reachable_racks(rooms: Iterable[SubnetRoom], network_ids: Iterable[str],
                    segment_racks: Mapping[str, Iterable[str]] | None = None) -> dict[str, frozenset[str] | None]:
    """For each network: None when every rack can get an address, else the racks that can (maybe none).

    `segment_racks` maps a segment to its racks. A network without subnets needs no address, so every
    rack reaches it."""
    by_net: dict[str, list[SubnetRoom]] = {n: [] for n in network_ids}
    for room in rooms:
        by_net.setdefault(room.network_id, []).append(room)
    out: dict[str, frozenset[str] | None] = {}
    for net, subnets in by_net.items():
        open_ = [s for s in subnets if s.free > 0]
        if not subnets or any(s.segment_id is None for s in open_):
            out[net] = EVERY_RACK
            continue
        racks: set[str] = set()
        for s in open_:
            racks.update((segment_racks or {}).get(s.segment_id or "", ()))
        out[net] = frozenset(racks)
    return out


def pool_size(allocation_pools: list[dict[str, str]] | None) -> int:
    """How many addresses a subnet's allocation pools hold."""
    return sum(b - a + 1 for a, b in ipam.pools_from_dicts(allocation_pools or []))


def load_subnets(global_conn: Connection, network_ids: list[str]) -> list[dict[str, Any]]:
    """The subnets of some networks: id, network, segment and allocation pools."""
    s = g.subnets.c
    rows = global_conn.execute(select(s.id, s.network_id, s.segment_id, s.allocation_pools)
                               .where(s.network_id.in_(network_ids))).mappings().all()
    return [dict(r) for r in rows]


def load_segment_racks(global_conn: Connection, network_ids: list[str]) -> dict[str, list[str]]:
    """segment id → the racks (`datacenter/rack`) mapped to it, for some networks."""
    r = g.segment_racks.c
    out: dict[str, list[str]] = {}
    for seg, dc, rack in global_conn.execute(select(r.segment_id, r.datacenter, r.rack)
                                             .where(r.network_id.in_(network_ids))):
        out.setdefault(seg, []).append(f"{dc}/{rack}")
    return out


def count_allocations(cell_conn: Connection, subnet_ids: list[str]) -> dict[str, int]:
    """How many addresses are allocated in each subnet."""
    if not subnet_ids:
        return {}
    a = c.ip_allocations.c
    q = select(a.subnet_id, func.count()).where(a.subnet_id.in_(subnet_ids)).group_by(a.subnet_id)
    return {row[0]: int(row[1]) for row in cell_conn.execute(q)}


def rooms_of(subnets: list[dict[str, Any]], allocated: dict[str, int]) -> list[SubnetRoom]:
    """Each subnet's free address count: its pools' size minus its allocations."""
    return [SubnetRoom(s["id"], s["network_id"], s["segment_id"],
                       pool_size(s["allocation_pools"]) - allocated.get(s["id"], 0)) for s in subnets]


def subnet_rooms(global_conn: Connection, cell_conn: Connection, network_ids: list[str]) -> list[SubnetRoom]:
    """The subnets of some networks with their free address counts."""
    subnets = load_subnets(global_conn, network_ids)
    return rooms_of(subnets, count_allocations(cell_conn, [s["id"] for s in subnets]))


def racks_reaching(global_conn: Connection, cell_conn: Connection,
                   network_ids: list[str]) -> dict[str, frozenset[str] | None]:
    """For each network: the racks that can give an address on it (None: every rack)."""
    rooms = subnet_rooms(global_conn, cell_conn, network_ids)
    return reachable_racks(rooms, network_ids, load_segment_racks(global_conn, network_ids))
