"""pause/unpause, suspend/resume, os-getConsoleOutput, the power-state sync and reconcile through the
Compute API, on the in-process stack with simulated hypervisors (the fake driver implements them all)."""

from __future__ import annotations

from typing import Any

from canopy.agent.reconcile import HostReconciler
from canopy.agent.virt.base import PowerState
from canopy.agent.virt.vif import tap_name
from tests.clouds import boot_active as boot
from tests.clouds import wait_for_server

V = {"OpenStack-API-Version": "compute 2.87"}


async def act(stack: Any, sid: str, body: dict[str, Any]) -> Any:
    return await stack.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, as_user="demo", json=body)


async def test_pause_unpause_suspend_resume(stack: Any) -> None:
    sid, driver = await boot(stack)
    for action, status, power in (("pause", "PAUSED", 3), ("unpause", "ACTIVE", 1),
                                  ("suspend", "SUSPENDED", 7), ("resume", "ACTIVE", 1)):
        resp = await act(stack, sid, {action: None})
        assert resp.status_code == 202, resp.text
        server = await wait_for_server(stack.api, sid, {status}, as_user="demo")
        assert server["OS-EXT-STS:power_state"] == power, (action, server)
        assert server["OS-EXT-STS:task_state"] is None
    assert (await driver.power_state(sid)) == 1
    actions = (await stack.api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions", headers=V,
                                   as_user="demo")).json()["instanceActions"]
    assert [a["action"] for a in actions][:4] == ["resume", "suspend", "unpause", "pause"]


async def test_actions_refused_in_the_wrong_state(stack: Any) -> None:
    sid, _ = await boot(stack)
    for action in ("unpause", "resume"):
        resp = await act(stack, sid, {action: None})
        assert resp.status_code == 409, resp.text
        assert f"Cannot '{action}' instance {sid} while it is in vm_state active" in resp.text
    await act(stack, sid, {"os-stop": None})
    await wait_for_server(stack.api, sid, {"SHUTOFF"}, as_user="demo")
    resp = await act(stack, sid, {"pause": None})
    assert resp.status_code == 409 and "vm_state stopped" in resp.text


async def test_console_output(stack: Any) -> None:
    sid, driver = await boot(stack, "console-vm")
    await act(stack, sid, {"reboot": {"type": "HARD"}})
    await wait_for_server(stack.api, sid, {"ACTIVE"}, as_user="demo")
    resp = await act(stack, sid, {"os-getConsoleOutput": {"length": 1}})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"output": "console-vm booted (boot 2)\n"}
    everything = (await act(stack, sid, {"os-getConsoleOutput": {"length": -1}})).json()["output"]
    assert everything.splitlines() == ["console-vm booted (boot 1)", "console-vm booted (boot 2)"]
    assert (await act(stack, sid, {"os-getConsoleOutput": {}})).json()["output"] == everything
    bad = await act(stack, sid, {"os-getConsoleOutput": {"length": "many"}})
    assert bad.status_code == 400 and "length" in bad.text


async def test_sync_never_overrides_a_running_task(stack: Any) -> None:
    sid, driver = await boot(stack)
    # a task is in flight: the database keeps what the task will decide
    from sqlalchemy import update

    from canopy.db import tables_cell

    await stack.cloud.dbs.cell("cell1").write(lambda conn: conn.execute(
        update(tables_cell.instances).where(tables_cell.instances.c.uuid == sid).values(task_state="powering-off")))
    driver.guest_halts(sid)
    await HostReconciler(driver.host, driver, stack.cloud.bus).sync_power(full=True)
    server = (await stack.api.get(f"/compute/v2.1/servers/{sid}", headers=V)).json()["server"]
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:power_state"] == 1


async def test_reconcile_restarts_what_should_run_and_is_idempotent(stack: Any) -> None:
    sid, driver = await boot(stack)
    stopped, _ = await boot(stack, "stays-off")
    await act(stack, stopped, {"os-stop": None})
    await wait_for_server(stack.api, stopped, {"SHUTOFF"}, as_user="demo")
    # the host "reboots": its guests are off, taps gone
    for d in stack.drivers.values():
        for uuid in list(d.guests):
            d.guests[uuid].power = PowerState.SHUTDOWN
        d.taps.clear()
    reports = {}
    for host, d in stack.drivers.items():
        rec = HostReconciler(host, d, stack.cloud.bus, power_sync_s=3600, reconcile_s=3600)
        reports[host] = (await rec.reconcile(), await rec.reconcile())
    started = [u for first, _ in reports.values() for u in first.started]
    assert sid in started and stopped not in started
    assert all(not second.changed for _, second in reports.values())
    assert await driver.power_state(sid) == 1
    ports = (await stack.api.get(f"/network/v2.0/ports?device_id={sid}")).json()["ports"]
    assert tap_name(ports[0]["id"]) in driver.taps
