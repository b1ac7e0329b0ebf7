"""The stuck-task sweeper: past its task state's deadline a server goes to ERROR with a fault, once, and
only by the conductor entitled to it."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, inspect, select, update

from canopy.clock import FakeClock
from canopy.conductor.sweeper import StuckSweeper, overdue
from canopy.db import tables_cell as c
from canopy.observability.notifications import Notification, subscribe
from canopy.observability.trace import gather, parse_line
from tests.clouds import V, server_body, wait_for_server
from tests.waiting import wait_until

NOW = dt.datetime(2026, 5, 1, 12, 0)
DEADLINES = {"spawning": 600.0, "powering-off": 60.0}


def row(task_state: str | None, age_s: float, **more: Any) -> dict[str, Any]:
    return {"uuid": f"u-{task_state}-{age_s}", "task_state": task_state, "deleted": False, "host": "hv-1",
            "updated_at": NOW - dt.timedelta(seconds=age_s), **more}


def test_the_sweepers_query_has_its_index(stack: Any) -> None:
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(stack.cloud.dbs.default_cell.primary)
               .get_indexes("instances")}
    assert indexes["ix_instances_task_state"] == ["task_state", "updated_at"]


def test_overdue_uses_each_states_deadline_and_the_default() -> None:
    rows = [row("spawning", 599), row("spawning", 601), row("powering-off", 61), row("migrating", 3599),
            row("migrating", 3601), row(None, 9999), row("spawning", 9999, deleted=True)]
    stuck = overdue(rows, NOW, DEADLINES, 3600)
    assert [(s.task_state, round(s.age_s)) for s in stuck] == [("migrating", 3601), ("spawning", 601),
                                                              ("powering-off", 61)]
    assert [s.deadline_s for s in stuck] == [3600, 600, 60]


async def _age(stack: Any, sid: str, seconds: float, **values: Any) -> None:
    past = stack.cloud.clock.now() - dt.timedelta(seconds=seconds)
    await stack.cloud.dbs.default_cell.write(lambda conn: conn.execute(
        update(c.instances).where(c.instances.c.uuid == sid).values(updated_at=past, **values)))


async def _rows(stack: Any, table: Any, sid: str) -> list[dict[str, Any]]:
    return await stack.cloud.dbs.default_cell.read(lambda conn: [dict(r) for r in conn.execute(
        select(table).where(table.c.instance_uuid == sid)).mappings()])


async def spawning(stack: Any, sid: str) -> bool:
    server = (await stack.api.get(f"/compute/v2.1/servers/{sid}")).json()["server"]
    return bool(server["OS-EXT-STS:task_state"] == "spawning")


async def test_a_build_stuck_in_spawning_goes_to_error_with_a_fault(stack: Any, json_log: Path) -> None:
    notes: list[Notification] = []

    async def billing(msg: Any) -> None:
        notes.append(msg)

    subscribe(stack.cloud.bus, billing)
    for driver in stack.drivers.values():
        driver.spawn_delay_s = 30.0  # a hypervisor that never finishes
    stack.settings.observability.task_deadlines_s["spawning"] = 600.0
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(), headers=V)
    sid, request_id = resp.json()["server"]["id"], resp.headers["x-openstack-request-id"]
    await wait_until(lambda: spawning(stack, sid), what="the build spawning")
    clock = FakeClock(stack.cloud.clock.now())  # the sweeper's time moves only when the test says so
    sweeper = StuckSweeper(stack.conductor.env, clock)
    assert await sweeper.sweep() == 0, "not yet past the deadline"
    clock.advance(601)
    assert await sweeper.sweep() == 1
    assert await sweeper.sweep() == 0, "swept once"

    server = await wait_for_server(stack.api, sid, {"ERROR"})
    message = server["fault"]["message"]
    assert message.startswith(f"Stuck in task state spawning on {server['OS-EXT-SRV-ATTR:host']} for ")
    assert "moved to ERROR by the stuck-task sweeper" in message and "Task " in server["fault"]["details"]
    assert await _rows(stack, c.tasks, sid) == []
    action = (await stack.api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{request_id}",
                                  headers=V)).json()["instanceAction"]
    assert action["message"] == "Error" and action["events"][-1]["event"] == "conductor_sweep_stuck_task"
    assert [f["request_id"] for f in await _rows(stack, c.instance_faults, sid)] == [request_id]
    assert not stack.conductor.active_runs, "our own run was cancelled before the sweep wrote"
    await asyncio.sleep(0.1)
    assert (await stack.api.get(f"/compute/v2.1/servers/{sid}")).json()["server"]["status"] == "ERROR"
    assert [n.event_type for n in notes] == ["instance.create.start", "instance.create.error"]
    assert notes[-1].payload["nova_object.data"]["fault"]["nova_object.data"]["exception"] == "TaskStuck"
    swept = [parse_line(line) for line in json_log.read_text().splitlines()]
    assert any(e and e["logger"] == "canopy.conductor.sweeper" and sid in e["message"] for e in swept)
    assert any("Stuck in task state" in e["message"] for e in gather([json_log], request_id)), "sweep is traced"
    # the ERROR server can be deleted, which gives its claim back
    assert (await stack.api.delete(f"/compute/v2.1/servers/{sid}")).status_code == 204
    await wait_for_server(stack.api, sid, {"DELETED"})


async def test_an_orphaned_task_state_is_swept_by_any_conductor(stack: Any) -> None:
    sid = (await stack.api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    await wait_for_server(stack.api, sid, {"ACTIVE"})
    await _age(stack, sid, 7200, task_state="powering-on")  # no task row drives it
    assert await StuckSweeper(stack.conductor.env).sweep() == 1
    server = await wait_for_server(stack.api, sid, {"ERROR"})
    assert "Stuck in task state powering-on" in server["fault"]["message"]
    assert "orphaned task state" in server["fault"]["details"]


@pytest.mark.parametrize("lease", ["another conductor's live lease", "an expired lease"])
async def test_a_task_this_conductor_does_not_drive_is_left_alone(stack: Any, lease: str) -> None:
    sid = (await stack.api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    await wait_for_server(stack.api, sid, {"ACTIVE"})
    now = stack.cloud.clock.now()
    owner, until = (("conductor-other", now + dt.timedelta(minutes=5)) if lease.startswith("another")
                    else (stack.conductor.name, now - dt.timedelta(minutes=5)))
    await stack.cloud.dbs.default_cell.write(lambda conn: conn.execute(insert(c.tasks).values(
        instance_uuid=sid, kind="stop", payload={}, request_id="req-x", lease_owner=owner, lease_expires_at=until,
        attempts=1, created_at=now)))
    await _age(stack, sid, 7200, task_state="powering-off")
    assert await StuckSweeper(stack.conductor.env).sweep() == 0
    server = (await stack.api.get(f"/compute/v2.1/servers/{sid}")).json()["server"]
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:task_state"] == "powering-off"
