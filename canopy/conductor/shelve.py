"""shelve, shelveOffload, unshelve: keep a customer's server without holding a host.

shelve: shelving → shelving_image_pending_upload → shelving_image_uploading → SHELVED: the guest is
stopped and its disk uploaded as an image (as createImage does); with shelved_offload_time 0 the task
goes on to offload at once. shelveOffload: shelving_offloading → SHELVED_OFFLOADED: the guest is
destroyed and the host's claim released; the ports and their addresses stay the server's (unbound from
the host, so its flows go). unshelve: unshelving → ACTIVE: a SHELVED server starts where it is; an
offloaded one is scheduled again, its ports bound to the new host, spawned from the shelved image, and
that image deleted. States and task states as Nova's."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from canopy import states
from canopy.conductor import interfaces, records
from canopy.conductor import mobility as mob
from canopy.conductor.taskrun import TaskRun
from canopy.image import store
from canopy.rpc.calls import DestroyInstance, PowerAction, SpawnInstance
from canopy.rpc.calls_mobility import SnapshotInstance
from canopy.states import PowerState

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor")
UPLOAD_TIMEOUT_S = 3600.0


async def run_shelve(env: TaskEnv, run: TaskRun) -> None:
    """Stop the guest, upload its disk into the image the API created; offload too when asked."""
    inst = await mob.load(env, run)
    run.step = states.SHELVING
    if not inst["host"]:
        raise mob.TaskFailed("the instance has no host")
    if inst["power_state"] != int(PowerState.SHUTDOWN):  # as Nova: the disk is copied from a stopped guest
        await mob.agent_call(env, inst["host"], PowerAction(instance_uuid=run.instance_uuid, action="stop"))
    await mob.set_step(env, run, states.SHELVING_IMAGE_PENDING_UPLOAD)
    await mob.set_step(env, run, states.SHELVING_IMAGE_UPLOADING)
    t0 = env.clock.now()
    await mob.agent_call(env, inst["host"], SnapshotInstance(instance_uuid=run.instance_uuid,
                                                             image_id=run.args.image_id or ""), UPLOAD_TIMEOUT_S)
    run.events.add("compute_shelve_instance", t0, env.clock.now(), "Success")
    shelved = {"shelved_image_id": run.args.image_id, "shelved_at": env.clock.now()}
    if not run.args.offload:
        await mob.finish(env, run, vm_state=states.SHELVED, power_state=int(PowerState.SHUTDOWN), **shelved)
        return
    await env.db.write(_record_shelved, env, run, shelved)
    await _offload(env, run, inst)


def _record_shelved(conn: Connection, env: TaskEnv, run: TaskRun, values: dict[str, Any]) -> None:
    records.update_instance(conn, run.instance_uuid, env.clock.now(), vm_state=states.SHELVED,
                            power_state=int(PowerState.SHUTDOWN), task_state=states.SHELVING_OFFLOADING, **values)


async def run_shelve_offload(env: TaskEnv, run: TaskRun) -> None:
    """Offload a SHELVED server: destroy the guest, release the host."""
    inst = await mob.load(env, run)
    run.step = states.SHELVING_OFFLOADING
    await _offload(env, run, inst)


async def _offload(env: TaskEnv, run: TaskRun, inst: dict[str, Any]) -> None:
    run.step = states.SHELVING_OFFLOADING
    host = inst["host"]
    t0 = env.clock.now()
    if host:
        await mob.agent_call(env, host, DestroyInstance(instance_uuid=run.instance_uuid))
    run.events.add("compute_shelve_offload_instance", t0, env.clock.now(), "Success")
    moved: list[Any] = []

    def extra(conn: Connection, now: Any) -> None:
        mob.release(conn, host, inst["flavor"], now)
        moved.extend(interfaces.rebind_ports(conn, run.instance_uuid, "", now))  # unbound: the host's flows go

    await mob.finish(env, run, extra, vm_state=states.SHELVED_OFFLOADED, host=None,
                     power_state=int(PowerState.NOSTATE))
    await mob.ports_moved(env, moved)


async def run_unshelve(env: TaskEnv, run: TaskRun) -> None:
    """Start a SHELVED server in place, or place an offloaded one again and spawn it from its image."""
    inst = await mob.load(env, run)
    run.step = states.UNSHELVING
    image_id = inst["shelved_image_id"]
    done = {"shelved_image_id": None, "shelved_at": None}
    if inst["vm_state"] == states.SHELVED and inst["host"]:
        t0 = env.clock.now()
        await mob.agent_call(env, inst["host"], PowerAction(instance_uuid=run.instance_uuid, action="start"))
        run.events.add("compute_unshelve_instance", t0, env.clock.now(), "Success")
        await mob.finish(env, run, vm_state=states.ACTIVE, power_state=int(PowerState.RUNNING), **done)
    else:
        await _unshelve_offloaded(env, run, inst, image_id)
    if image_id:
        await delete_image(env, image_id)


async def _unshelve_offloaded(env: TaskEnv, run: TaskRun, inst: dict[str, Any], image_id: str | None) -> None:
    if not image_id:
        raise mob.TaskFailed("the shelved server has no shelved image to boot from")
    target = None
    try:
        placed = {**inst, "availability_zone": run.args.availability_zone or inst["availability_zone"]}
        target = await mob.select_target(env, placed, inst["flavor"], force_host=run.args.host, exclude=[])
        run.host = run.events.host = target
        await mob.ports_moved(env, await env.db.write(_bind_ports, env, run, target))  # flows before the guest
        t0 = env.clock.now()
        spec = await mob.spec_of(env, inst, image_id=image_id)
        await mob.agent_call(env, target, SpawnInstance(instance=spec), env.settings.conductor.agent_call_timeout_s * 2)
        run.events.add("compute_unshelve_instance", t0, env.clock.now(), "Success")
    except Exception:
        if target:
            await _unplace(env, run, inst, target)
        raise
    await mob.finish(env, run, vm_state=states.ACTIVE, host=target, power_state=int(PowerState.RUNNING),
                     launched_at=env.clock.now(), shelved_image_id=None, shelved_at=None)


def _bind_ports(conn: Connection, env: TaskEnv, run: TaskRun, target: str) -> list[Any]:
    """The claimed host becomes the instance's (it holds the claim now) and its ports are bound there."""
    now = env.clock.now()
    records.update_instance(conn, run.instance_uuid, now, host=target)
    return interfaces.rebind_ports(conn, run.instance_uuid, target, now)


async def _unplace(env: TaskEnv, run: TaskRun, inst: dict[str, Any], target: str) -> None:
    """An unshelve that failed on `target` leaves the server offloaded: no guest, no claim, ports unbound."""
    try:
        await mob.agent_call(env, target, DestroyInstance(instance_uuid=run.instance_uuid))
    except Exception:  # the agent's reconcile removes a guest the database does not know
        log.warning("instance %s: cleanup on %s after a failed unshelve failed", run.instance_uuid, target)

    def write(conn: Connection) -> list[Any]:
        now = env.clock.now()
        mob.release(conn, target, inst["flavor"], now)
        records.update_instance(conn, run.instance_uuid, now, host=None)
        return interfaces.rebind_ports(conn, run.instance_uuid, "", now)

    await mob.ports_moved(env, await env.db.write(write))
    run.host = None


async def delete_image(env: TaskEnv, image_id: str) -> None:
    """An image the compute side made (shelved, rotated backup): its record and its data go."""
    await env.dbs.global_db.write(store.delete_image, image_id)
    store.remove_data(env.settings.data_dir / "images", image_id)


async def shelve_failed(env: TaskEnv, run: TaskRun, exc: Exception) -> None:
    """The image the API created goes (as createImage's) unless the disk is in it and only the offload
    failed (the server is SHELVED then); the server keeps its state, with a fault."""
    if run.args.image_id and run.step != states.SHELVING_OFFLOADING:
        await delete_image(env, run.args.image_id)
    await mob.fail(env, run, "shelve", exc)


async def unshelve_failed(env: TaskEnv, run: TaskRun, exc: Exception) -> None:
    """The server stays shelved (offloaded if it was), with a fault; its shelved image is kept."""
    await mob.fail(env, run, "unshelve", exc)
