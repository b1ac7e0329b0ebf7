"""rebuild: rebuilding → rebuild_spawning → ACTIVE (or SHUTOFF if it was). A new disk from the same or
another image; the server keeps its UUID, ports, MACs and addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canopy import states
from canopy.conductor import mobility as mob
from canopy.conductor.taskrun import TaskRun
from canopy.rpc.calls import InstanceState
from canopy.rpc.calls_mobility import RebuildInstance

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv


async def run_rebuild(env: TaskEnv, run: TaskRun) -> None:
    """Rebuild the server's disk from payload image_id on its own host."""
    inst = await mob.load(env, run)
    run.step = states.REBUILDING
    if not inst["host"]:
        raise mob.TaskFailed("the instance has no host")
    image_id = run.args.image_id or inst["image_ref"]
    power_on = inst["vm_state"] != states.STOPPED
    spec = await mob.spec_of(env, inst, image_id=image_id)
    if run.args.name or run.args.admin_pass:
        spec = spec.model_copy(update={"name": run.args.name or spec.name, "admin_pass": run.args.admin_pass})
    await mob.set_step(env, run, states.REBUILD_SPAWNING)
    t0 = env.clock.now()
    reply = await mob.agent_call(env, inst["host"], RebuildInstance(instance=spec, power_on=power_on),
                                 env.settings.conductor.agent_call_timeout_s * 2)
    assert isinstance(reply, InstanceState)
    run.events.add("compute_rebuild_instance", t0, env.clock.now(), "Success")
    values = {"name": run.args.name} if run.args.name else {}
    await mob.finish(env, run, vm_state=states.ACTIVE if power_on else states.STOPPED, image_ref=image_id,
                     power_state=reply.power_state, launched_at=env.clock.now(), **values)


