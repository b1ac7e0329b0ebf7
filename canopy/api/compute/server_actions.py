"""Starting a long action on a server: one conditional state change (so two requests can't both
start), the action record and the durable task in one transaction, then a wake-up cast."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, update
from starlette.requests import Request

from canopy import states
from canopy.api.compute.common import cell_db, check_unlocked, cloud_of, load_visible_instance
from canopy.api.errors import ApiError
from canopy.api.http import ctx
from canopy.db import tables_cell as c
from canopy.db.records import inserted_id
from canopy.rpc.base import Target
from canopy.rpc.calls import WakeTask
from canopy.rpc.tasks import ActionPayload, TaskRecord, dump_payload

i = c.instances.c

# What Nova calls each action in its 409 messages.
API_NAMES = {"start": "start", "stop": "stop", "stop_soft": "canopy-stopSoft", "stop_hard": "canopy-stopHard",
             "reboot_soft": "reboot", "reboot_hard": "reboot", "delete": "delete", "pause": "pause",
             "unpause": "unpause", "suspend": "suspend", "resume": "resume", "shelve": "shelve",
             "shelve_offload": "shelveOffload", "unshelve": "unshelve", "backup": "createBackup"}


async def start_action(request: Request, uuid: str, action: str, payload: ActionPayload | None = None) -> None:
    """Move the server into the action's task state and queue the task; 409 if its state forbids it."""
    rule = states.ACTIONS[action]
    cloud, rc = cloud_of(request), ctx(request)
    now = cloud.clock.now()
    args = payload or ActionPayload()

    def write(conn: Connection) -> TaskRecord | None:
        inst = load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        if action == "delete" and inst["task_state"] == states.DELETING:
            return None  # already being deleted: deleting again is a no-op, as in Nova
        check_unlocked(inst, rc.is_admin)
        conds = [i.uuid == uuid, i.deleted.is_(False), i.vm_state.in_(rule.from_vm_states)]
        if action != "delete":
            conds.append(i.task_state.is_(None))
        changed = conn.execute(update(c.instances).where(*conds).values(task_state=rule.task_state, updated_at=now))
        if changed.rowcount != 1:
            raise _conflict(action, uuid, inst)
        action_id = inserted_id(conn.execute(insert(c.instance_actions).values(
            instance_uuid=uuid, request_id=rc.request_id, action=states.ACTION_NAMES[action], user_id=rc.user_id,
            project_id=rc.project_id, start_time=now, updated_at=now)))
        task = {"instance_uuid": uuid, "kind": action, "action_id": action_id, "payload": dump_payload(args),
                "request_id": rc.request_id, "attempts": 0, "created_at": now}
        task_id = inserted_id(conn.execute(insert(c.tasks).values(**task)))
        return TaskRecord(id=task_id, instance_uuid=uuid, kind=action, action_id=action_id,
                          request_id=rc.request_id, payload=args)

    task = await cell_db(request).write(write)
    if task is not None:
        await cloud.bus.cast(Target("conductor"), WakeTask(task_id=task.id, instance_uuid=uuid, task_kind=action,
                                                           task=task))


def _conflict(action: str, uuid: str, inst: dict[str, Any]) -> ApiError:
    name = API_NAMES[action]
    if inst["task_state"] is not None and action != "delete":
        return ApiError(409, f"Cannot '{name}' instance {uuid} while it is in task_state {inst['task_state']}")
    return ApiError(409, f"Cannot '{name}' instance {uuid} while it is in vm_state {inst['vm_state']}")
