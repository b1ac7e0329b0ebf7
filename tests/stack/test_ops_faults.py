"""Why something failed: a fault naming the step and the cause, the action's events, and the request ID
of the call that started it in the fault, the action and every service's log lines."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from canopy.db import tables_cell as c
from canopy.observability.trace import gather
from canopy.seed import PUBLIC_NETWORK_ID
from tests.clouds import V, server_body, wait_for_server


async def fault_row(stack: Any, sid: str) -> dict[str, Any]:
    rows = await stack.cloud.dbs.default_cell.read(lambda conn: [dict(r) for r in conn.execute(
        select(c.instance_faults).where(c.instance_faults.c.instance_uuid == sid)
        .order_by(c.instance_faults.c.id)).mappings()])
    assert rows, f"no fault for {sid}"
    return rows[-1]


async def action_of(stack: Any, sid: str, request_id: str) -> dict[str, Any]:
    resp = await stack.api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{request_id}", headers=V)
    assert resp.status_code == 200, resp.text
    return resp.json()["instanceAction"]  # type: ignore[no-any-return]


async def boot(stack: Any, **over: Any) -> tuple[str, str]:
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(**over), headers=V)
    assert resp.status_code == 202, resp.text
    return resp.json()["server"]["id"], resp.headers["x-openstack-request-id"]


# -- a failure at each build step --------------------------------------------------------------------

async def _force_every_agent_down(stack: Any) -> str:
    mv = {"OpenStack-API-Version": "compute 2.53"}
    services = (await stack.api.get("/compute/v2.1/os-services?binary=canopy-agent", headers=mv)).json()
    for svc in services["services"]:
        resp = await stack.api.put(f"/compute/v2.1/os-services/{svc['id']}", json={"forced_down": True}, headers=mv)
        assert resp.status_code == 200, resp.text
    await stack.scheduler.refresh(force=True)  # the scheduler re-reads liveness on its own within seconds
    return "No valid host"


async def _take_the_address(stack: Any) -> str:
    body = {"port": {"network_id": PUBLIC_NETWORK_ID, "fixed_ips": [{"ip_address": "203.0.113.77"}]}}
    assert (await stack.api.post("/network/v2.0/ports", json=body)).status_code == 201
    return "already allocated"


async def _break_the_driver(stack: Any) -> str:
    for driver in stack.drivers.values():
        driver.fail_on("spawn", "libvirt: domain failed to start: could not open disk /var/lib/canopy/disk: "
                                "Permission denied")
    return "Permission denied"


# (no block_device_mapping: a boot has no work of that step, and goes from networking to spawning)
@pytest.mark.parametrize("step", ["scheduling", "networking", "spawning"])
async def test_a_failure_at_each_build_step_is_a_fault_naming_the_step_the_cause_and_the_request(
        stack: Any, step: str, json_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    over: dict[str, Any] = {}
    if step == "scheduling":
        cause = await _force_every_agent_down(stack)
    elif step == "networking":
        cause = await _take_the_address(stack)
        over = {"networks": [{"uuid": PUBLIC_NETWORK_ID, "fixed_ip": "203.0.113.77"}]}
    else:
        cause = await _break_the_driver(stack)
    sid, request_id = await boot(stack, **over)
    server = await wait_for_server(stack.api, sid, {"ERROR", "ACTIVE"})

    assert server["status"] == "ERROR"
    message = server["fault"]["message"]
    assert f"Build failed at {step}" in message and cause in message, message
    assert server["fault"]["details"], "admins see the exception chain"
    fault = await fault_row(stack, sid)
    assert fault["request_id"] == request_id and fault["task_state"] == step

    action = await action_of(stack, sid, request_id)
    assert action["request_id"] == request_id and action["message"] == "Error"
    failed = [e for e in action["events"] if e["result"] == "Error"]
    assert len(failed) == 1 and cause in (failed[0]["details"] or ""), action["events"]

    lines = gather([json_log], request_id)
    conductor = [e for e in lines if e["service"] == "conductor"]
    assert any(f"Build failed at {step}" in e["message"] for e in conductor), lines
    if step == "spawning":  # the only step that ran on the hypervisor
        agent = [e for e in lines if e["service"] == "agent"]
        assert agent and all(e["host"] == fault["host"] for e in agent), lines
        assert any("spawn_instance" in e["message"] and e["level"] == "WARNING" and cause in e["message"]
                   for e in agent), agent


async def test_a_global_request_id_from_the_client_follows_the_request(stack: Any, json_log: Path) -> None:
    global_id = f"req-{uuid.uuid4()}"
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(), headers={**V, "X-OpenStack-Request-ID":
                                                                                     global_id})
    sid, request_id = resp.json()["server"]["id"], resp.headers["x-openstack-request-id"]
    assert request_id != global_id
    await wait_for_server(stack.api, sid, {"ACTIVE"})
    lines = gather([json_log], global_id)
    assert {e["service"] for e in lines} >= {"api", "conductor", "agent"}, lines
    assert all(e["request_id"] == request_id for e in lines if e["service"] in ("conductor", "agent"))


# -- stops against a guest that ignores the shutdown request -----------------------------------------

async def _active_on_a_deaf_guest(stack: Any) -> tuple[str, str]:
    sid, _ = await boot(stack)
    server = await wait_for_server(stack.api, sid, {"ACTIVE"})
    host = server["OS-EXT-SRV-ATTR:host"]
    stack.drivers[host].ignore_acpi.add(sid)
    return sid, host


async def test_os_stop_of_a_guest_that_ignores_shutdown_ends_off_through_the_hard_fallback(stack: Any) -> None:
    sid, host = await _active_on_a_deaf_guest(stack)
    resp = await stack.api.post(f"/compute/v2.1/servers/{sid}/action", json={"os-stop": None})
    assert resp.status_code == 202
    request_id = resp.headers["x-openstack-request-id"]
    server = await wait_for_server(stack.api, sid, {"SHUTOFF", "ERROR"})
    assert server["status"] == "SHUTOFF" and server["OS-EXT-STS:power_state"] == 4
    assert "fault" not in server
    events = {e["event"]: e for e in (await action_of(stack, sid, request_id))["events"]}
    assert events["compute_clean_shutdown"]["result"] == "Timeout"
    assert "still running" in events["compute_clean_shutdown"]["details"]
    assert events["compute_hard_power_off"]["result"] == "Success"
    assert await stack.drivers[host].power_state(sid) == 4


async def test_stop_soft_of_a_guest_that_ignores_shutdown_ends_with_a_fault_saying_so(stack: Any) -> None:
    sid, host = await _active_on_a_deaf_guest(stack)
    resp = await stack.api.post(f"/compute/v2.1/servers/{sid}/action", json={"canopy-stopSoft": {"timeout": 1}})
    assert resp.status_code == 202
    request_id = resp.headers["x-openstack-request-id"]
    for _ in range(200):
        server = (await stack.api.get(f"/compute/v2.1/servers/{sid}")).json()["server"]
        if server["OS-EXT-STS:task_state"] is None:
            break
        await __import__("asyncio").sleep(0.02)
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:power_state"] == 1, "the guest is still running"
    assert "ignored the shutdown request" in server["fault"]["message"], server.get("fault")
    fault = await fault_row(stack, sid)
    assert fault["request_id"] == request_id and fault["task_state"] == "powering-off-soft"
    action = await action_of(stack, sid, request_id)
    assert action["message"] == "Error"
    assert [e["result"] for e in action["events"]] == ["Error"]
    assert await stack.drivers[host].power_state(sid) == 1
