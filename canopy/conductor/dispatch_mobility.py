"""Which mobility module drives which task kind, and the auto-confirm loop for resizes (issue 6)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from canopy.conductor import evacuate, live_migrate, migrate, rebuild, rescue, resize, snapshot
from canopy.conductor.taskrun import TaskRun

if TYPE_CHECKING:
    from canopy.conductor.service import Conductor

log = logging.getLogger("canopy.conductor")


Runner = Callable[["Conductor", TaskRun], Awaitable[None]]

RUNNERS: dict[str, Runner] = {
    "resize": lambda cond, run: resize.run_resize(cond, run, "resize"),
    "migrate": migrate.run_migrate,
    "confirm_resize": resize.run_confirm,
    "revert_resize": resize.run_revert,
    "snapshot": snapshot.run_snapshot,
    "rebuild": rebuild.run_rebuild,
    "evacuate": evacuate.run_evacuate,
    "rescue": rescue.run_rescue,
    "unrescue": rescue.run_unrescue,
    "live_migrate": live_migrate.run_live_migrate,
}


async def run_mobility(cond: Conductor, run: TaskRun, kind: str) -> None:
    """Drive one mobility task to its end (every path writes its result and deletes the task)."""
    runner = RUNNERS.get(kind)
    if runner is None:
        raise ValueError(f"unknown mobility task kind {kind!r}")
    await runner(cond, run)


async def auto_confirm_loop(cond: Conductor) -> None:
    """Confirm resizes left in VERIFY_RESIZE longer than mobility.resize_confirm_window_s."""
    while True:
        await asyncio.sleep(cond.settings.mobility.auto_confirm_interval_s)
        try:
            await resize.auto_confirm(cond)
        except Exception:
            log.exception("resize auto-confirm failed")
