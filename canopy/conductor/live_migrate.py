"""os-migrateLive: migrating → ACTIVE on the destination. The destination prepares (taps, an empty disk),
the source migrates with libvirt peer-to-peer and a full block copy (no shared storage); progress is
written to the migration row while it runs; DELETE on the migration aborts it (the guest stays)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from canopy import states
from canopy.conductor import mobility as mob
from canopy.conductor.taskrun import TaskRun
from canopy.db import tables_cell as c
from canopy.rpc.base import BusError
from canopy.rpc.calls import DestroyInstance
from canopy.rpc.calls_mobility import (
    DiskInfo,
    IncomingReady,
    LiveMigrate,
    MigrationProgress,
    MigrationStats,
    PrepareLiveMigration,
)

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

LIVE_TIMEOUT_S = 3600.0


async def run_live_migrate(env: TaskEnv, run: TaskRun) -> None:
    """Live-migrate the server to payload host (or the scheduler's choice)."""
    target = mig = None
    inst: dict[str, Any] = {}
    try:
        inst = await mob.load(env, run)
        source = inst["host"]
        run.step = states.MIGRATING
        target = await mob.select_target(env, inst, inst["flavor"], force_host=run.args.host,
                                         exclude=[source])
        mig = await env.db.write(mob.new_migration, inst, run, "live-migration", source=source, dest=target,
                                  new_flavor=inst["flavor"], status="preparing", now=env.clock.now())
        spec = await mob.spec_of(env, inst)
        t0 = env.clock.now()
        ready = await mob.agent_call(env, target, PrepareLiveMigration(
            instance=spec, disk=DiskInfo(instance_uuid=run.instance_uuid, size=0, disk_format="qcow2")))
        assert isinstance(ready, IncomingReady), ready
        await env.db.write(mob.set_migration, mig, env.clock.now(), status="running")
        await _migrate_watching(env, source, spec, target, ready, mig)
        run.events.add("compute_live_migration", t0, env.clock.now(), "Success", host=source)
    except Exception as exc:
        failure = await _undo_live(env, run, inst, target, mig, exc)
        if failure is None:
            return  # an abort the user asked for: ended without a fault
        raise failure from exc
    moved: list[Any] = []

    def extra(conn: Connection, now: Any) -> None:
        mob.release(conn, source, inst["flavor"], now)
        mob.set_migration(conn, mig, now, status="completed")
        moved.extend(mob.move_ports(conn, run.instance_uuid, target, now))

    await mob.finish(env, run, extra, host=target)
    await mob.ports_moved(env, moved)


async def _migrate_watching(env: TaskEnv, source: str, spec: Any, target: str, ready: IncomingReady,
                            mig: str) -> None:
    """The source's LiveMigrate call, with its progress written to the migration every poll interval."""
    call = asyncio.create_task(mob.agent_call(env, source, LiveMigrate(
        instance=spec, dest_host=target, dest_uri=ready.uri, dest=ready), LIVE_TIMEOUT_S))
    try:
        while not call.done():
            await asyncio.wait({call}, timeout=env.settings.mobility.progress_poll_s)
            if call.done():
                break
            with contextlib.suppress(BusError):
                s = await mob.agent_call(env, source, MigrationProgress(instance_uuid=spec.uuid))
                if isinstance(s, MigrationStats) and (s.memory_total or s.disk_total):  # zeros: no job now
                    await env.db.write(mob.set_migration, mig, env.clock.now(), **s.model_dump())
        call.result()
    finally:
        call.cancel()


def _status(conn: Connection, mig: str) -> str:
    return str(conn.execute(select(c.migrations.c.status).where(c.migrations.c.uuid == mig)).scalar_one())


async def _undo_live(env: TaskEnv, run: TaskRun, inst: dict[str, Any], target: str | None, mig: str | None,
                    exc: Exception) -> mob.Undone | None:
    """The guest stays on the source; the destination's leftovers and claim go. None when the failure
    was an abort the user asked for (the task is ended here, without a fault); else the failure to raise."""
    if target and mig:
        with contextlib.suppress(BusError):
            await mob.agent_call(env, target, DestroyInstance(instance_uuid=run.instance_uuid))
    cancelled = bool(mig) and await env.db.read_fresh(_status, mig) == "cancelling"

    def extra(conn: Connection, now: Any) -> None:
        if target:
            mob.release(conn, target, inst["flavor"], now)
        if mig:
            mob.set_migration(conn, mig, now, status="cancelled" if cancelled else "error")

    if cancelled:  # an abort the user asked for is not a fault
        now = env.clock.now()
        run.events.add("compute_live_migration", now, now, "Error", details="aborted on request")
        await mob.finish(env, run, extra)
        return None
    return mob.Undone(exc, extra)
