"""Cold migration: a resize to the same flavor on another host (the scheduler's choice, or an admin's),
with the disk copied by the agents; it ends in vm_state resized until confirmed or reverted, as in Nova."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canopy.conductor.resize import run_resize
from canopy.conductor.taskrun import TaskRun

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv


async def run_migrate(env: TaskEnv, run: TaskRun) -> None:
    """Drive a cold migration (the resize flow, never to the same host)."""
    await run_resize(env, run, "migrate")
