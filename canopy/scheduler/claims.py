"""Claims: capacity is taken with one conditional UPDATE, so any number of schedulers sharing one
database never overcommit a host; a lost race is a row count of zero."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, bindparam, update

from canopy.db import tables_cell as c

h = c.hosts.c


_V, _R, _D = bindparam("w_vcpus"), bindparam("w_ram"), bindparam("w_disk")
_CLAIM = (
    update(c.hosts)
    .where(
        h.id == bindparam("w_id"),
        h.enabled.is_(True),
        h.vcpus_used + _V <= h.vcpus * h.cpu_allocation_ratio - h.reserved_vcpus,
        h.memory_mb_used + _R <= h.memory_mb * h.ram_allocation_ratio - h.reserved_memory_mb,
        h.local_gb_used + _D <= h.local_gb * h.disk_allocation_ratio - h.reserved_disk_gb,
    )
    .values(vcpus_used=h.vcpus_used + _V, memory_mb_used=h.memory_mb_used + _R, local_gb_used=h.local_gb_used + _D,
            running_vms=h.running_vms + 1, updated_at=bindparam("w_now"))
)
_RELEASE = (
    update(c.hosts)
    .where(h.name == bindparam("w_host"))
    .values(vcpus_used=h.vcpus_used - _V, memory_mb_used=h.memory_mb_used - _R, local_gb_used=h.local_gb_used - _D,
            running_vms=h.running_vms - 1, updated_at=bindparam("w_now"))
)


def claim(conn: Connection, host_id: int, vcpus: int, memory_mb: int, disk_gb: int, now: dt.datetime) -> bool:
    """Take the resources on a host if they still fit; False if another claim got there first."""
    params = {"w_id": host_id, "w_vcpus": vcpus, "w_ram": memory_mb, "w_disk": disk_gb, "w_now": now}
    return conn.execute(_CLAIM, params).rowcount == 1


def release(conn: Connection, host: str, vcpus: int, memory_mb: int, disk_gb: int, now: dt.datetime) -> None:
    """Give back what a claim took (failure, delete)."""
    conn.execute(_RELEASE, {"w_host": host, "w_vcpus": vcpus, "w_ram": memory_mb, "w_disk": disk_gb, "w_now": now})
