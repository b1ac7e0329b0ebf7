"""os-simple-tenant-usage: hours from launch to termination, clipped to the period, times the flavor."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from canopy.api.compute.usage import hours_in
from tests.clouds import V, project_id, server_body, wait_for_server

T0 = dt.datetime(2026, 5, 1, 0, 0)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


@pytest.mark.parametrize(("launched", "terminated", "now", "expected"), [
    (at(-5), None, at(20), 10.0),     # ran the whole period
    (at(2), None, at(20), 8.0),       # launched inside it
    (at(2), at(4), at(20), 2.0),      # launched and deleted inside it
    (at(-5), at(3), at(20), 3.0),     # deleted inside it
    (at(-5), at(-1), at(20), 0.0),    # gone before it began
    (at(11), None, at(20), 0.0),      # launched after it ended
    (None, None, at(20), 0.0),        # never launched (a failed build)
    (at(0), at(10), at(20), 10.0),    # exactly the period
    (at(2), None, at(5), 3.0),        # still running, the period not over: up to now, not its end
    (at(-5), at(12), at(20), 10.0),   # deleted after it
])
def test_hours_within_the_period(launched: dt.datetime | None, terminated: dt.datetime | None, now: dt.datetime,
                                 expected: float) -> None:
    assert hours_in(launched, terminated, at(0), at(10), now) == pytest.approx(expected)


def period(**query: str) -> str:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    params = {"start": (now - dt.timedelta(hours=1)).isoformat(), "end": (now + dt.timedelta(hours=1)).isoformat(),
              **query}
    return urlencode(params)


async def _project_id(stack: Any, user: str) -> str:
    return project_id(stack.cloud, user)


async def _boot(stack: Any, name: str) -> str:
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(name=name), as_user="demo", headers=V)
    sid = str(resp.json()["server"]["id"])
    await wait_for_server(stack.api, sid, {"ACTIVE"}, as_user="demo")
    return sid


async def test_usage_counts_running_and_deleted_servers_by_their_flavor(stack: Any) -> None:
    api = stack.api
    kept, gone = await _boot(stack, "kept"), await _boot(stack, "gone")
    assert (await api.delete(f"/compute/v2.1/servers/{gone}", as_user="demo")).status_code == 204
    await wait_for_server(api, gone, {"DELETED"}, as_user="demo")
    failed = (await api.post("/compute/v2.1/flavors", json={"flavor": {"name": "huge", "ram": 10**6, "vcpus": 1,
                                                                        "disk": 1, "id": "huge"}})).status_code
    assert failed == 200
    resp = await api.post("/compute/v2.1/servers", json=server_body(flavorRef="huge"), headers=V)
    sid = resp.json()["server"]["id"]
    assert (await wait_for_server(api, sid, {"ERROR", "ACTIVE"}))["status"] == "ERROR"  # never launched: no usage

    demo = await _project_id(stack, "demo")
    listing = (await api.get(f"/compute/v2.1/os-simple-tenant-usage?{period(detailed='1')}")).json()
    usages = {u["tenant_id"]: u for u in listing["tenant_usages"]}
    assert list(usages) == [demo], "the admin's failed build used nothing"
    usage = usages[demo]
    lines = {s["instance_id"]: s for s in usage["server_usages"]}
    assert set(lines) == {kept, gone}
    assert lines[gone]["state"] == "terminated" and lines[gone]["ended_at"] and lines[gone]["hours"] < 0.01
    assert lines[kept]["state"] == "active" and lines[kept]["ended_at"] is None
    assert 0 < lines[kept]["hours"] < 0.01, "from launch (just now) to now, not to the period's end"
    assert lines[kept]["uptime"] >= 0
    assert lines[kept]["flavor"] == "m1.tiny" and lines[kept]["memory_mb"] == 512 and lines[kept]["vcpus"] == 1
    assert usage["total_hours"] == pytest.approx(sum(s["hours"] for s in lines.values()))
    assert usage["total_memory_mb_usage"] == pytest.approx(sum(512 * s["hours"] for s in lines.values()))
    assert usage["total_vcpus_usage"] == pytest.approx(usage["total_hours"])
    assert usage["total_local_gb_usage"] == pytest.approx(sum(s["local_gb"] * s["hours"] for s in lines.values()))

    summary = (await api.get(f"/compute/v2.1/os-simple-tenant-usage?{period()}")).json()["tenant_usages"][0]
    assert "server_usages" not in summary and summary["total_hours"] == pytest.approx(usage["total_hours"], abs=1e-3)
    own = (await api.get(f"/compute/v2.1/os-simple-tenant-usage/{demo}?{period()}", as_user="demo")).json()
    assert {s["instance_id"] for s in own["tenant_usage"]["server_usages"]} == {kept, gone}


async def test_usage_rights_and_bad_input(stack: Any) -> None:
    api = stack.api
    demo, admin = await _project_id(stack, "demo"), await _project_id(stack, "admin")
    assert (await api.get(f"/compute/v2.1/os-simple-tenant-usage?{period()}", as_user="demo")).status_code == 403
    other = await api.get(f"/compute/v2.1/os-simple-tenant-usage/{admin}?{period()}", as_user="demo")
    assert other.status_code == 403
    empty = await api.get(f"/compute/v2.1/os-simple-tenant-usage/{demo}?{period()}", as_user="demo")
    assert empty.json() == {"tenant_usage": {}}
    bad = await api.get("/compute/v2.1/os-simple-tenant-usage?start=yesterday")
    assert bad.status_code == 400 and "start" in bad.json()["badRequest"]["message"]
    backwards = await api.get("/compute/v2.1/os-simple-tenant-usage?start=2026-02-01T00:00:00&end=2026-01-01T00:00:00")
    assert backwards.status_code == 400 and "cannot occur after" in backwards.json()["badRequest"]["message"]


async def test_usage_pages_from_2_40(stack: Any) -> None:
    api = stack.api
    first, second = await _boot(stack, "a"), await _boot(stack, "b")
    demo = await _project_id(stack, "demo")
    mv = {"OpenStack-API-Version": "compute 2.40"}
    page = (await api.get(f"/compute/v2.1/os-simple-tenant-usage/{demo}?{period(limit='1')}", headers=mv)).json()
    assert [s["instance_id"] for s in page["tenant_usage"]["server_usages"]] == [first]
    link = urlsplit(page["tenant_usage_links"][0]["href"])
    assert link.path.endswith(f"/os-simple-tenant-usage/{demo}") and f"marker={first}" in link.query
    nxt = (await api.get(f"/compute/v2.1/os-simple-tenant-usage/{demo}?{link.query}", headers=mv)).json()
    assert [s["instance_id"] for s in nxt["tenant_usage"]["server_usages"]] == [second]
    bad = await api.get(f"/compute/v2.1/os-simple-tenant-usage?{period(marker='nope')}", headers=mv)
    assert bad.status_code == 400 and "marker" in bad.json()["badRequest"]["message"]
    # before 2.40 there are no links
    old = (await api.get(f"/compute/v2.1/os-simple-tenant-usage/{demo}?{period(limit='1')}")).json()
    assert "tenant_usage_links" not in old and len(old["tenant_usage"]["server_usages"]) == 2
