"""An agent's failing health checks travel heartbeat -> conductor -> `services.health` -> `/healthcheck/fleet`
on an in-process cloud, and clear when the checks pass again (the checks alone: tests/unit/test_agent_health.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from canopy.db import tables_cell as c
from tests.clouds import ApiClient, in_process_cloud, make_settings


@pytest.fixture
async def fast_stack(data_dir: Path) -> AsyncIterator[Any]:
    """An in-process cloud with 3 fake hypervisors beating every 0.1 s, flushed every 0.05 s."""
    settings = make_settings(data_dir)
    settings.fake.spawn_delay_s = settings.fake.op_delay_s = 0.0
    settings.agent.heartbeat_s = 0.1
    settings.conductor.heartbeat_flush_s = 0.05
    settings.conductor.stop_timeout_s = 0.5
    async with in_process_cloud(settings, 3) as aio:
        yield aio


async def fleet_when(api: ApiClient, want: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline, fleet = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        fleet = (await api.get("/healthcheck/fleet")).json()["fleet"]
        if want(fleet):
            return fleet
        await asyncio.sleep(0.05)
    raise AssertionError(f"the fleet view never matched; last: {fleet}")


async def health_column(stack: Any) -> dict[tuple[str, str], Any]:
    def read(conn: Any) -> dict[tuple[str, str], Any]:
        return {(r.binary, r.host): r.health for r in conn.execute(select(c.services))}
    return await stack.cloud.dbs.cell(stack.cloud.cell_name).read_fresh(read)


async def test_failing_checks_travel_to_the_fleet_view_and_clear(fast_stack: Any) -> None:
    api = fast_stack.api
    mv = {"OpenStack-API-Version": "compute 2.53"}
    fleet = await fleet_when(api, lambda f: f["totals"]["up"] == 3 and f["totals"]["unhealthy"] == 0)
    assert fleet["failing_checks"] == {} and fleet["unhealthy_hosts"] == []

    fast_stack.drivers["hv-0002"].fail_on("wait_ready", "libvirt: connection reset by peer", times=40)
    fleet = await fleet_when(api, lambda f: f["totals"]["unhealthy"] == 1)
    assert fleet["failing_checks"] == {"hypervisor": 1}
    assert fleet["unhealthy_hosts"] == [{"host": "hv-0002", "datacenter": "dc1", "disabled": False,
                                         "checks": {"hypervisor": "DriverError: libvirt: connection reset by peer"}}]
    column = await health_column(fast_stack)
    assert column[("canopy-agent", "hv-0002")] == {"hypervisor": "DriverError: libvirt: connection reset by peer"}
    assert {k: v for k, v in column.items() if k != ("canopy-agent", "hv-0002")} == dict.fromkeys(
        [k for k in column if k != ("canopy-agent", "hv-0002")])  # the others (and control services): NULL

    # os-services keeps Nova's shape: no health there, disabled_reason untouched
    after = (await api.get("/compute/v2.1/os-services", headers=mv)).json()["services"]
    nova_keys = {"id", "binary", "host", "zone", "status", "state", "updated_at", "disabled_reason", "forced_down"}
    assert [set(s) for s in after] == [nova_keys] * len(after)
    assert all(s["disabled_reason"] is None and s["state"] == "up" for s in after)

    # a host forced down is down, not unhealthy (its health is no longer news)
    sid = next(s["id"] for s in after if s["host"] == "hv-0002")
    await api.put(f"/compute/v2.1/os-services/{sid}", json={"forced_down": True}, headers=mv)
    fleet = (await api.get("/healthcheck/fleet")).json()["fleet"]
    assert fleet["totals"]["unhealthy"] == 0 and [h["host"] for h in fleet["down_hosts"]] == ["hv-0002"]
    await api.put(f"/compute/v2.1/os-services/{sid}", json={"forced_down": False}, headers=mv)

    # the failures run out: the next heartbeat clears the column
    fleet = await fleet_when(api, lambda f: f["totals"]["unhealthy"] == 0 and f["totals"]["up"] == 3)
    assert fleet["failing_checks"] == {}
    assert (await health_column(fast_stack))[("canopy-agent", "hv-0002")] is None
