"""Record helpers that more than one layer writes with: the api when a request fails half-way, the conductor
when a task ends. They sit here, under both, so that neither imports the other."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, CursorResult, update

from canopy.db import tables_global as g


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT of one row gave it."""
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row has its primary key"
    return int(key[0])


def release_quota(conn: Connection, project_id: str, instances: int, cores: int, ram: int) -> None:
    """Give back a project's quota usage (a server deleted, or a create that failed after reserving)."""
    q = g.quota_usage.c
    conn.execute(update(g.quota_usage).where(q.project_id == project_id).values(
        instances_used=q.instances_used - instances, cores_used=q.cores_used - cores, ram_used=q.ram_used - ram))
