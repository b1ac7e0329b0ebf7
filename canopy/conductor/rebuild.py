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
    from canopy.conductor.service import Conductor


async def run_rebuild(cond: Conductor, run: TaskRun) -> None:
    """Rebuild the server's disk from payload image_id on its own host."""
    try:
        inst = await mob.load(cond, run)
        run.step = states.REBUILDING
        if not inst["host"]:
            raise mob.TaskFailed("the instance has no host")
        image_id = run.payload.get("image_id") or inst["image_ref"]
        power_on = inst["vm_state"] != states.STOPPED
        spec = await mob.spec_of(cond, inst, image_id=image_id)
        if run.payload.get("name"):
            spec = spec.model_copy(update={"name": run.payload["name"]})
        await mob.set_step(cond, run, states.REBUILD_SPAWNING)
        t0 = cond.clock.now()
        reply = await mob.agent_call(cond, inst["host"], RebuildInstance(instance=spec, power_on=power_on),
                                     cond.settings.conductor.agent_call_timeout_s * 2)
        assert isinstance(reply, InstanceState)
        run.events.add("compute_rebuild_instance", t0, cond.clock.now(), "Success")
    except Exception as exc:
        await mob.fail(cond, run, "rebuild", exc, vm_state=states.ERROR)
        return
    values = {"name": run.payload["name"]} if run.payload.get("name") else {}
    await mob.finish(cond, run, vm_state=states.ACTIVE if power_on else states.STOPPED, image_ref=image_id,
                     power_state=reply.power_state, launched_at=cond.clock.now(), **values)


