"""What conductors write: task leases, instance state, faults, actions and their events, hosts and
services. Plain functions of a Connection, each one statement where it can be."""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, or_, select, update

from canopy import states
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.db.records import release_quota as release_quota  # the api releases quota too


@dataclass
class EventLog:
    """The events of one action, kept in memory and written in one statement when the task ends."""

    action_id: int | None
    host: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, event: str, start: dt.datetime, finish: dt.datetime, result: str,
            traceback: str | None = None, details: str | None = None, host: str | None = None) -> None:
        self.events.append({"event": event, "start_time": start, "finish_time": finish, "result": result,
                            "traceback": traceback, "details": details, "host": host or self.host})

    def write(self, conn: Connection) -> None:
        if self.action_id is not None and self.events:
            conn.execute(_INSERT_EVENTS, [{"action_id": self.action_id, **e} for e in self.events])
            self.events = []


# Hot statements are built once with bind parameters: building one costs more than running it on SQLite.
_t = c.tasks.c
_LEASE = (update(c.tasks)
          .where(_t.id == bindparam("w_id"), or_(_t.lease_owner.is_(None), _t.lease_expires_at < bindparam("w_now")))
          .values(lease_owner=bindparam("w_owner"), lease_expires_at=bindparam("w_until"), attempts=_t.attempts + 1))
_DELETE_TASK = delete(c.tasks).where(_t.id == bindparam("w_id"))
_UPDATE_INSTANCE = update(c.instances).where(c.instances.c.uuid == bindparam("w_uuid"))
_FINISH_ACTION = update(c.instance_actions).where(c.instance_actions.c.id == bindparam("w_id"))
_PORTS_STATUS = update(c.ports).where(c.ports.c.device_id == bindparam("w_device"))
_INSERT_EVENTS = insert(c.instance_action_events)


def lease_task(conn: Connection, task_id: int, owner: str, now: dt.datetime, lease_s: float) -> bool:
    """Take a task's lease if nobody holds a live one."""
    result = conn.execute(_LEASE, {"w_id": task_id, "w_now": now, "w_owner": owner,
                                   "w_until": now + dt.timedelta(seconds=lease_s)})
    return result.rowcount == 1


_RECLAIM = (update(c.tasks)
            .where(_t.id == bindparam("w_id"), or_(_t.lease_owner.is_(None), _t.lease_owner == bindparam("w_owner"),
                                                   _t.lease_expires_at < bindparam("w_now")))
            .values(lease_owner=bindparam("w_owner"), lease_expires_at=bindparam("w_until"), attempts=_t.attempts + 1))


def reclaim_lease(conn: Connection, task_id: int, owner: str, now: dt.datetime, lease_s: float) -> bool:
    """Take a task's lease back from an earlier life of this conductor (its live lease carries our name)."""
    result = conn.execute(_RECLAIM, {"w_id": task_id, "w_now": now, "w_owner": owner,
                                     "w_until": now + dt.timedelta(seconds=lease_s)})
    return result.rowcount == 1


def leased_by(conn: Connection, owner: str, limit: int = 1000) -> list[int]:
    """The tasks whose lease names `owner`, oldest first."""
    return list(conn.execute(select(_t.id).where(_t.lease_owner == owner).order_by(_t.id).limit(limit)).scalars())


def renew_lease(conn: Connection, task_id: int, owner: str, now: dt.datetime, lease_s: float) -> bool:
    t = c.tasks.c
    result = conn.execute(update(c.tasks).where(t.id == task_id, t.lease_owner == owner)
                          .values(lease_expires_at=now + dt.timedelta(seconds=lease_s)))
    return result.rowcount == 1


def load_task(conn: Connection, task_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(c.tasks).where(c.tasks.c.id == task_id)).mappings().first()
    return dict(row) if row else None


def expired_tasks(conn: Connection, now: dt.datetime, lost_cast_s: float, limit: int = 100) -> list[dict[str, Any]]:
    """Tasks whose lease ran out, and tasks nobody leased for a while (their wake-up cast was lost)."""
    t = c.tasks.c
    rows = conn.execute(
        select(t.id, t.instance_uuid, t.kind)
        .where(or_(and_(t.lease_owner.is_(None), t.created_at < now - dt.timedelta(seconds=lost_cast_s)),
                   t.lease_expires_at < now))
        .order_by(t.id)
        .limit(limit)
    ).mappings().all()
    return [dict(r) for r in rows]


def older_task_exists(conn: Connection, task_id: int, instance_uuid: str) -> bool:
    """Whether an earlier task of the same instance is still open (tasks of one instance run in order)."""
    t = c.tasks.c
    row = conn.execute(select(t.id).where(t.instance_uuid == instance_uuid, t.id < task_id).limit(1)).first()
    return row is not None


def delete_task(conn: Connection, task_id: int) -> None:
    conn.execute(_DELETE_TASK, {"w_id": task_id})


def update_instance(conn: Connection, instance_uuid: str, now: dt.datetime, **values: Any) -> None:
    """Set columns of one instance (the parameter names are the columns)."""
    conn.execute(_UPDATE_INSTANCE, {"w_uuid": instance_uuid, "updated_at": now, **values})


def mark_deleted(conn: Connection, instance_uuid: str, now: dt.datetime) -> bool:
    """The instance deleted (vm_state, times, no task); False when it was deleted already."""
    i = c.instances.c
    changed = conn.execute(update(c.instances).where(i.uuid == instance_uuid, i.deleted.is_(False)).values(
        vm_state=states.DELETED, task_state=None, power_state=0, deleted=True, deleted_at=now, terminated_at=now,
        updated_at=now))
    return changed.rowcount == 1


def load_instance(conn: Connection, instance_uuid: str) -> dict[str, Any] | None:
    row = conn.execute(select(c.instances).where(c.instances.c.uuid == instance_uuid)).mappings().first()
    return dict(row) if row else None


def add_fault(conn: Connection, instance_uuid: str, *, message: str, details: str, host: str | None,
              task_state: str | None, request_id: str | None, now: dt.datetime, code: int = 500) -> None:
    conn.execute(insert(c.instance_faults).values(
        instance_uuid=instance_uuid, code=code, message=message[:4000], details=details, host=host,
        task_state=task_state, request_id=request_id, created_at=now))


def finish_action(conn: Connection, action_id: int | None, now: dt.datetime, message: str | None = None) -> None:
    if action_id is None:
        return
    conn.execute(_FINISH_ACTION, {"w_id": action_id, "finish_time": now, "updated_at": now, "message": message})


def set_ports_status(conn: Connection, device_id: str, status: str, now: dt.datetime) -> None:
    conn.execute(_PORTS_STATUS, {"w_device": device_id, "status": status, "updated_at": now})


def upsert_host(conn: Connection, values: dict[str, Any], now: dt.datetime) -> None:
    """Record a host's capacity and labels as its agent reports them (usage counters are the claims')."""
    h = c.hosts.c
    updated = conn.execute(update(c.hosts).where(h.name == values["name"]).values(updated_at=now, **values))
    if updated.rowcount == 0:
        conn.execute(insert(c.hosts).values(uuid=str(uuidlib.uuid4()), created_at=now, updated_at=now, **values))


def upsert_service(conn: Connection, binary: str, host: str, version: str, now: dt.datetime) -> None:
    s = c.services.c
    updated = conn.execute(update(c.services).where(s.binary == binary, s.host == host)
                           .values(last_seen_at=now, updated_at=now, version=version))
    if updated.rowcount == 0:
        conn.execute(insert(c.services).values(
            uuid=str(uuidlib.uuid4()), binary=binary, host=host, version=version, last_seen_at=now,
            disabled=False, forced_down=False, created_at=now, updated_at=now))


def record_heartbeats(conn: Connection, beats: list[dict[str, Any]]) -> None:
    """Write a batch of heartbeats in one statement (each with its failing health checks, or None)."""
    from sqlalchemy import bindparam

    s = c.services.c
    stmt = (update(c.services)
            .where(s.binary == bindparam("b_binary"), s.host == bindparam("b_host"))
            .values(last_seen_at=bindparam("b_seen"), updated_at=bindparam("b_now"), version=bindparam("b_version"),
                    health=bindparam("b_health")))
    conn.execute(stmt, beats)


def map_host(conn: Connection, host: str, cell_name: str) -> None:
    exists = conn.execute(select(g.host_mappings.c.host).where(g.host_mappings.c.host == host)).first()
    if not exists:
        conn.execute(insert(g.host_mappings).values(host=host, cell_name=cell_name))
