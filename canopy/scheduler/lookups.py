"""What the scheduler reads from the database for one request, beyond the host index: where a server
group's members are, which hosts the same_host/different_host hints name, and which racks can give an
address on the requested networks (cached briefly: free addresses change slowly, and IPAM has the
last word at port creation anyway)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from canopy.clock import Clock
from canopy.db import tables_cell as c
from canopy.db.engine import Database
from canopy.network import reachability
from canopy.rpc.calls import SelectHost
from canopy.scheduler import claims
from canopy.scheduler.request import GroupState, ImageNeeds, Request, aggregate_extra_specs

Racks = tuple[frozenset[str] | None, ...]


def hosts_of_instances(conn: Connection, uuids: list[str]) -> list[str]:
    """The hosts of some (live) instances."""
    i = c.instances.c
    q = select(i.host).where(i.uuid.in_(uuids), i.host.is_not(None), i.deleted.is_(False)).distinct()
    return sorted(row[0] for row in conn.execute(q))


@dataclass
class Lookups:
    """The reads one request needs, with the reachability cache."""

    db: Database
    global_db: Database
    clock: Clock
    reach_ttl_s: float = 5.0
    _racks: dict[tuple[str, ...], tuple[float, Racks]] = field(default_factory=dict)

    async def group(self, raw: dict[str, Any] | None) -> GroupState | None:
        if not raw:
            return None
        policy = str(raw.get("policy", ""))
        rules = raw.get("rules") or {}
        state = GroupState(uuid=str(raw["uuid"]), policy=policy,
                           max_per_host=int(rules.get("max_server_per_host", 1)) if policy == "anti-affinity" else 1)
        state.members = await self.db.read_fresh(claims.live_members, state.uuid)
        return state

    async def hosts(self, uuids: list[str]) -> tuple[str, ...]:
        return tuple(await self.db.read_fresh(hosts_of_instances, uuids)) if uuids else ()

    async def racks(self, network_ids: list[str]) -> Racks:
        """For each network (sorted): the racks that can give an address, None for every rack."""
        key = tuple(sorted(set(network_ids)))
        if not key:
            return ()
        now = self.clock.monotonic()
        hit = self._racks.get(key)
        if hit is not None and now - hit[0] < self.reach_ttl_s:
            return hit[1]
        subnets = await self.global_db.read(reachability.load_subnets, list(key))
        mapped = await self.global_db.read(reachability.load_segment_racks, list(key)) if any(
            s["segment_id"] for s in subnets) else {}
        used = await self.db.read(reachability.count_allocations, [s["id"] for s in subnets])
        found = reachability.reachable_racks(reachability.rooms_of(subnets, used), key, mapped)
        value = tuple(found[n] for n in key)
        if len(self._racks) > 1024:
            self._racks.clear()
        self._racks[key] = (now, value)
        return value


async def build_request(lookups: Lookups, msg: SelectHost) -> Request:
    """The normalized request for a SelectHost, with what it needs looked up."""
    same = await lookups.hosts(msg.same_host) if msg.same_host else None
    return Request(
        vcpus=msg.vcpus, memory_mb=msg.memory_mb, disk_gb=msg.disk_gb, availability_zone=msg.availability_zone,
        force_host=msg.force_host, exclude_hosts=tuple(msg.exclude_hosts), project_id=msg.project_id,
        image=ImageNeeds.from_properties(msg.image_properties),
        extra_specs=aggregate_extra_specs(msg.flavor_extra_specs),
        same_host=same, different_host=await lookups.hosts(msg.different_host),
        racks=await lookups.racks(msg.network_ids), group=await lookups.group(msg.group))


def group_claim(group: GroupState | None) -> claims.GroupClaim | None:
    """What the claim must check and record for a group member."""
    if group is None:
        return None
    return claims.GroupClaim(group.uuid, group.policy, group.max_per_host)
