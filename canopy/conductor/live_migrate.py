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
    from canopy.conductor.service import Conductor

LIVE_TIMEOUT_S = 3600.0


async def run_live_migrate(cond: Conductor, run: TaskRun) -> None:
    """Live-migrate the server to payload host (or the scheduler's choice)."""
    target = mig = None
    inst: dict[str, Any] = {}
    try:
        inst = await mob.load(cond, run)
        source = inst["host"]
        run.step = states.MIGRATING
        target = await mob.select_target(cond, inst, inst["flavor"], force_host=run.payload.get("host"),
                                         exclude=[source])
        mig = await cond.db.write(mob.new_migration, inst, run, "live-migration", source=source, dest=target,
                                  new_flavor=inst["flavor"], status="preparing", now=cond.clock.now())
        spec = await mob.spec_of(cond, inst)
        t0 = cond.clock.now()
        ready = await mob.agent_call(cond, target, PrepareLiveMigration(
            instance=spec, disk=DiskInfo(instance_uuid=run.instance_uuid, size=0, disk_format="qcow2")))
        assert isinstance(ready, IncomingReady), ready
        await cond.db.write(mob.set_migration, mig, cond.clock.now(), status="running")
        await _migrate_watching(cond, source, spec, target, ready, mig)
        run.events.add("compute_live_migration", t0, cond.clock.now(), "Success", host=source)
    except Exception as exc:
        await _live_failed(cond, run, inst, target, mig, exc)
        return
    moved: list[Any] = []

    def extra(conn: Connection, now: Any) -> None:
        mob.release(conn, source, inst["flavor"], now)
        mob.set_migration(conn, mig, now, status="completed")
        moved.extend(mob.move_ports(conn, run.instance_uuid, target, now))

    await mob.finish(cond, run, extra, host=target)
    await mob.ports_moved(cond, moved)


async def _migrate_watching(cond: Conductor, source: str, spec: Any, target: str, ready: IncomingReady,
                            mig: str) -> None:
    """The source's LiveMigrate call, with its progress written to the migration every poll interval."""
    call = asyncio.create_task(mob.agent_call(cond, source, LiveMigrate(
        instance=spec, dest_host=target, dest_uri=ready.uri, dest=ready), LIVE_TIMEOUT_S))
    try:
        while not call.done():
            await asyncio.wait({call}, timeout=cond.settings.mobility.progress_poll_s)
            if call.done():
                break
            with contextlib.suppress(BusError):
                s = await mob.agent_call(cond, source, MigrationProgress(instance_uuid=spec.uuid))
                if isinstance(s, MigrationStats) and (s.memory_total or s.disk_total):  # zeros: no job now
                    await cond.db.write(mob.set_migration, mig, cond.clock.now(), **s.model_dump())
        call.result()
    finally:
        call.cancel()


def _status(conn: Connection, mig: str) -> str:
    return str(conn.execute(select(c.migrations.c.status).where(c.migrations.c.uuid == mig)).scalar_one())


async def _live_failed(cond: Conductor, run: TaskRun, inst: dict[str, Any], target: str | None, mig: str | None,
                       exc: Exception) -> None:
    """The guest stays on the source; the destination's leftovers and claim go."""
    if target and mig:
        with contextlib.suppress(BusError):
            await mob.agent_call(cond, target, DestroyInstance(instance_uuid=run.instance_uuid))
    cancelled = bool(mig) and await cond.db.read_fresh(_status, mig) == "cancelling"

    def extra(conn: Connection, now: Any) -> None:
        if target:
            mob.release(conn, target, inst["flavor"], now)
        if mig:
            mob.set_migration(conn, mig, now, status="cancelled" if cancelled else "error")

    if cancelled:  # an abort the user asked for is not a fault
        now = cond.clock.now()
        run.events.add("compute_live_migration", now, now, "Error", details="aborted on request")
        await mob.finish(cond, run, extra)
        return
    await mob.fail(cond, run, "live_migrate", exc, extra)
