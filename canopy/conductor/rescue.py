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
    from canopy.conductor.service import Conductor


async def run_rescue(cond: Conductor, run: TaskRun) -> None:
    """Boot the rescue image (payload rescue_image_ref, else the server's own image)."""
    try:
        inst = await mob.load(cond, run)
        run.step = states.RESCUING
        if not inst["host"]:
            raise mob.TaskFailed("the instance has no host")
        rescue_image = run.payload.get("rescue_image_ref") or inst["image_ref"]
        spec = await mob.spec_of(cond, inst)
        t0 = cond.clock.now()
        reply = await mob.agent_call(cond, inst["host"], RescueInstance(instance=spec, rescue_image_id=rescue_image),
                                     cond.settings.conductor.agent_call_timeout_s * 2)
        assert isinstance(reply, InstanceState)
        run.events.add("compute_rescue_instance", t0, cond.clock.now(), "Success")
    except Exception as exc:
        await mob.fail(cond, run, "rescue", exc)
        return
    await mob.finish(cond, run, vm_state=states.RESCUED, power_state=reply.power_state)


async def run_unrescue(cond: Conductor, run: TaskRun) -> None:
    """Boot the server from its own disk again."""
    try:
        inst = await mob.load(cond, run)
        run.step = states.UNRESCUING
        t0 = cond.clock.now()
        reply = await mob.agent_call(cond, inst["host"], UnrescueInstance(instance_uuid=run.instance_uuid))
        assert isinstance(reply, InstanceState)
        run.events.add("compute_unrescue_instance", t0, cond.clock.now(), "Success")
    except Exception as exc:
        await mob.fail(cond, run, "unrescue", exc)
        return
    await mob.finish(cond, run, vm_state=states.ACTIVE, power_state=reply.power_state)
