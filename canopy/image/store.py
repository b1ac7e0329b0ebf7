"""Image records (plain functions of a Connection) and image data (one file per image in the store folder)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, func, insert, or_, select, update

from canopy.db import tables_global as g

CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
VISIBILITIES = ("public", "private", "shared", "community")
STATUSES = ("queued", "saving", "active", "killed", "deleted", "pending_delete", "deactivated", "uploading",
            "importing")
SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at",
             "min_disk", "min_ram", "owner", "visibility", "protected")
# Columns a list may filter on by equality.
EQUALITY_FILTERS = ("name", "status", "owner", "disk_format", "container_format", "protected")
CHUNK = 64 * 1024
_NULLABLE_TEXT = ("name", "owner", "container_format", "disk_format")

c = g.images.c


@dataclass
class ListQuery:
    """What an image list asks for, on behalf of whom."""

    project_id: str | None
    is_admin: bool
    limit: int
    visibility: str | None = None
    equals: dict[str, Any] = field(default_factory=dict)
    size_min: int | None = None
    size_max: int | None = None
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    sort: list[tuple[str, str]] = field(default_factory=lambda: [("created_at", "desc")])
    marker: dict[str, Any] | None = None
    member_status: str = "accepted"  # which offered images a member lists ("all": any answer)


def is_visible(image: dict[str, Any], project_id: str | None, is_admin: bool, membership: str | None = None
               ) -> bool:
    """Whether a caller may see an image: admins all; others public, community, their project's own, and
    shared images offered to their project (`membership`: its status, whatever it is, as in Glance)."""
    if is_admin or image["visibility"] in ("public", "community") or image["owner"] == project_id:
        return True
    return image["visibility"] == "shared" and membership is not None


def get_visible_image(conn: Connection, image_id: str, project_id: str | None, is_admin: bool
                      ) -> dict[str, Any] | None:
    """An image record if the caller may see it, else None (a membership is read only for a shared image
    of another project)."""
    image = get_image(conn, image_id)
    if image is None or is_visible(image, project_id, is_admin):
        return image
    if image["visibility"] != "shared" or project_id is None:
        return None
    m = g.image_members.c
    status = conn.execute(select(m.status).where(m.image_id == image_id, m.member_id == project_id)).scalar()
    return image if status is not None else None


def get_image(conn: Connection, image_id: str) -> dict[str, Any] | None:
    """One image record, or None."""
    row = conn.execute(select(g.images).where(c.id == image_id)).mappings().first()
    return dict(row) if row else None


def _offered(q: ListQuery) -> ColumnElement[bool]:
    """Shared images offered to the caller's project, answered as the list asks."""
    m = g.image_members.c
    mine = select(m.image_id).where(m.member_id == q.project_id)
    if q.member_status != "all":
        mine = mine.where(m.status == q.member_status)
    return and_(c.visibility == "shared", c.id.in_(mine))


def _visibility_clause(q: ListQuery) -> ColumnElement[bool] | None:
    v = q.visibility
    if q.is_admin:
        return c.visibility == v if v and v != "all" else None
    own = c.owner == q.project_id
    if v is None:
        return or_(c.visibility == "public", own, _offered(q))
    if v == "all":
        return or_(c.visibility.in_(("public", "community")), own, _offered(q))
    if v in ("public", "community"):
        return c.visibility == v
    if v == "shared":
        return or_(and_(c.visibility == v, own), _offered(q))
    return and_(c.visibility == v, own)


def _sort_expr(key: str) -> Any:
    if key in _NULLABLE_TEXT:
        return func.coalesce(c[key], "")
    if key == "size":
        return func.coalesce(c.size, -1)
    return c[key]


def _sort_value(key: str, row: dict[str, Any]) -> Any:
    value = row[key]
    if value is None:
        return "" if key in _NULLABLE_TEXT else -1
    return value


def _ordering(q: ListQuery) -> list[tuple[str, str]]:
    keys = list(q.sort)
    if all(k != "id" for k, _ in keys):
        keys.append(("id", keys[-1][1] if keys else "desc"))
    return keys


def _after_marker(keys: list[tuple[str, str]], marker: dict[str, Any]) -> ColumnElement[bool]:
    """Rows that sort strictly after the marker (keyset pagination)."""
    terms: list[ColumnElement[bool]] = []
    equal: list[ColumnElement[bool]] = []
    for key, direction in keys:
        expr, value = _sort_expr(key), _sort_value(key, marker)
        terms.append(and_(*equal, expr < value if direction == "desc" else expr > value))
        equal.append(expr == value)
    return or_(*terms)


def _matches_extra(image: dict[str, Any], q: ListQuery) -> bool:
    if any(t not in image["tags"] for t in q.tags):
        return False
    return all(image["properties"].get(k) == v for k, v in q.properties.items())


def list_images(conn: Connection, q: ListQuery) -> list[dict[str, Any]]:
    """The images a list asks for, in order, after its marker: up to `limit + 1` (one more says there is more)."""
    stmt = select(g.images)
    where = [_visibility_clause(q), *(c[k] == v for k, v in q.equals.items())]
    if q.size_min is not None:
        where.append(c.size >= q.size_min)
    if q.size_max is not None:
        where.append(c.size <= q.size_max)
    keys = _ordering(q)
    if q.marker is not None:
        where.append(_after_marker(keys, q.marker))
    stmt = stmt.where(*(w for w in where if w is not None))
    stmt = stmt.order_by(*(_sort_expr(k).desc() if d == "desc" else _sort_expr(k).asc() for k, d in keys))
    if not q.tags and not q.properties:
        return [dict(r) for r in conn.execute(stmt.limit(q.limit + 1)).mappings()]
    # Tags and properties live in JSON columns: filter those here, then take the page.
    rows = (dict(r) for r in conn.execute(stmt).mappings())
    return [r for r in rows if _matches_extra(r, q)][: q.limit + 1]


def create_image(conn: Connection, values: dict[str, Any]) -> dict[str, Any] | None:
    """Insert an image record; None when its id is taken, now or by a deleted image."""
    if get_image(conn, values["id"]) is not None or id_was_used(conn, values["id"]):
        return None
    conn.execute(insert(g.images).values(**values))
    return get_image(conn, values["id"])


def save_image(conn: Connection, image_id: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """Update an image record; None when it no longer exists."""
    if conn.execute(update(g.images).where(c.id == image_id).values(**values)).rowcount == 0:
        return None
    return get_image(conn, image_id)


def delete_image(conn: Connection, image_id: str, now: dt.datetime | None = None) -> bool:
    """Delete an image record and its memberships, keeping its id as used (never reused); False when there
    was none."""
    conn.execute(delete(g.image_members).where(g.image_members.c.image_id == image_id))
    gone = conn.execute(delete(g.images).where(c.id == image_id)).rowcount > 0
    if gone and now is not None:
        conn.execute(insert(g.deleted_images).values(id=image_id, deleted_at=now))
    return gone


def id_was_used(conn: Connection, image_id: str) -> bool:
    """Whether an image with this id existed once and was deleted."""
    d = g.deleted_images.c
    return conn.execute(select(d.id).where(d.id == image_id)).first() is not None


def start_upload(conn: Connection, image_id: str, now: dt.datetime) -> str | None:
    """Move a queued image to `saving`; None on success, else the status that prevents the upload."""
    moved = conn.execute(update(g.images).where(c.id == image_id, c.status == "queued")
                         .values(status="saving", updated_at=now)).rowcount
    if moved:
        return None
    return conn.execute(select(c.status).where(c.id == image_id)).scalar() or "deleted"


def finish_upload(conn: Connection, image_id: str, size: int, checksum: str, sha512: str, now: dt.datetime) -> bool:
    """Record the uploaded data and make the image active; False when the image went away meanwhile."""
    return conn.execute(update(g.images).where(c.id == image_id, c.status == "saving").values(
        status="active", size=size, checksum=checksum, os_hash_algo="sha512", os_hash_value=sha512,
        updated_at=now)).rowcount > 0


def set_status(conn: Connection, image_id: str, old: str, new: str, now: dt.datetime) -> bool:
    """Move an image from status `old` to `new` (deactivate, reactivate); False when it was not in `old`."""
    return conn.execute(update(g.images).where(c.id == image_id, c.status == old)
                        .values(status=new, updated_at=now)).rowcount > 0


def abort_upload(conn: Connection, image_id: str, now: dt.datetime) -> None:
    """Put an image whose upload failed back to `queued`."""
    conn.execute(update(g.images).where(c.id == image_id, c.status == "saving")
                 .values(status="queued", updated_at=now))


# --- data ---------------------------------------------------------------------------------------------------

def data_path(image_dir: Path, image_id: str) -> Path:
    """Where an image's data lives (the id comes from a record, never straight from a request)."""
    return image_dir / image_id


def remove_data(image_dir: Path, image_id: str) -> None:
    """Delete an image's data, if it has any."""
    data_path(image_dir, image_id).unlink(missing_ok=True)


class DataWriter:
    """Receives an upload into a temporary file beside the final one, hashing as it goes."""

    def __init__(self, image_dir: Path, image_id: str) -> None:
        self.final = data_path(image_dir, image_id)
        fd, tmp = tempfile.mkstemp(prefix=f".{image_id}.", suffix=".part", dir=image_dir)
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")
        self.size = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha512 = hashlib.sha512()

    def write(self, chunk: bytes) -> None:
        """Append a chunk of data."""
        self.file.write(chunk)
        self.md5.update(chunk)
        self.sha512.update(chunk)
        self.size += len(chunk)

    def commit(self) -> tuple[int, str, str]:
        """Flush to disk and move into place; the size, md5 and sha512 of the data."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.final)
        return self.size, self.md5.hexdigest(), self.sha512.hexdigest()

    def discard(self) -> None:
        """Drop a failed upload."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)


async def read_data(path: Path, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """An image's data in chunks, read off the event loop."""
    with path.open("rb") as f:
        while data := await asyncio.to_thread(f.read, chunk):
            yield data
