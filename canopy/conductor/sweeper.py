"""The stuck-task sweeper: a server that stays in one task state longer than that state's deadline
is moved to ERROR with a fault saying where it stuck, for how long, and on which host.

Who may sweep what, so that nothing is written twice:
- the task's lease belongs to this conductor: cancel our own run first (it can no longer write),
  then sweep;
- no task row at all (an orphaned task_state): any conductor; the conditional update lets one win;
- another conductor's live lease: that conductor's sweeper does it; an expired lease: the lease
  sweep (`Conductor.sweep`) takes the task over first.
Deadlines are per task state (`[observability] task_deadlines_s`), measured from the instance's
last update, which every step change makes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, desc, insert, select, update

from canopy import context, states
from canopy.clock import Clock
from canopy.conductor import records
from canopy.db import tables_cell as c
from canopy.observability.metrics import SWEPT
from canopy.observability.notifications import EVENTS, exception_payload, instance_payload
from canopy.periodic import pace

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor.sweeper")
BATCH = 100
i, t, a = c.instances.c, c.tasks.c, c.instance_actions.c


@dataclass(frozen=True)
class Stuck:
    """A server past its task state's deadline."""

    row: dict[str, Any]
    age_s: float
    deadline_s: float

    @property
    def uuid(self) -> str:
        return str(self.row["uuid"])

    @property
    def task_state(self) -> str:
        return str(self.row["task_state"])


def deadline_of(task_state: str, deadlines: dict[str, float], default: float) -> float:
    """How long a server may stay in `task_state`."""
    return float(deadlines.get(task_state, default))


def overdue(rows: Iterable[dict[str, Any]], now: dt.datetime, deadlines: dict[str, float],
            default: float) -> list[Stuck]:
    """The rows whose task state has lasted longer than its deadline, oldest first."""
    out = []
    for row in rows:
        if not row.get("task_state") or row.get("deleted"):
            continue
        age = (now - row["updated_at"]).total_seconds()
        limit = deadline_of(row["task_state"], deadlines, default)
        if age > limit:
            out.append(Stuck(row, age, limit))
    return sorted(out, key=lambda s: -s.age_s)


def _secs(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"


def describe(stuck: Stuck) -> str:
    """The fault's one line."""
    where = f" on {stuck.row['host']}" if stuck.row.get("host") else ""
    return (f"Stuck in task state {stuck.task_state}{where} for {_secs(stuck.age_s)} (deadline "
            f"{_secs(stuck.deadline_s)}); moved to ERROR by the stuck-task sweeper")


def candidates(conn: Connection, cutoff: dt.datetime, limit: int = BATCH) -> list[dict[str, Any]]:
    """Servers in some task state not updated since `cutoff` (the shortest deadline), oldest first per state.

    Ordered by (task_state, updated_at) so the planner walks ix_instances_task_state, which skips the
    servers with no task state (nearly all), instead of every old row of ix_instances_updated_at.
    """
    rows = conn.execute(select(c.instances).where(i.task_state.is_not(None), i.deleted.is_(False),
                                                  i.updated_at < cutoff)
                        .order_by(i.task_state, i.updated_at).limit(limit))
    return [dict(r) for r in rows.mappings()]


def first_tasks(conn: Connection, uuids: list[str]) -> dict[str, dict[str, Any]]:
    """Each server's oldest open task: the one its task state belongs to (tasks of a server run in order)."""
    if not uuids:
        return {}
    rows = conn.execute(select(c.tasks).where(t.instance_uuid.in_(uuids)).order_by(t.id)).mappings()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row["instance_uuid"], dict(row))
    return out


def move_to_error(conn: Connection, stuck: Stuck, task: dict[str, Any] | None, now: dt.datetime,
                  details: str) -> str | None:
    """ERROR, a fault, the action closed with an event, the task row gone; None if the server moved on."""
    cutoff = now - dt.timedelta(seconds=stuck.deadline_s)
    changed = conn.execute(update(c.instances).where(
        i.uuid == stuck.uuid, i.task_state == stuck.task_state, i.deleted.is_(False), i.updated_at < cutoff,
    ).values(vm_state=states.ERROR, task_state=None, updated_at=now)).rowcount
    if changed != 1:
        return None
    action = _action_of(conn, stuck.uuid, task)
    request_id = (task or {}).get("request_id") or (action or {}).get("request_id")
    message = describe(stuck)
    records.add_fault(conn, stuck.uuid, message=message, details=details, host=stuck.row.get("host"),
                      task_state=stuck.task_state, request_id=request_id, now=now)
    if action is not None:
        conn.execute(insert(c.instance_action_events).values(
            action_id=action["id"], event="conductor_sweep_stuck_task", start_time=now, finish_time=now,
            result="Error", details=message, host=stuck.row.get("host")))
        records.finish_action(conn, action["id"], now, message="Error")
    if task is not None:
        records.delete_task(conn, task["id"])
    return request_id or ""


def _action_of(conn: Connection, uuid: str, task: dict[str, Any] | None) -> dict[str, Any] | None:
    q = select(a.id, a.request_id, a.action).where(a.instance_uuid == uuid)
    if task is not None and task.get("action_id") is not None:
        q = q.where(a.id == task["action_id"])
    else:
        q = q.where(a.finish_time.is_(None)).order_by(desc(a.id)).limit(1)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


class StuckSweeper:
    """Runs in every conductor; see the module docstring for who sweeps what."""

    def __init__(self, env: TaskEnv, clock: Clock | None = None) -> None:
        self.env = env
        self.obs = env.settings.observability
        self.clock = clock or env.clock  # its own, so that a test can move the sweeper's time alone

    async def sweep(self) -> int:
        """Move every overdue server this conductor may take to ERROR; returns how many it moved."""
        env, obs = self.env, self.obs
        now = self.clock.now()
        shortest = min([*obs.task_deadlines_s.values(), obs.default_task_deadline_s])
        rows = await env.db.read_fresh(candidates, now - dt.timedelta(seconds=shortest))
        stuck = overdue(rows, now, obs.task_deadlines_s, obs.default_task_deadline_s)
        if not stuck:
            return 0
        tasks = await env.db.read_fresh(first_tasks, [s.uuid for s in stuck])
        moved = 0
        for s in stuck:
            if await self._take(s, tasks.get(s.uuid), now):
                moved += 1
        return moved

    async def _take(self, stuck: Stuck, task: dict[str, Any] | None, now: dt.datetime) -> bool:
        env = self.env
        if task is not None:
            running = env.active_runs.get(task["id"])
            if task["lease_owner"] != env.name or running is None:
                return False  # unleased, another conductor's, or an expired lease the lease sweep takes over
            await self._cancel(running)
        details = (f"Swept by {env.name} at {now.isoformat()}Z. "
                   + (f"Task {task['id']} ({task['kind']}), attempt {task['attempts']}, leased by "
                      f"{task['lease_owner']}." if task else "No task was driving it (an orphaned task state)."))
        request_id = await env.db.write(move_to_error, stuck, task, self.clock.now(), details)
        if request_id is None:
            return False
        # logged under the stuck request's ID, so that `canopy trace` shows how its story ended
        token = context.set_current(context.RequestContext(request_id=request_id)) if request_id else None
        try:
            log.warning("sweeper: instance %s %s", stuck.uuid, describe(stuck), extra={"instance_uuid": stuck.uuid})
        finally:
            if token is not None:
                context.reset(token)
        SWEPT.inc(stuck.task_state)
        await self._notify(stuck, task, request_id)
        return True

    @staticmethod
    async def _cancel(running: asyncio.Task[Any]) -> None:
        """Stop our own run of the task, so that it cannot write after the sweep."""
        if not running.done():
            running.cancel()
            await asyncio.wait([running], timeout=5)

    async def _notify(self, stuck: Stuck, task: dict[str, Any] | None, request_id: str) -> None:
        event = EVENTS.get((task or {}).get("kind", ""), "instance.update")
        view = {**stuck.row, "vm_state": states.ERROR, "task_state": None}
        payload = instance_payload(view, request_id=request_id or None,
                                   fault=exception_payload("TaskStuck", describe(stuck), "sweep", __name__))
        await self.env.notifier.emit(f"{event}.error", payload, self.clock.now(), "ERROR")

    async def loop(self) -> None:
        """Sweep every `stuck_sweep_interval_s`; an error is logged and the next sweep tries again."""
        first = True
        while True:
            await pace(self.obs.stuck_sweep_interval_s, first)
            first = False
            try:
                await self.sweep()
            except Exception:
                log.exception("stuck-task sweep failed")
