"""Resize and cold migration: resize_prep (a target claimed) → resize_migrating (the source stops the guest
and sets it aside) → resize_migrated → resize_finish (the target pulls the disk, grows it, starts the
guest) → vm_state resized until confirmResize (the source drops what it kept, its old claim is released)
or revertResize (the target's guest goes, the source's comes back, the new claim is released).

A cold migration is a resize to the same flavor on another host. Claims, as in Nova: while resized, the
source holds the old flavor and the target the new one (both, on one host, for a resize in place).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select

from canopy import states
from canopy.conductor import mobility as mob
from canopy.conductor.taskrun import TaskRun
from canopy.db import tables_cell as c
from canopy.rpc.base import BusError
from canopy.rpc.calls import DestroyInstance, InstanceState
from canopy.rpc.calls_mobility import ConfirmMigration, DiskInfo, FinishMigration, MigrateOut, RevertMigration
from canopy.rpc.tasks import ActionPayload, dump_payload
from canopy.states import PowerState

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

DISK_TIMEOUT_S = 3600.0  # a disk copy between agents may take long; the task's lease is kept meanwhile


async def run_resize(env: TaskEnv, run: TaskRun, kind: str) -> None:
    """Drive a resize (kind "resize") or a cold migration (kind "migrate") to vm_state resized."""
    inst = await mob.load(env, run)
    source, new = inst["host"], _new_flavor(run, inst)
    power_on = inst["vm_state"] == states.ACTIVE
    target = mig = None
    disk: DiskInfo | None = None
    try:
        run.step = states.RESIZE_PREP
        if not source:
            raise mob.TaskFailed("the instance has no host")
        same = kind == "resize" and env.settings.mobility.allow_resize_to_same_host
        target = await mob.select_target(env, inst, new, force_host=run.args.host,
                                         exclude=[] if same else [source])
        now = env.clock.now()
        mig = await env.db.write(mob.new_migration, inst, run, "resize" if kind == "resize" else "migration",
                                  source=source, dest=target, new_flavor=new, status="migrating", now=now)
        await mob.set_step(env, run, states.RESIZE_MIGRATING)
        t0 = env.clock.now()
        disk = await mob.agent_call(env, source, MigrateOut(instance_uuid=run.instance_uuid,
                                                             timeout_s=env.settings.conductor.stop_timeout_s))
        assert isinstance(disk, DiskInfo)
        run.events.add("compute_resize_instance", t0, env.clock.now(), "Success", host=source)
        await mob.set_step(env, run, states.RESIZE_MIGRATED)
        await env.db.write(mob.set_migration, mig, env.clock.now(), status="post-migrating")
        await mob.set_step(env, run, states.RESIZE_FINISH)
        t0 = env.clock.now()
        spec = await mob.spec_of(env, inst, flavor=new)
        reply = await mob.agent_call(env, target, FinishMigration(
            instance=spec, source_host=source, disk=disk, power_on=power_on), DISK_TIMEOUT_S)
        assert isinstance(reply, InstanceState)
        run.events.add("compute_finish_resize", t0, env.clock.now(), "Success", host=target)
    except Exception as exc:
        raise await _undo_resize(env, run, inst, exc, target, mig, disk is not None, power_on) from exc
    moved: list[Any] = []

    def extra(conn: Connection, now: Any) -> None:
        mob.set_migration(conn, mig, now, status="finished")
        moved.extend(mob.move_ports(conn, run.instance_uuid, target, now))

    await mob.finish(env, run, extra, vm_state=states.RESIZED, host=target, flavor=new, flavor_id=new["id"],
                     power_state=reply.power_state)
    await mob.ports_moved(env, moved)


def _new_flavor(run: TaskRun, inst: dict[str, Any]) -> dict[str, Any]:
    """The flavor the instance moves to, as its row keeps flavors (a migration keeps its own)."""
    return run.args.flavor.instance_view() if run.args.flavor else dict(inst["flavor"])


async def _undo_resize(env: TaskEnv, run: TaskRun, inst: dict[str, Any], exc: Exception, target: str | None,
                       mig: str | None, set_aside: bool, power_on: bool) -> mob.Undone:
    """Undo: the target's claim goes back; a guest set aside on the source is restored there."""
    if set_aside:
        try:
            if target and target != inst["host"]:
                await mob.agent_call(env, target, DestroyInstance(instance_uuid=run.instance_uuid))
            spec = await mob.spec_of(env, inst)
            await mob.agent_call(env, inst["host"], RevertMigration(
                instance_uuid=run.instance_uuid, ports=spec.ports, power_on=power_on))
        except BusError as undo:
            exc = mob.TaskFailed(f"{exc}; restoring the guest on {inst['host']} failed too: {undo}")
    new = _new_flavor(run, inst)

    def extra(conn: Connection, now: Any) -> None:
        if target:
            mob.release(conn, target, new, now)
        if mig:
            mob.set_migration(conn, mig, now, status="error")

    return mob.Undone(exc, extra)


async def run_confirm(env: TaskEnv, run: TaskRun) -> None:
    """Keep the resize: the source deletes what it set aside and its old claim is released."""
    inst = await mob.load(env, run)
    mig = await env.db.read_fresh(mob.last_migration, run.instance_uuid, "finished")
    run.step = states.RESIZE_CONFIRMING
    if mig is None:
        raise mob.TaskFailed("no finished resize or migration to confirm")
    t0 = env.clock.now()
    await mob.agent_call(env, mig["source_compute"], ConfirmMigration(instance_uuid=run.instance_uuid))
    run.events.add("compute_confirm_resize", t0, env.clock.now(), "Success", host=mig["source_compute"])

    def extra(conn: Connection, now: Any) -> None:
        mob.release(conn, mig["source_compute"], mig["old_flavor"], now)
        mob.set_migration(conn, mig["uuid"], now, status="confirmed")

    running = inst["power_state"] == PowerState.RUNNING
    await mob.finish(env, run, extra, vm_state=states.ACTIVE if running else states.STOPPED)


async def run_revert(env: TaskEnv, run: TaskRun) -> None:
    """Undo the resize: the target's guest goes, the source's comes back with the old flavor and disk."""
    inst = await mob.load(env, run)
    mig = await env.db.read_fresh(mob.last_migration, run.instance_uuid, "finished")
    run.step = states.RESIZE_REVERTING
    if mig is None:
        raise mob.TaskFailed("no finished resize or migration to revert")
    source, target = mig["source_compute"], mig["dest_compute"]
    t0 = env.clock.now()
    if target != source:
        await mob.agent_call(env, target, DestroyInstance(instance_uuid=run.instance_uuid))
    old_spec = await mob.spec_of(env, {**inst, "flavor": mig["old_flavor"]})
    power_on = mig["old_vm_state"] == states.ACTIVE
    reply = await mob.agent_call(env, source, RevertMigration(
        instance_uuid=run.instance_uuid, ports=old_spec.ports, power_on=power_on))
    assert isinstance(reply, InstanceState)
    run.events.add("compute_revert_resize", t0, env.clock.now(), "Success", host=source)
    moved: list[Any] = []

    def extra(conn: Connection, now: Any) -> None:
        mob.release(conn, target, mig["new_flavor"], now)
        mob.set_migration(conn, mig["uuid"], now, status="reverted")
        moved.extend(mob.move_ports(conn, run.instance_uuid, source, now))

    old = mig["old_flavor"]
    await mob.finish(env, run, extra, vm_state=mig["old_vm_state"], host=source, flavor=old, flavor_id=old["id"],
                     power_state=reply.power_state)
    await mob.ports_moved(env, moved)


def due_confirms(conn: Connection, older_than: Any, limit: int = 50) -> list[dict[str, Any]]:
    """Resized instances whose resize finished before `older_than` and that run no task (auto-confirm)."""
    m, i = c.migrations.c, c.instances.c
    rows = conn.execute(
        select(i.uuid, i.project_id, i.user_id)
        .select_from(c.migrations.join(c.instances, i.uuid == m.instance_uuid))
        .where(m.status == "finished", m.updated_at < older_than, i.vm_state == states.RESIZED,
               i.task_state.is_(None), i.deleted.is_(False))
        .limit(limit)).mappings()
    return [dict(r) for r in rows]


def queue_confirm(conn: Connection, inst: dict[str, Any], request_id: str, now: Any) -> dict[str, Any] | None:
    """Start a confirmResize as the API would (one conditional state change); None if it lost the race."""
    from sqlalchemy import update

    i = c.instances.c
    changed = conn.execute(update(c.instances).where(
        i.uuid == inst["uuid"], i.vm_state == states.RESIZED, i.task_state.is_(None))
        .values(task_state=states.RESIZE_CONFIRMING, updated_at=now))
    if changed.rowcount != 1:
        return None
    action_id = conn.execute(insert(c.instance_actions).values(
        instance_uuid=inst["uuid"], request_id=request_id, action="confirmResize", user_id=inst["user_id"],
        project_id=inst["project_id"], start_time=now, updated_at=now)).inserted_primary_key
    assert action_id is not None
    task = {"instance_uuid": inst["uuid"], "kind": "confirm_resize", "action_id": action_id[0],
            "payload": dump_payload(ActionPayload()), "request_id": request_id, "attempts": 0, "created_at": now}
    task_id = conn.execute(insert(c.tasks).values(**task)).inserted_primary_key
    assert task_id is not None
    return {**task, "id": task_id[0]}


async def auto_confirm(env: TaskEnv) -> int:
    """Confirm resizes left unconfirmed longer than mobility.resize_confirm_window_s; how many started."""
    import datetime as dt
    import uuid as uuidlib

    from canopy.rpc.base import Target
    from canopy.rpc.calls import WakeTask

    window = env.settings.mobility.resize_confirm_window_s
    if window <= 0:
        return 0
    now = env.clock.now()
    due = await env.db.read_fresh(due_confirms, now - dt.timedelta(seconds=window))
    started = 0
    for inst in due:
        task = await env.db.write(queue_confirm, inst, f"req-{uuidlib.uuid4()}", now)
        if task is not None:
            started += 1
            await env.bus.cast(Target("conductor"), WakeTask(task_id=task["id"], instance_uuid=inst["uuid"],
                                                              task_kind="confirm_resize"))
    return started
