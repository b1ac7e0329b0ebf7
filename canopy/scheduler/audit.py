"""The claim audit: compare what each host's counters say is claimed with what its instances hold,
and repair the difference.

Drift comes from a reply lost between scheduler and conductor, a conductor that died between a claim
and its record, or a release that found less than it gave back. The truth is the instances recorded
on each host (the conductor records what the agents report; a claim records its instance's host in
the same transaction, so an instance being built is already counted). The audit walks the hosts in
batches by id; each repair is a conditional UPDATE that applies only if the counters are still what
the audit read, so a claim landing in between makes it skip that host until the next round.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, bindparam, delete, select, update

from canopy.db import tables_cell as c

h, i, gp = c.hosts.c, c.instances.c, c.group_placements.c


@dataclass(frozen=True)
class Usage:
    """What is claimed on a host."""

    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0
    vms: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.vcpus + other.vcpus, self.memory_mb + other.memory_mb, self.disk_gb + other.disk_gb,
                     self.vms + other.vms)


@dataclass(frozen=True)
class Drift:
    """One host whose counters disagree with its instances."""

    host_id: int
    host: str
    counted: Usage
    expected: Usage


@dataclass
class AuditReport:
    """What one pass looked at and what it repaired."""

    hosts: int = 0
    drift: list[Drift] = field(default_factory=list)
    repaired: int = 0
    skipped: int = 0
    next_after_id: int | None = None


def usage_of_flavors(flavors: Iterable[dict[str, int]]) -> Usage:
    """The usage of a set of instances, from their flavor snapshots."""
    total = Usage()
    for f in flavors:
        total = total + Usage(int(f.get("vcpus", 0)), int(f.get("ram", 0)), int(f.get("disk", 0)), 1)
    return total


def find_drift(counted: dict[tuple[int, str], Usage], expected: dict[str, Usage]) -> list[Drift]:
    """The hosts whose counted usage differs from what their instances add up to (pure)."""
    return [Drift(host_id, name, usage, expected.get(name, Usage()))
            for (host_id, name), usage in sorted(counted.items())
            if usage != expected.get(name, Usage())]


_REPAIR = (
    update(c.hosts)
    .where(h.id == bindparam("w_id"), h.vcpus_used == bindparam("w_seen_v"), h.memory_mb_used == bindparam("w_seen_r"),
           h.local_gb_used == bindparam("w_seen_d"), h.running_vms == bindparam("w_seen_n"))
    .values(vcpus_used=bindparam("w_v"), memory_mb_used=bindparam("w_r"), local_gb_used=bindparam("w_d"),
            running_vms=bindparam("w_n"), updated_at=bindparam("w_now"))
)


def audit_batch(conn: Connection, now: dt.datetime, after_id: int = 0, limit: int = 500,
                repair: bool = True) -> AuditReport:
    """Audit up to `limit` hosts with an id above `after_id`; `next_after_id` is None after the last."""
    # Hosts first, then instances: a claim committing between the two reads shows up in the instances
    # but not in the counters read, and the conditional repair then finds the counters moved and skips.
    rows = conn.execute(select(h.id, h.name, h.vcpus_used, h.memory_mb_used, h.local_gb_used, h.running_vms)
                        .where(h.id > after_id).order_by(h.id).limit(limit)).all()
    report = AuditReport(hosts=len(rows), next_after_id=rows[-1].id if len(rows) == limit else None)
    if not rows:
        return report
    counted = {(r.id, r.name): Usage(r.vcpus_used, r.memory_mb_used, r.local_gb_used, r.running_vms) for r in rows}
    flavors: dict[str, list[dict[str, int]]] = {}
    for name, flavor in conn.execute(select(i.host, i.flavor).where(
            i.host.in_([r.name for r in rows]), i.deleted.is_(False))):
        flavors.setdefault(name, []).append(flavor)
    report.drift = find_drift(counted, {name: usage_of_flavors(fs) for name, fs in flavors.items()})
    if repair:
        for d in report.drift:
            if _repair(conn, d, now):
                report.repaired += 1
            else:
                report.skipped += 1
    return report


def _repair(conn: Connection, d: Drift, now: dt.datetime) -> bool:
    seen, want = d.counted, d.expected
    return conn.execute(_REPAIR, {
        "w_id": d.host_id, "w_seen_v": seen.vcpus, "w_seen_r": seen.memory_mb, "w_seen_d": seen.disk_gb,
        "w_seen_n": seen.vms, "w_v": want.vcpus, "w_r": want.memory_mb, "w_d": want.disk_gb, "w_n": want.vms,
        "w_now": now}).rowcount == 1


def prune_group_placements(conn: Connection, limit: int = 1000) -> int:
    """Forget group placements whose instance was deleted or left that host (they no longer count)."""
    stale = conn.execute(
        select(gp.group_uuid, gp.instance_uuid)
        .select_from(c.group_placements.outerjoin(c.instances, i.uuid == gp.instance_uuid))
        .where((i.uuid.is_(None)) | (i.deleted.is_(True)) | (i.host.is_(None)) | (i.host != gp.host))
        .limit(limit)).all()
    for group_uuid, instance_uuid in stale:
        conn.execute(delete(c.group_placements).where(and_(gp.group_uuid == group_uuid,
                                                           gp.instance_uuid == instance_uuid)))
    return len(stale)
