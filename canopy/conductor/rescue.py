"""rescue / unrescue: rescuing → vm_state rescued (the rescue image boots with the server's own disk as
its second disk); unrescuing → ACTIVE (the server boots from its own disk again)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canopy import states
from canopy.conductor import mobility as mob
from canopy.conductor.taskrun import TaskRun
from canopy.rpc.calls import InstanceState
from canopy.rpc.calls_mobility import RescueInstance, UnrescueInstance

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv


async def run_rescue(env: TaskEnv, run: TaskRun) -> None:
    """Boot the rescue image (payload rescue_image_ref, else the server's own image)."""
    inst = await mob.load(env, run)
    run.step = states.RESCUING
    if not inst["host"]:
        raise mob.TaskFailed("the instance has no host")
    rescue_image = run.args.rescue_image_ref or inst["image_ref"]
    spec = await mob.spec_of(env, inst)
    t0 = env.clock.now()
    reply = await mob.agent_call(env, inst["host"], RescueInstance(instance=spec, rescue_image_id=rescue_image),
                                 env.settings.conductor.agent_call_timeout_s * 2)
    assert isinstance(reply, InstanceState)
    run.events.add("compute_rescue_instance", t0, env.clock.now(), "Success")
    await mob.finish(env, run, vm_state=states.RESCUED, power_state=reply.power_state)


async def run_unrescue(env: TaskEnv, run: TaskRun) -> None:
    """Boot the server from its own disk again."""
    inst = await mob.load(env, run)
    run.step = states.UNRESCUING
    t0 = env.clock.now()
    reply = await mob.agent_call(env, inst["host"], UnrescueInstance(instance_uuid=run.instance_uuid))
    assert isinstance(reply, InstanceState)
    run.events.add("compute_unrescue_instance", t0, env.clock.now(), "Success")
    await mob.finish(env, run, vm_state=states.ACTIVE, power_state=reply.power_state)
