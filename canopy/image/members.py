"""Image members (global table): the projects a shared image is offered to, and whether each took it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from canopy.clock import isotime
from canopy.db import tables_global as g

STATUSES = ("pending", "accepted", "rejected")
m = g.image_members.c


def get_member(conn: Connection, image_id: str, member_id: str) -> dict[str, Any] | None:
    """One membership, or None."""
    row = conn.execute(select(g.image_members).where(m.image_id == image_id, m.member_id == member_id)
                       ).mappings().first()
    return dict(row) if row else None


def list_members(conn: Connection, image_id: str, member_id: str | None = None) -> list[dict[str, Any]]:
    """An image's memberships (only `member_id`'s when given), oldest first."""
    stmt = select(g.image_members).where(m.image_id == image_id).order_by(m.created_at, m.member_id)
    if member_id is not None:
        stmt = stmt.where(m.member_id == member_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def count_members(conn: Connection, image_id: str) -> int:
    """How many projects an image is offered to."""
    return int(conn.execute(select(func.count()).where(m.image_id == image_id)).scalar_one())


def add_member(conn: Connection, image_id: str, member_id: str, now: dt.datetime) -> dict[str, Any] | None:
    """Offer an image to a project (pending); None when it already is."""
    if get_member(conn, image_id, member_id) is not None:
        return None
    row = {"image_id": image_id, "member_id": member_id, "status": "pending", "created_at": now, "updated_at": now}
    conn.execute(insert(g.image_members).values(**row))
    return row


def set_status(conn: Connection, image_id: str, member_id: str, status: str, now: dt.datetime
               ) -> dict[str, Any] | None:
    """A member's answer; the updated membership, or None when there is none."""
    done = conn.execute(update(g.image_members).where(m.image_id == image_id, m.member_id == member_id)
                        .values(status=status, updated_at=now)).rowcount
    return get_member(conn, image_id, member_id) if done else None


def remove_member(conn: Connection, image_id: str, member_id: str) -> bool:
    """Withdraw an image from a project; False when it was not offered."""
    return conn.execute(delete(g.image_members).where(m.image_id == image_id, m.member_id == member_id)
                        ).rowcount > 0


def remove_all(conn: Connection, image_id: str) -> None:
    """Drop every membership of an image (when it is deleted)."""
    conn.execute(delete(g.image_members).where(m.image_id == image_id))


def member_view(row: dict[str, Any]) -> dict[str, Any]:
    """A membership as Glance shows it."""
    return {"image_id": row["image_id"], "member_id": row["member_id"], "status": row["status"],
            "created_at": isotime(row["created_at"]), "updated_at": isotime(row["updated_at"]),
            "schema": "/v2/schemas/member"}
