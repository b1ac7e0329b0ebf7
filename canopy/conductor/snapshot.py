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
    from canopy.conductor.env import TaskEnv

UPLOAD_TIMEOUT_S = 3600.0


async def run_snapshot(env: TaskEnv, run: TaskRun) -> None:
    """Snapshot the server's disk into the image the API created."""
    image_id = run.args.image_id
    inst = await mob.load(env, run)
    run.step = states.IMAGE_SNAPSHOT
    if not inst["host"]:
        raise mob.TaskFailed("the instance has no host")
    await mob.set_step(env, run, states.IMAGE_PENDING_UPLOAD)
    await mob.set_step(env, run, states.IMAGE_UPLOADING)
    t0 = env.clock.now()
    await mob.agent_call(env, inst["host"], SnapshotInstance(instance_uuid=run.instance_uuid,
                                                             image_id=image_id or ""), UPLOAD_TIMEOUT_S)
    run.events.add("compute_snapshot_instance", t0, env.clock.now(), "Success")
    await mob.finish(env, run)


async def snapshot_failed(env: TaskEnv, run: TaskRun, exc: Exception) -> None:
    """The queued image the API created goes, as in Nova; the server gets a fault."""
    if run.args.image_id:
        await env.dbs.global_db.write(store.delete_image, run.args.image_id, env.clock.now())
    await mob.fail(env, run, run.kind, exc)
