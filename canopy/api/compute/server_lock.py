"""Server lock and unlock (Nova's os-lock-server): a locked server refuses its owner's actions until it
is unlocked; an admin's lock can only be lifted by an admin; `locked_reason` from 2.73."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, update
from starlette.requests import Request

from canopy.api.compute.common import cell_db, cloud_of, load_visible_instance
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx
from canopy.db import tables_cell as c

i = c.instances.c


def _reason(request: Request, arg: Any) -> str | None:
    """The lock's reason; only 2.73+ takes one, as a string of at most 255 characters."""
    if arg is None or arg == {}:
        return None
    if not isinstance(arg, dict):
        raise bad_request(f"Invalid input for field/attribute lock. Value: {arg!r}. It must be null or an object.")
    if mv(request) < (2, 73) or set(arg) != {"locked_reason"}:
        extra = ", ".join(f"'{k}'" for k in sorted(arg))
        raise bad_request(f"Invalid input for field/attribute lock. Additional properties are not allowed "
                          f"({extra} was unexpected)")
    reason = arg["locked_reason"]
    if not isinstance(reason, str) or len(reason) > 255:
        raise bad_request(f"Invalid input for field/attribute locked_reason. Value: {reason!r}. "
                          "It must be a string of at most 255 characters.")
    return reason


async def lock(request: Request, uuid: str, arg: Any) -> None:
    """Lock the server, recording who locked it (the owner or an admin) and why."""
    reason, rc, now = _reason(request, arg), ctx(request), cloud_of(request).clock.now()

    def write(conn: Connection) -> None:
        inst = load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        by = "owner" if inst["project_id"] == rc.project_id else "admin"
        conn.execute(update(c.instances).where(i.uuid == uuid).values(
            locked=True, locked_by=by, locked_reason=reason, updated_at=now))

    await cell_db(request).write(write)


async def unlock(request: Request, uuid: str, arg: Any) -> None:
    """Unlock the server; a lock an admin set needs an admin (Nova's unlock_override)."""
    if arg is not None and arg != {}:
        raise bad_request(f"Invalid input for field/attribute unlock. Value: {arg!r}. It must be null.")
    rc, now = ctx(request), cloud_of(request).clock.now()

    def write(conn: Connection) -> None:
        inst = load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        if inst["locked"] and inst["locked_by"] == "admin" and not rc.is_admin:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-lock-server:unlock:unlock_override "
                                "to be performed.")
        conn.execute(update(c.instances).where(i.uuid == uuid).values(
            locked=False, locked_by=None, locked_reason=None, updated_at=now))

    await cell_db(request).write(write)


ACTIONS = {"lock": lock, "unlock": unlock}
