"""Claims: capacity is taken with one conditional UPDATE, so any number of schedulers sharing one
database never overcommit a host; a lost race is a row count of zero."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, update

from canopy.db import tables_cell as c

h = c.hosts.c


def claim(conn: Connection, host_id: int, vcpus: int, memory_mb: int, disk_gb: int, now: dt.datetime) -> bool:
    """Take the resources on a host if they still fit; False if another claim got there first."""
    stmt = (
        update(c.hosts)
        .where(
            h.id == host_id,
            h.enabled.is_(True),
            h.vcpus_used + vcpus <= h.vcpus * h.cpu_allocation_ratio - h.reserved_vcpus,
            h.memory_mb_used + memory_mb <= h.memory_mb * h.ram_allocation_ratio - h.reserved_memory_mb,
            h.local_gb_used + disk_gb <= h.local_gb * h.disk_allocation_ratio - h.reserved_disk_gb,
        )
        .values(
            vcpus_used=h.vcpus_used + vcpus,
            memory_mb_used=h.memory_mb_used + memory_mb,
            local_gb_used=h.local_gb_used + disk_gb,
            running_vms=h.running_vms + 1,
            updated_at=now,
        )
    )
    return conn.execute(stmt).rowcount == 1


def release(conn: Connection, host: str, vcpus: int, memory_mb: int, disk_gb: int, now: dt.datetime) -> None:
    """Give back what a claim took (failure, delete)."""
    conn.execute(
        update(c.hosts)
        .where(h.name == host)
        .values(
            vcpus_used=h.vcpus_used - vcpus,
            memory_mb_used=h.memory_mb_used - memory_mb,
            local_gb_used=h.local_gb_used - disk_gb,
            running_vms=h.running_vms - 1,
            updated_at=now,
        )
    )
