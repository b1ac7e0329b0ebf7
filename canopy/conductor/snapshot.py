"""createImage: image_snapshot → image_pending_upload → image_uploading → done. The Compute API made the
queued image record; the agent copies the disk (the guest briefly paused) and uploads it through the
Image API. On failure the queued image is deleted, as Nova does, and the server gets a fault."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canopy import states
from canopy.conductor import mobility as mob
from canopy.conductor.taskrun import TaskRun
from canopy.image import store
from canopy.rpc.calls_mobility import SnapshotInstance

if TYPE_CHECKING:
    from canopy.conductor.service import Conductor

UPLOAD_TIMEOUT_S = 3600.0


async def run_snapshot(cond: Conductor, run: TaskRun) -> None:
    """Snapshot the server's disk into the image the API created."""
    image_id = run.payload["image_id"]
    try:
        inst = await mob.load(cond, run)
        run.step = states.IMAGE_SNAPSHOT
        if not inst["host"]:
            raise mob.TaskFailed("the instance has no host")
        await mob.set_step(cond, run, states.IMAGE_PENDING_UPLOAD)
        await mob.set_step(cond, run, states.IMAGE_UPLOADING)
        t0 = cond.clock.now()
        await mob.agent_call(cond, inst["host"], SnapshotInstance(instance_uuid=run.instance_uuid,
                                                                  image_id=image_id), UPLOAD_TIMEOUT_S)
        run.events.add("compute_snapshot_instance", t0, cond.clock.now(), "Success")
    except Exception as exc:
        await cond.dbs.global_db.write(store.delete_image, image_id)
        await mob.fail(cond, run, "snapshot", exc)
        return
    await mob.finish(cond, run)
