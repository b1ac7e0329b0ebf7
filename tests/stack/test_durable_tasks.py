"""Durable tasks: a lost wake-up cast and a conductor that died are both recovered by the sweeper."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from sqlalchemy import select, update

from canopy.conductor import records
from canopy.db import tables_cell as c
from canopy.rpc.calls import WakeTask
from tests.clouds import V, server_body, wait_for_server


async def _create_without_wakeup(stack: Any, monkeypatch: Any) -> str:
    real_cast = stack.cloud.bus.cast

    async def drop_wakeups(target: Any, msg: Any) -> None:
        if not isinstance(msg, WakeTask):
            await real_cast(target, msg)

    monkeypatch.setattr(stack.cloud.bus, "cast", drop_wakeups)
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(), headers=V)
    assert resp.status_code == 202
    monkeypatch.setattr(stack.cloud.bus, "cast", real_cast)
    return str(resp.json()["server"]["id"])


async def test_a_lost_cast_is_found_by_the_sweeper(stack: Any, monkeypatch: Any) -> None:
    sid = await _create_without_wakeup(stack, monkeypatch)
    await asyncio.sleep(0.2)
    server = (await stack.api.get(f"/compute/v2.1/servers/{sid}")).json()["server"]
    assert server["status"] == "BUILD" and server["OS-EXT-STS:task_state"] == "scheduling"
    stack.settings.conductor.lost_cast_s = 0.0
    assert await stack.conductor.sweep() == 1
    assert (await wait_for_server(stack.api, sid, {"ACTIVE", "ERROR"}))["status"] == "ACTIVE"


async def _expire_lease(stack: Any, sid: str, **instance_values: Any) -> None:
    db = stack.cloud.dbs.default_cell
    past = stack.cloud.clock.now() - dt.timedelta(seconds=1)

    def write(conn: Any) -> None:
        conn.execute(update(c.tasks).where(c.tasks.c.instance_uuid == sid)
                     .values(lease_owner="conductor-dead", lease_expires_at=past, attempts=1))
        if instance_values:
            conn.execute(update(c.instances).where(c.instances.c.uuid == sid).values(**instance_values))

    await db.write(write)


async def test_a_build_lost_while_scheduling_is_resumed(stack: Any, monkeypatch: Any) -> None:
    sid = await _create_without_wakeup(stack, monkeypatch)
    await _expire_lease(stack, sid)
    assert await stack.conductor.sweep() == 1
    assert (await wait_for_server(stack.api, sid, {"ACTIVE", "ERROR"}))["status"] == "ACTIVE"


async def test_a_build_lost_while_spawning_is_resumed_to_active(stack: Any, monkeypatch: Any) -> None:
    sid = await _create_without_wakeup(stack, monkeypatch)
    await _expire_lease(stack, sid, task_state="spawning")
    assert await stack.conductor.sweep() == 1
    server = await wait_for_server(stack.api, sid, {"ERROR", "ACTIVE"})
    assert server["status"] == "ACTIVE", server.get("fault")
    tasks = await stack.cloud.dbs.default_cell.read(
        lambda conn: conn.execute(select(c.tasks).where(c.tasks.c.instance_uuid == sid)).all())
    assert tasks == []


async def test_a_build_taken_over_too_many_times_ends_in_error_with_a_fault(stack: Any, monkeypatch: Any) -> None:
    sid = await _create_without_wakeup(stack, monkeypatch)
    await _expire_lease(stack, sid, task_state="spawning")
    limit = stack.settings.conductor.max_task_attempts
    await stack.cloud.dbs.default_cell.write(lambda conn: conn.execute(
        update(c.tasks).where(c.tasks.c.instance_uuid == sid).values(attempts=limit)))
    assert await stack.conductor.sweep() == 1
    server = await wait_for_server(stack.api, sid, {"ERROR", "ACTIVE"})
    assert server["status"] == "ERROR"
    assert "taken over" in server["fault"]["message"], server["fault"]


async def test_a_live_lease_is_not_taken(stack: Any, monkeypatch: Any) -> None:
    sid = await _create_without_wakeup(stack, monkeypatch)
    db = stack.cloud.dbs.default_cell
    task_id = await db.read(lambda conn: conn.execute(
        select(c.tasks.c.id).where(c.tasks.c.instance_uuid == sid)).scalar_one())
    now = stack.cloud.clock.now()
    assert await db.write(records.lease_task, task_id, "conductor-a", now, 60)
    assert not await db.write(records.lease_task, task_id, "conductor-b", now, 60)
    assert await db.write(records.lease_task, task_id, "conductor-b", now + dt.timedelta(seconds=61), 60)


async def test_a_driver_failure_at_spawn_is_error_with_a_fault_naming_step_and_cause(stack: Any) -> None:
    for driver in stack.drivers.values():
        driver.fail_on("spawn", "fake: could not open disk /var/lib/canopy/disk: Permission denied")
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(), headers=V)
    sid = resp.json()["server"]["id"]
    server = await wait_for_server(stack.api, sid, {"ERROR", "ACTIVE"})
    assert server["status"] == "ERROR"
    msg = server["fault"]["message"]
    assert "spawning" in msg and "Permission denied" in msg and "hv-" in msg, msg
    ports = (await stack.api.get(f"/network/v2.0/ports?device_id={sid}")).json()["ports"]
    assert ports == []
    hosts = (await stack.api.get("/compute/v2.1/os-hypervisors/detail")).json()["hypervisors"]
    assert sum(h["vcpus_used"] for h in hosts) == 0
