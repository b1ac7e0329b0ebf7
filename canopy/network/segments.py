"""Segments of routed provider networks (global tables): a flat public network spans many racks, each
rack's segment with its own physical network and subnets. Which segment a host reaches follows from its
rack (admin data: segment_racks); a boot's port takes its addresses from that segment's subnets.
Also: which segments still have free addresses, for a scheduler that wants to avoid full ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from canopy.clock import isotime
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network import ipam
from canopy.network.errors import Conflict, FlatNetworkInUse, NotFound, TunnelIdInUse, invalid


class SegmentNotFound(NotFound):
    """A segment that does not exist."""


class SegmentInUse(Conflict):
    """A segment that subnets still use."""


class NoSegmentForHost(Conflict):
    """A routed network with no segment in the rack of the chosen host."""


def segment_view(row: dict[str, Any], racks: list[str]) -> dict[str, Any]:
    """The API's view of a segment (Neutron's, with the racks it serves as `canopy:racks`)."""
    return {"id": row["id"], "name": row["name"] or None, "description": row["description"],
            "network_id": row["network_id"], "network_type": row["network_type"],
            "physical_network": row["physical_network"], "segmentation_id": row["segmentation_id"],
            "created_at": isotime(row["created_at"]), "updated_at": isotime(row["updated_at"]),
            "revision_number": 1, "tags": [], "canopy:racks": racks}


def rack_key(dc: str, rack: str) -> str:
    """A rack as the API names it: `datacenter/rack`."""
    return f"{dc}/{rack}"


def parse_racks(value: object) -> list[tuple[str, str]]:
    """`canopy:racks` as (datacenter, rack) pairs; "r01" means datacenter dc1."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise invalid("canopy:racks", f"{value!r} is not a list of 'datacenter/rack' names")
    out = []
    for v in value:
        dc, _, rack = v.rpartition("/")
        if len(rack) > 64 or len(dc) > 64:
            raise invalid("canopy:racks", f"'{v}' is too long")
        out.append((dc or "dc1", rack))
    if len(set(out)) != len(out):
        raise invalid("canopy:racks", f"duplicate racks in {value!r}")
    return out


def check_physnet(conn: Connection, network_type: str, physnet: str | None, segmentation_id: int | None) -> None:
    """A flat physical network carries one network (or one segment); a VXLAN ID is used once."""
    n, s = g.networks.c, g.network_segments.c
    if network_type == "flat":
        used = conn.execute(select(n.id).where(n.network_type == "flat", n.physical_network == physnet).limit(1)
                            ).first() or conn.execute(select(s.id).where(s.network_type == "flat",
                                                                         s.physical_network == physnet).limit(1)
                                                      ).first()
        if used:
            raise FlatNetworkInUse(f"Unable to create the flat network. Physical network {physnet} is in use.")
    elif segmentation_id is not None:
        used = conn.execute(select(n.id).where(n.network_type == "vxlan", n.segmentation_id == segmentation_id)
                            .limit(1)).first() or conn.execute(
            select(s.id).where(s.network_type == "vxlan", s.segmentation_id == segmentation_id).limit(1)).first()
        if used:
            raise TunnelIdInUse(f"Unable to create the network. The tunnel ID {segmentation_id} is in use.")


def create_segment(conn: Connection, values: dict[str, Any], racks: list[tuple[str, str]], now: datetime
                   ) -> dict[str, Any]:
    """A new segment of a network, and the racks it serves."""
    check_physnet(conn, values["network_type"], values.get("physical_network"), values.get("segmentation_id"))
    row = {"id": str(uuid.uuid4()), "name": "", "description": "", "physical_network": None, "segmentation_id": None,
           **values, "created_at": now, "updated_at": now}
    conn.execute(g.network_segments.insert().values(**row))
    set_racks(conn, row, racks)
    return row


def set_racks(conn: Connection, segment: dict[str, Any], racks: list[tuple[str, str]]) -> None:
    """Make the segment serve exactly these racks; a rack served by another segment of the network is a 409."""
    r = g.segment_racks.c
    conn.execute(delete(g.segment_racks).where(r.segment_id == segment["id"]))
    for dc, rack in racks:
        taken = conn.execute(select(r.segment_id).where(r.network_id == segment["network_id"], r.datacenter == dc,
                                                        r.rack == rack)).scalar()
        if taken:
            raise Conflict(f"Rack {rack_key(dc, rack)} is already served by segment {taken} of network "
                           f"{segment['network_id']}.")
        conn.execute(g.segment_racks.insert().values(network_id=segment["network_id"], datacenter=dc, rack=rack,
                                                     segment_id=segment["id"]))


def racks_of(conn: Connection, segment_ids: Iterable[str]) -> dict[str, list[str]]:
    """segment id -> its racks as 'datacenter/rack'."""
    ids = list(segment_ids)
    out: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        r = g.segment_racks.c
        for seg, dc, rack in conn.execute(select(r.segment_id, r.datacenter, r.rack).where(r.segment_id.in_(ids))
                                          .order_by(r.datacenter, r.rack)):
            out[seg].append(rack_key(dc, rack))
    return out


def get_segment(conn: Connection, segment_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(g.network_segments).where(g.network_segments.c.id == segment_id)).mappings().first()
    return dict(row) if row else None


def list_segments(conn: Connection, *, filters: dict[str, list[Any]], limit: int, marker: str | None
                  ) -> list[dict[str, Any]]:
    """Segment rows matching column filters, ordered by id, after `marker`."""
    s = g.network_segments
    stmt = select(s).order_by(s.c.id).limit(limit)
    for column, values in filters.items():
        stmt = stmt.where(s.c[column].in_(values))
    if marker:
        stmt = stmt.where(s.c.id > marker)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def update_segment(conn: Connection, segment: dict[str, Any], changes: dict[str, Any],
                   racks: list[tuple[str, str]] | None, now: datetime) -> dict[str, Any]:
    """Change a segment's name, description or racks."""
    conn.execute(update(g.network_segments).where(g.network_segments.c.id == segment["id"])
                 .values(**changes, updated_at=now))
    if racks is not None:
        set_racks(conn, segment, racks)
    return {**segment, **changes, "updated_at": now}


def delete_segment(conn: Connection, segment_id: str) -> None:
    """Delete a segment; 409 while a subnet is on it."""
    used = conn.execute(select(g.subnets.c.id).where(g.subnets.c.segment_id == segment_id).limit(1)).first()
    if used:
        raise SegmentInUse(f"Segment '{segment_id}' cannot be deleted: subnet {used[0]} is associated with it.")
    conn.execute(delete(g.network_segments).where(g.network_segments.c.id == segment_id))


# -- a boot: which subnets the host reaches ------------------------------------------------------------


def rack_of_host(conn: Connection, host: str) -> tuple[str, str] | None:
    """A host's (datacenter, rack), from the cell's hosts table."""
    row = conn.execute(select(c.hosts.c.datacenter, c.hosts.c.rack).where(c.hosts.c.name == host)).first()
    return (row[0], row[1]) if row else None


def any_segmented(requests: list[dict[str, Any]]) -> bool:
    """Whether a boot's networks include a routed one (subnets on segments)."""
    return any(s.get("segment_id") for req in requests for s in req.get("subnets", []))


def place_request(conn: Connection, req: dict[str, Any], rack: tuple[str, str] | None) -> dict[str, Any]:
    """A boot's network request with only the subnets the host's rack reaches (global database)."""
    subnets = req.get("subnets", [])
    if not any(s.get("segment_id") for s in subnets):
        return req
    network_id = req["network"]["id"]
    seg = None
    if rack is not None:
        r = g.segment_racks.c
        seg = conn.execute(select(r.segment_id).where(r.network_id == network_id, r.datacenter == rack[0],
                                                      r.rack == rack[1])).scalar()
    if seg is None:
        where = rack_key(*rack) if rack else "an unknown rack"
        raise NoSegmentForHost(f"No segment of network {network_id} serves rack {where}.")
    return {**req, "subnets": [s for s in subnets if s.get("segment_id") == seg]}


def free_addresses(global_conn: Connection, cell_conn: Connection, network_id: str) -> dict[str | None, int]:
    """segment id (None: the network's unsegmented subnets) -> how many addresses its pools have left:
    what a scheduler asks to keep boots away from racks whose segment is full."""
    s = g.subnets.c
    subnets = [dict(r) for r in global_conn.execute(select(s.id, s.segment_id, s.ip_version, s.allocation_pools)
                                                    .where(s.network_id == network_id)).mappings()]
    a = c.ip_allocations.c
    used: dict[str, int] = {sid: int(n) for sid, n in cell_conn.execute(
        select(a.subnet_id, func.count()).where(a.network_id == network_id).group_by(a.subnet_id))}
    out: dict[str | None, int] = {}
    for sub in subnets:
        size = ipam.PoolRanges(sub["ip_version"], ipam.pools_from_dicts(sub["allocation_pools"])).size
        out[sub["segment_id"]] = out.get(sub["segment_id"], 0) + max(size - int(used.get(sub["id"], 0)), 0)
    return out


def racks_with_free_addresses(global_conn: Connection, cell_conn: Connection, network_id: str) -> list[str]:
    """The racks ('datacenter/rack') whose segment of a routed network still has a free address."""
    free = free_addresses(global_conn, cell_conn, network_id)
    r = g.segment_racks.c
    rows = global_conn.execute(select(r.segment_id, r.datacenter, r.rack).where(r.network_id == network_id))
    return sorted(rack_key(dc, rack) for seg, dc, rack in rows if free.get(seg, 0) > 0)
