"""Which mobility module drives which task kind, and the auto-confirm loop for resizes (issue 6)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from canopy.conductor import evacuate, live_migrate, migrate, rebuild, rescue, resize, snapshot
from canopy.conductor.taskrun import TaskRun

if TYPE_CHECKING:
    from canopy.conductor.service import Conductor

log = logging.getLogger("canopy.conductor")


async def run_mobility(cond: Conductor, run: TaskRun, kind: str) -> None:
    """Drive one mobility task to its end (every path writes its result and deletes the task)."""
    if kind == "resize":
        await resize.run_resize(cond, run, "resize")
    elif kind == "migrate":
        await migrate.run_migrate(cond, run)
    elif kind == "confirm_resize":
        await resize.run_confirm(cond, run)
    elif kind == "revert_resize":
        await resize.run_revert(cond, run)
    elif kind == "snapshot":
        await snapshot.run_snapshot(cond, run)
    elif kind == "rebuild":
        await rebuild.run_rebuild(cond, run)
    elif kind == "evacuate":
        await evacuate.run_evacuate(cond, run)
    elif kind == "rescue":
        await rescue.run_rescue(cond, run)
    elif kind == "unrescue":
        await rescue.run_unrescue(cond, run)
    elif kind == "live_migrate":
        await live_migrate.run_live_migrate(cond, run)
    else:
        raise ValueError(f"unknown mobility task kind {kind!r}")


async def auto_confirm_loop(cond: Conductor) -> None:
    """Confirm resizes left in VERIFY_RESIZE longer than mobility.resize_confirm_window_s."""
    while True:
        await asyncio.sleep(cond.settings.mobility.auto_confirm_interval_s)
        try:
            await resize.auto_confirm(cond)
        except Exception:
            log.exception("resize auto-confirm failed")
