"""evacuate: a server whose host's agent is down is rebuilt elsewhere from its image (rebuilding →
rebuild_spawning → its old vm_state), keeping its UUID, ports and addresses. The dead host's claim is
released; the evacuation stays `done` until that agent comes back: its reconcile removes the old guest
and its files (conductor/hostsync.py lists the host's pending evacuations) and the evacuation becomes
`completed`, as in Nova."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from canopy import states
from canopy.conductor import mobility as mob
from canopy.conductor.taskrun import TaskRun
from canopy.rpc.calls import PowerAction, SpawnInstance
from canopy.states import PowerState

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv


async def run_evacuate(env: TaskEnv, run: TaskRun) -> None:
    """Spawn the server on another host (the scheduler's, or payload host) and move its records there."""
    target = mig = None
    inst: dict[str, Any] = {}
    try:
        inst = await mob.load(env, run)
        source = inst["host"]
        run.step = states.REBUILDING
        target = await mob.select_target(env, inst, inst["flavor"], force_host=run.args.host,
                                         exclude=[source] if source else [])
        mig = await env.db.write(mob.new_migration, inst, run, "evacuation", source=source, dest=target,
                                  new_flavor=inst["flavor"], status="accepted", now=env.clock.now())
        await mob.set_step(env, run, states.REBUILD_SPAWNING)
        t0 = env.clock.now()
        spec = await mob.spec_of(env, inst, image_id=run.args.image_id)
        await mob.agent_call(env, target, SpawnInstance(instance=spec),
                             env.settings.conductor.agent_call_timeout_s * 2)
        stopped = inst["vm_state"] == states.STOPPED
        if stopped:  # as in Nova: a stopped server stays stopped where it lands
            await mob.agent_call(env, target, PowerAction(instance_uuid=run.instance_uuid, action="stop_hard"))
        run.events.add("compute_rebuild_instance", t0, env.clock.now(), "Success", host=target)
    except Exception as exc:
        def undo(conn: Connection, now: Any) -> None:
            if target:
                mob.release(conn, target, inst["flavor"], now)
            if mig:
                mob.set_migration(conn, mig, now, status="failed")

        raise mob.Undone(exc, undo if target else None) from exc
    moved: list[Any] = []

    def extra(conn: Connection, now: Any) -> None:
        mob.release(conn, source, inst["flavor"], now)
        mob.set_migration(conn, mig, now, status="done")
        moved.extend(mob.move_ports(conn, run.instance_uuid, target, now))

    await mob.finish(env, run, extra, vm_state=states.STOPPED if stopped else states.ACTIVE, host=target,
                     power_state=int(PowerState.SHUTDOWN if stopped else PowerState.RUNNING))
    await mob.ports_moved(env, moved)
