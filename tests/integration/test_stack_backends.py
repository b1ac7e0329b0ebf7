"""The in-process cloud on each database (SQLite, MariaDB, PostgreSQL): a server's life, a flavor too big
for every host, the power-state sync, and agents' health written by the batched heartbeat flush."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from canopy.agent.reconcile import HostReconciler
from canopy.db import tables_cell as c
from canopy.rpc.calls import Heartbeat
from canopy.rpc.messages import decode_message
from tests.clouds import BACKENDS, V, server_body, wait_for_server
from tests.clouds import boot_active as boot


async def act(stack: Any, sid: str, body: dict[str, Any]) -> Any:
    return await stack.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, as_user="demo", json=body)


async def health_column(stack: Any) -> dict[tuple[str, str], Any]:
    def read(conn: Any) -> dict[tuple[str, str], Any]:
        return {(r.binary, r.host): r.health for r in conn.execute(select(c.services))}
    return await stack.cloud.dbs.cell(stack.cloud.cell_name).read_fresh(read)


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
async def test_stop_start_reboot_delete_releases_the_address(stack: Any) -> None:
    api = stack.api
    resp = await api.post("/compute/v2.1/servers", json=server_body(), as_user="demo", headers=V)
    sid = resp.json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ACTIVE"}, as_user="demo")
    ip = server["addresses"]["public"][0]["addr"]
    for action, want in (({"os-stop": None}, "SHUTOFF"), ({"os-start": None}, "ACTIVE"),
                         ({"reboot": {"type": "HARD"}}, "ACTIVE")):
        resp = await api.post(f"/compute/v2.1/servers/{sid}/action", json=action, as_user="demo")
        assert resp.status_code == 202, resp.text
        server = await wait_for_server(api, sid, {want}, as_user="demo")
        assert server["OS-EXT-STS:task_state"] is None
    assert (await api.delete(f"/compute/v2.1/servers/{sid}", as_user="demo")).status_code == 204
    await wait_for_server(api, sid, {"DELETED"}, as_user="demo")
    ports = (await api.get(f"/network/v2.0/ports?device_id={sid}")).json()["ports"]
    assert ports == []
    found = (await api.get(f"/network/v2.0/ports?fixed_ips=ip_address%3D{ip}")).json()["ports"]
    assert found == []


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
async def test_flavor_too_big_for_every_host_is_error_with_a_fault_naming_the_resource(stack: Any) -> None:
    api = stack.api
    name = f"huge-{uuid.uuid4().hex[:6]}"
    resp = await api.post("/compute/v2.1/flavors", json={"flavor": {"name": name, "ram": 10**6, "vcpus": 1,
                                                                    "disk": 1, "id": name}})
    assert resp.status_code == 200, resp.text
    sid = (await api.post("/compute/v2.1/servers", json=server_body(flavorRef=name), headers=V)).json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ERROR", "ACTIVE"})
    assert server["status"] == "ERROR"
    message = server["fault"]["message"]
    assert "No valid host" in message and "0 of 4 hosts fit" in message and "ram: 4" in message, message


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
async def test_power_state_sync_guest_shut_itself_down_or_died(stack: Any) -> None:
    halts, driver1 = await boot(stack, "halts")
    dies, driver2 = await boot(stack, "dies")
    driver1.guest_halts(halts)
    driver2.guest_dies(dies)
    for driver in {id(driver1): driver1, id(driver2): driver2}.values():
        rec = HostReconciler(driver.host, driver, stack.cloud.bus)
        await rec.sync_power(full=True)
    halted = await wait_for_server(stack.api, halts, {"SHUTOFF"}, as_user="admin")
    assert halted["OS-EXT-STS:power_state"] == 4 and "fault" not in halted
    died = await wait_for_server(stack.api, dies, {"SHUTOFF"}, as_user="admin")
    assert died["fault"]["code"] == 500
    assert "Guest died on" in died["fault"]["message"] and "crashed" in died["fault"]["message"]
    # it can be started again
    await act(stack, dies, {"os-start": None})
    assert (await wait_for_server(stack.api, dies, {"ACTIVE"}, as_user="demo"))["OS-EXT-STS:power_state"] == 1


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
async def test_health_is_written_batched_and_cleared_by_an_agent_without_health(stack: Any) -> None:
    """On each database: the JSON column through the batched UPDATE, and the fleet view's read of it
    (MariaDB and PostgreSQL hold one database for the whole session: this test leaves no new rows)."""
    conductor, api = stack.conductor, stack.api
    quiet = next(a for a in stack.agents if a.host == "hv-0004")
    await quiet.stop()  # hv-0004 beats no more (and stays up for service_down_s): only this test writes it
    sick = {"disk:instances": "1.0 GB free on /x, below 5 GB", "switch": "no answer for 7s"}
    await conductor.handle(Heartbeat(binary="canopy-agent", host="hv-0004", sent_at=time.time(), health=sick))
    await conductor.flush_heartbeats()
    assert (await health_column(stack))[("canopy-agent", "hv-0004")] == sick
    fleet = (await api.get("/healthcheck/fleet")).json()["fleet"]
    assert [h for h in fleet["unhealthy_hosts"] if h["host"] == "hv-0004"] == [
        {"host": "hv-0004", "datacenter": "dc1", "disabled": False, "checks": sick}]
    assert fleet["failing_checks"]["disk:instances"] == fleet["failing_checks"]["switch"] == 1

    old = decode_message("heartbeat", 1, {"binary": "canopy-agent", "host": "hv-0004", "sent_at": time.time()})
    await conductor.handle(old)
    await conductor.flush_heartbeats()
    assert (await health_column(stack))[("canopy-agent", "hv-0004")] is None
    fleet = (await api.get("/healthcheck/fleet")).json()["fleet"]
    assert "hv-0004" not in [h["host"] for h in fleet["unhealthy_hosts"]]
