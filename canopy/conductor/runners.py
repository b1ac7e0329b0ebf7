"""One table of task runners, by task kind, and the one place a failed task is caught and ended.

A runner drives its task to the end; when it raises, the dispatch hands the exception to the kind's
failure handler, which records the fault and ends the task (the instance's state, the action, the
events, the task row). A kind without a handler (delete) lets the exception through: its task keeps
its lease until it expires, and the sweeper gives it to another conductor to finish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from canopy import states
from canopy.conductor import (
    backup,
    build,
    evacuate,
    interfaces,
    live_migrate,
    migrate,
    power,
    rebuild,
    rescue,
    resize,
    shelve,
    snapshot,
)
from canopy.conductor import mobility as mob
from canopy.conductor.env import TaskEnv
from canopy.conductor.taskrun import TaskRun

log = logging.getLogger("canopy.conductor")

Run = Callable[[TaskEnv, TaskRun], Awaitable[None]]
Fail = Callable[[TaskEnv, TaskRun, Exception], Awaitable[None]]


@dataclass(frozen=True)
class Runner:
    """How one kind of task runs, and how it ends when it fails."""

    run: Run
    fail: Fail | None


def _mobility(run: Run, **values: str) -> Runner:
    """A mobility task: its failure is a fault on the instance, which keeps its vm_state unless `values` say."""

    async def fail(env: TaskEnv, task: TaskRun, exc: Exception) -> None:
        await mob.fail(env, task, task.kind, exc, **values)

    return Runner(run, fail)


async def _resize(env: TaskEnv, run: TaskRun) -> None:
    await resize.run_resize(env, run, "resize")


RUNNERS: dict[str, Runner] = {
    "build": Runner(build.run_build, build.fail_build),
    **{kind: Runner(power.run_power, power.power_failed) for kind in power.POWER_KINDS},
    "delete": Runner(power.run_delete, None),
    "resize": _mobility(_resize),
    "migrate": _mobility(migrate.run_migrate),
    "confirm_resize": _mobility(resize.run_confirm),
    "revert_resize": _mobility(resize.run_revert),
    "snapshot": Runner(snapshot.run_snapshot, snapshot.snapshot_failed),
    "rebuild": _mobility(rebuild.run_rebuild, vm_state=states.ERROR),
    "evacuate": _mobility(evacuate.run_evacuate),
    "rescue": _mobility(rescue.run_rescue),
    "unrescue": _mobility(rescue.run_unrescue),
    "live_migrate": _mobility(live_migrate.run_live_migrate),
    "backup": Runner(backup.run_backup, snapshot.snapshot_failed),
    "shelve": Runner(shelve.run_shelve, shelve.shelve_failed),
    "shelve_offload": _mobility(shelve.run_shelve_offload),
    "unshelve": Runner(shelve.run_unshelve, shelve.unshelve_failed),
    "attach_interface": Runner(interfaces.run_attach_interface, interfaces.attach_failed),
    "detach_interface": _mobility(interfaces.run_detach_interface),
}


async def dispatch(env: TaskEnv, run: TaskRun) -> None:
    """Drive one task to its end with its kind's runner; a failure is recorded and ends the task."""
    runner = RUNNERS.get(run.kind)
    if runner is None:
        raise ValueError(f"unknown task kind {run.kind!r}")
    try:
        await runner.run(env, run)
    except Exception as exc:
        if runner.fail is None:
            raise
        await runner.fail(env, run, exc)


async def auto_confirm_loop(env: TaskEnv) -> None:
    """Confirm resizes left in VERIFY_RESIZE longer than mobility.resize_confirm_window_s."""
    while True:
        await asyncio.sleep(env.settings.mobility.auto_confirm_interval_s)
        try:
            await resize.auto_confirm(env)
        except Exception:
            log.exception("resize auto-confirm failed")
