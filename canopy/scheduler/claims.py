"""Claims: capacity is taken with one conditional UPDATE, so any number of schedulers sharing one
database never overcommit a host; a lost race is a row count of zero.

In the same transaction the claim records the instance's host, and for a server group where the member
went. An instance holds a claim exactly while its `host` is set: a claim is made only for an instance
still waiting for one (building, no host, not deleted), and given back only by the write that clears
its host (`unclaim`) or deletes it, so a late claim, a retried one or a second release can neither leak nor double.
The instance's host row is what the claim audit (audit.py) counts, so claim and record can never
disagree. A hard group rule is checked after the capacity UPDATE: that UPDATE holds the host's row
lock until commit, so two members of one group cannot both pass the check on the same host; a hard
affinity group is anchored to one host by a primary key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Integer, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from canopy.db import tables_cell as c

h = c.hosts.c
gp, ga, inst = c.group_placements.c, c.group_anchors.c, c.instances.c


class GroupConflict(Exception):
    """A hard server-group rule would break on this host: the claim is rolled back (a lost race)."""


class NotWaiting(Exception):
    """The instance no longer waits for a host (placed already, failed, deleted): the claim is rolled back."""


@dataclass(frozen=True)
class GroupClaim:
    """The server group a claimed instance belongs to."""

    uuid: str
    policy: str
    max_per_host: int = 1


_V, _R, _D = bindparam("w_vcpus", type_=Integer), bindparam("w_ram", type_=Integer), bindparam("w_disk", type_=Integer)
_FITS = (
    h.vcpus_used + _V <= h.vcpus * h.cpu_allocation_ratio - h.reserved_vcpus,
    h.memory_mb_used + _R <= h.memory_mb * h.ram_allocation_ratio - h.reserved_memory_mb,
    h.local_gb_used + _D <= h.local_gb * h.disk_allocation_ratio - h.reserved_disk_gb,
)
_CLAIM = (
    update(c.hosts)
    .where(h.id == bindparam("w_id"), h.enabled.is_(True), *_FITS)
    .values(vcpus_used=h.vcpus_used + _V, memory_mb_used=h.memory_mb_used + _R, local_gb_used=h.local_gb_used + _D,
            running_vms=h.running_vms + 1, updated_at=bindparam("w_now"))
)
# Never below zero: a release that finds less than it gives back is drift, for the audit to repair.
_RELEASE = (
    update(c.hosts)
    .where(h.name == bindparam("w_host"), h.vcpus_used >= _V, h.memory_mb_used >= _R, h.local_gb_used >= _D)
    .values(vcpus_used=h.vcpus_used - _V, memory_mb_used=h.memory_mb_used - _R, local_gb_used=h.local_gb_used - _D,
            running_vms=h.running_vms - 1, updated_at=bindparam("w_now"))
)
_ADJUST = (
    update(c.hosts)
    .where(h.id == bindparam("w_id"), *_FITS, h.vcpus_used + _V >= 0, h.memory_mb_used + _R >= 0,
           h.local_gb_used + _D >= 0)
    .values(vcpus_used=h.vcpus_used + _V, memory_mb_used=h.memory_mb_used + _R, local_gb_used=h.local_gb_used + _D,
            updated_at=bindparam("w_now"))
)
# Only an instance still waiting for a host takes one: a claim landing after its build failed or was
# placed elsewhere (a reply lost, a retry) finds no row and is rolled back.
_SET_HOST = (update(c.instances)
             .where(inst.uuid == bindparam("w_uuid"), inst.host.is_(None), inst.deleted.is_(False),
                    inst.vm_state == "building")
             .values(host=bindparam("w_host")))
_CLEAR_HOST = (update(c.instances).where(inst.uuid == bindparam("w_uuid"), inst.host == bindparam("w_host"))
               .values(host=None))


def claim(conn: Connection, host_id: int, vcpus: int, memory_mb: int, disk_gb: int, now: dt.datetime, *,
          instance_uuid: str | None = None, host: str | None = None, group: GroupClaim | None = None) -> bool:
    """Take the resources on a host if they still fit; False if another claim got there first.

    With `instance_uuid` and `host`, the instance's host is recorded in the same transaction (and its
    group placement, checking the group's hard rule; GroupConflict rolls everything back); NotWaiting
    (rolling back too) when the instance no longer waits for a host."""
    params = {"w_id": host_id, "w_vcpus": vcpus, "w_ram": memory_mb, "w_disk": disk_gb, "w_now": now}
    if conn.execute(_CLAIM, params).rowcount != 1:
        return False
    if instance_uuid is not None and host is not None:
        if conn.execute(_SET_HOST, {"w_uuid": instance_uuid, "w_host": host}).rowcount != 1:
            raise NotWaiting(f"instance {instance_uuid} no longer waits for a host")
        if group is not None:
            record_group_member(conn, group, instance_uuid, host, now)
    return True


def release(conn: Connection, host: str, vcpus: int, memory_mb: int, disk_gb: int, now: dt.datetime) -> bool:
    """Give back what a claim took (failure, delete); False when the host holds less than that (drift)."""
    params = {"w_host": host, "w_vcpus": vcpus, "w_ram": memory_mb, "w_disk": disk_gb, "w_now": now}
    return conn.execute(_RELEASE, params).rowcount == 1


def placed_host(conn: Connection, instance_uuid: str) -> str | None:
    """The host an instance holds a claim on (None: it holds none)."""
    return conn.execute(select(inst.host).where(inst.uuid == instance_uuid)).scalar_one_or_none()


def _locked_host(conn: Connection, instance_uuid: str) -> str | None:
    # FOR UPDATE: a claim committing after this read would otherwise set a host this release never sees
    return conn.execute(select(inst.host).where(inst.uuid == instance_uuid).with_for_update()).scalar_one_or_none()


def unclaim(conn: Connection, instance_uuid: str, vcpus: int, memory_mb: int, disk_gb: int,
            now: dt.datetime) -> str | None:
    """Give back an instance's claim and clear its host, in one transaction; the host it left, or None
    when it held none (a release that already happened, or a claim that never landed)."""
    host = _locked_host(conn, instance_uuid)
    if host is None:
        return None
    # conditional on the host read: of two releases racing, one clears the host and gives back the claim
    if conn.execute(_CLEAR_HOST, {"w_uuid": instance_uuid, "w_host": host}).rowcount != 1:
        return None
    release(conn, host, vcpus, memory_mb, disk_gb, now)
    return host


def adjust(conn: Connection, host_id: int, vcpus: int, memory_mb: int, disk_gb: int, now: dt.datetime) -> bool:
    """Grow or shrink a claim in place (a resize on the same host): a growth must still fit."""
    params = {"w_id": host_id, "w_vcpus": vcpus, "w_ram": memory_mb, "w_disk": disk_gb, "w_now": now}
    return conn.execute(_ADJUST, params).rowcount == 1


def revert_resize(conn: Connection, dest_host: str, new_vcpus: int, new_ram: int, new_disk: int,
                  now: dt.datetime) -> bool:
    """A resize reverted: give back the new flavor's claim on the destination (the source kept its own)."""
    return release(conn, dest_host, new_vcpus, new_ram, new_disk, now)


def live_members(conn: Connection, group_uuid: str, host: str | None = None) -> dict[str, int]:
    """Where a group's members are: {host: count}, counting only instances that still hold that host."""
    q = (select(gp.host, func.count())
         .select_from(c.group_placements.join(c.instances, inst.uuid == gp.instance_uuid))
         .where(gp.group_uuid == group_uuid, inst.host == gp.host, inst.deleted.is_(False))
         .group_by(gp.host))
    if host is not None:
        q = q.where(gp.host == host)
    return {row[0]: int(row[1]) for row in conn.execute(q)}


def record_group_member(conn: Connection, group: GroupClaim, instance_uuid: str, host: str,
                        now: dt.datetime) -> None:
    """Record where a member went; raise GroupConflict if that breaks the group's hard rule."""
    conn.execute(delete(c.group_placements).where(gp.group_uuid == group.uuid, gp.instance_uuid == instance_uuid))
    conn.execute(insert(c.group_placements).values(group_uuid=group.uuid, instance_uuid=instance_uuid, host=host))
    if group.policy == "anti-affinity":
        on_host = live_members(conn, group.uuid, host).get(host, 0)
        if on_host > group.max_per_host:
            raise GroupConflict(f"server group {group.uuid} already has {on_host - 1} member(s) on {host}")
    elif group.policy == "affinity":
        _anchor(conn, group.uuid, host, now)


def _anchor(conn: Connection, group_uuid: str, host: str, now: dt.datetime) -> None:
    """Hard affinity: the group's first member fixes its host; a later one may move it only once the
    old host holds no live member."""
    row = conn.execute(select(ga.host).where(ga.group_uuid == group_uuid).with_for_update()).first()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(c.group_anchors).values(group_uuid=group_uuid, host=host, updated_at=now))
        except IntegrityError:
            raise GroupConflict(f"server group {group_uuid} was anchored by a concurrent claim") from None
        return
    if row.host == host:
        return
    if live_members(conn, group_uuid, row.host):
        raise GroupConflict(f"server group {group_uuid} has its members on {row.host}")
    moved = conn.execute(update(c.group_anchors).where(and_(ga.group_uuid == group_uuid, ga.host == row.host))
                         .values(host=host, updated_at=now))
    if moved.rowcount != 1:
        raise GroupConflict(f"server group {group_uuid} was re-anchored by a concurrent claim")
