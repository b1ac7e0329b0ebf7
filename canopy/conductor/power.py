"""Power actions (start, stop and its soft/hard variants, reboots) and delete."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from canopy import states
from canopy.conductor import interfaces, netsync, records
from canopy.conductor.taskrun import TaskRun, describe_exception
from canopy.network import ports as netports
from canopy.observability import notifications as notify
from canopy.rpc.base import CallTimeout, NoRoute, Target
from canopy.rpc.calls import DestroyInstance, InstanceState, PortChange, PowerAction
from canopy.scheduler import claims

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor")
POWER_KINDS = ("start", "stop", "stop_soft", "stop_hard", "reboot_soft", "reboot_hard", "pause", "unpause",
               "suspend", "resume")


def _power_timeout(env: TaskEnv, run: TaskRun) -> float:
    return float(run.args.timeout_s or env.settings.conductor.stop_timeout_s)


async def run_power(env: TaskEnv, run: TaskRun) -> None:
    """Ask the instance's agent to change its power state; record each step it took."""
    action = run.kind
    instance = run.instance = await env.db.read_fresh(records.load_instance, run.instance_uuid)
    if instance is None or not instance["host"]:
        raise RuntimeError("the instance has no host")
    run.host = instance["host"]
    run.events.host = run.host
    run.step = instance["task_state"] or ""
    await notify.task_started(env, run, instance)
    t0 = env.clock.now()
    if action == "reboot_hard":
        await env.db.write(records.update_instance, run.instance_uuid, t0, task_state=states.REBOOT_STARTED_HARD)
        run.step = states.REBOOT_STARTED_HARD
    timeout = _power_timeout(env, run)
    reply = await env.bus.call(Target("agent", run.host),
                               PowerAction(instance_uuid=run.instance_uuid, action=action, timeout_s=timeout),
                               timeout=timeout + env.settings.conductor.agent_call_timeout_s)
    assert isinstance(reply, InstanceState)
    now = env.clock.now()
    for step in reply.steps:
        run.events.add(f"compute_{step.event}", t0, now, step.result, details=step.details or None)

    def write(conn: Connection) -> None:
        records.update_instance(conn, run.instance_uuid, now, vm_state=states.RESULT_VM_STATE[action],
                                task_state=None, power_state=reply.power_state)
        records.finish_action(conn, run.events.action_id, now)
        run.events.write(conn)
        records.delete_task(conn, run.id)

    await env.db.write(write)
    await notify.task_ended(env, run, instance, vm_state=states.RESULT_VM_STATE[action], task_state=None,
                            power_state=reply.power_state, updated_at=now)


async def power_failed(env: TaskEnv, run: TaskRun, exc: Exception) -> None:
    """The action failed: the instance keeps its vm_state, loses the task_state, and gets a fault."""
    action, instance = run.kind, run.instance
    message, details = describe_exception(exc)
    fault = f"{states.ACTION_NAMES.get(action, action)} failed on {run.host or 'no host'}: {message}"
    log.warning("instance %s: %s", run.instance_uuid, fault)
    now = env.clock.now()
    run.events.add(f"compute_{action}", now, now, "Error", traceback=details, details=message)

    def write(conn: Connection) -> None:
        records.update_instance(conn, run.instance_uuid, now, task_state=None)
        records.add_fault(conn, run.instance_uuid, message=fault, details=details, host=run.host,
                          task_state=run.step or None, request_id=run.request_id, now=now)
        records.finish_action(conn, run.events.action_id, now, message="Error")
        run.events.write(conn)
        records.delete_task(conn, run.id)

    await env.db.write(write)
    await notify.task_failed(env, run, getattr(exc, "kind", None) or type(exc).__name__, message, instance,
                             task_state=None, updated_at=now)


async def run_delete(env: TaskEnv, run: TaskRun) -> None:
    """Destroy the guest, give back its claim, ports and quota, and mark the instance deleted."""
    instance = await env.db.read_fresh(records.load_instance, run.instance_uuid)
    if instance is None:
        await env.db.write(records.delete_task, run.id)
        return
    run.host = instance["host"]
    run.events.host = run.host
    await notify.task_started(env, run, instance)
    t0 = env.clock.now()
    if run.host:
        try:
            await env.bus.call(Target("agent", run.host), DestroyInstance(instance_uuid=run.instance_uuid),
                                timeout=env.settings.conductor.agent_call_timeout_s)
            run.events.add("compute_terminate_instance", t0, env.clock.now(), "Success")
        except (NoRoute, CallTimeout) as exc:
            # The agent is away: delete the records now; its reconcile reports the orphan guest later.
            run.events.add("compute_terminate_instance", t0, env.clock.now(), "Error", details=str(exc))
            log.warning("instance %s: agent %s unreachable during delete: %s", run.instance_uuid, run.host, exc)
    now = env.clock.now()
    flavor = instance["flavor"]
    policy = await netsync.release_policy(env, instance["project_id"])  # the hold time of public addresses
    removed: list[dict[str, Any]] = []
    kept: list[PortChange] = []

    def write(conn: Connection) -> bool:
        # Conditional on the row not being deleted yet, so a delete run twice (taken over after its write
        # committed, before its reply) gives back the claim and the quota once; the host stays recorded.
        if not records.mark_deleted(conn, run.instance_uuid, now):
            records.delete_task(conn, run.id)
            return False
        host = claims.placed_host(conn, run.instance_uuid)  # the row is ours now: the update above locked it
        if host:  # an instance holds a claim exactly while it has a host
            claims.release(conn, host, flavor["vcpus"], flavor["ram"], flavor["disk"], now)
        kept.extend(interfaces.unbind_kept_ports(conn, run.instance_uuid, now))  # as Nova: unbound, not deleted
        removed.extend(netports.remove_ports_of_device(conn, run.instance_uuid, policy=policy, now=now))
        records.finish_action(conn, run.events.action_id, now)
        run.events.write(conn)
        records.delete_task(conn, run.id)
        return True

    if not await env.db.write(write):
        return
    await netsync.ports_removed(env, removed)
    if kept:
        await env.netsync.ports_changed(kept)
    await env.dbs.global_db.write(records.release_quota, instance["project_id"], 1, flavor["vcpus"], flavor["ram"])
    await notify.task_ended(env, run, instance, vm_state=states.DELETED, task_state=None, power_state=0,
                            deleted_at=now, terminated_at=now, updated_at=now)
