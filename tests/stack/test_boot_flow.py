"""A server's life through the Compute API on an in-process cloud with fake hypervisors."""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.clouds import V, server_body, wait_for_server


async def test_boot_reaches_active_with_an_address_from_the_subnet(stack: Any) -> None:
    api = stack.api
    resp = await api.post("/compute/v2.1/servers", json=server_body(), as_user="demo", headers=V)
    assert resp.status_code == 202, resp.text
    sid = resp.json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ACTIVE", "ERROR"}, as_user="demo")
    assert server["status"] == "ACTIVE", server
    addrs = server["addresses"]["public"]
    assert len(addrs) == 1 and addrs[0]["version"] == 4
    ip = ipaddress.ip_address(addrs[0]["addr"])
    assert ip in ipaddress.ip_network("203.0.113.0/24") and ip != ipaddress.ip_address("203.0.113.1")
    assert server["OS-EXT-STS:power_state"] == 1
    assert server["flavor"] == {"id": "1", "links": server["flavor"]["links"]}  # 2.1 shape
    at_287 = (await api.get(f"/compute/v2.1/servers/{sid}", as_user="demo", headers=V)).json()["server"]
    assert at_287["flavor"]["original_name"] == "m1.tiny" and at_287["flavor"]["ram"] == 512
    actions = (await api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions", as_user="demo")).json()
    assert [a["action"] for a in actions["instanceActions"]] == ["create"]
    rid = actions["instanceActions"][0]["request_id"]
    detail = (await api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{rid}", as_user="admin",
                            headers=V)).json()["instanceAction"]
    events = [e["event"] for e in detail["events"]]
    assert events == ["conductor_schedule_and_build_instances", "compute_allocate_network", "compute_spawn"]
    assert all(e["result"] == "Success" for e in detail["events"])


async def test_stop_of_a_stopped_server_is_409(stack: Any) -> None:
    api = stack.api
    sid = (await api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    await wait_for_server(api, sid, {"ACTIVE"})
    await api.post(f"/compute/v2.1/servers/{sid}/action", json={"os-stop": None})
    await wait_for_server(api, sid, {"SHUTOFF"})
    resp = await api.post(f"/compute/v2.1/servers/{sid}/action", json={"os-stop": None})
    assert resp.status_code == 409
    assert "vm_state stopped" in resp.json()["conflictingRequest"]["message"]
