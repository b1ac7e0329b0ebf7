"""A server's life through the Compute API on an in-process cloud with fake hypervisors."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import pytest

from canopy.seed import PUBLIC_NETWORK_ID, TINY_IMAGE_ID
from tests.conftest import BACKENDS, wait_for_server

V = {"OpenStack-API-Version": "compute 2.87"}


def server_body(**over: Any) -> dict[str, Any]:
    body = {"name": "web-1", "flavorRef": "1", "imageRef": TINY_IMAGE_ID, "networks": [{"uuid": PUBLIC_NETWORK_ID}]}
    body.update(over)
    return {"server": body}


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


async def test_stop_of_a_stopped_server_is_409(stack: Any) -> None:
    api = stack.api
    sid = (await api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    await wait_for_server(api, sid, {"ACTIVE"})
    await api.post(f"/compute/v2.1/servers/{sid}/action", json={"os-stop": None})
    await wait_for_server(api, sid, {"SHUTOFF"})
    resp = await api.post(f"/compute/v2.1/servers/{sid}/action", json={"os-stop": None})
    assert resp.status_code == 409
    assert "vm_state stopped" in resp.json()["conflictingRequest"]["message"]
