"""Booting on a port created beforehand, and os-interface attach/detach, through the whole stack (issue 16,
item 8). Each failed before the change: a create with a port was refused (400) and os-interface was 404."""

from __future__ import annotations

from typing import Any

from canopy.seed import PUBLIC_NETWORK_ID
from tests.clouds import V, boot_active, node_of, server_body, wait_for_server
from tests.waiting import wait_until

N = "/network/v2.0"


async def _port(stack: Any, user: str = "demo") -> dict[str, Any]:
    resp = await stack.api.post(f"{N}/ports", as_user=user, json={"port": {"network_id": PUBLIC_NETWORK_ID}})
    assert resp.status_code == 201, resp.text
    return resp.json()["port"]  # type: ignore[no-any-return]


async def _port_view(stack: Any, port_id: str) -> Any:
    return await stack.api.get(f"{N}/ports/{port_id}")


def _on_host(stack: Any, host: str) -> set[str]:
    program = node_of(stack, host).program
    return {p.id for p in program.ports} if program is not None else set()


async def _settled(stack: Any, sid: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        server = (await stack.api.get(f"/compute/v2.1/servers/{sid}", headers=V)).json()["server"]
        return server if server["OS-EXT-STS:task_state"] is None else None

    return await wait_until(done, what=f"server {sid}'s task ending")


async def test_boot_on_a_precreated_port_binds_it_and_delete_gives_it_back(stack: Any) -> None:
    port = await _port(stack)
    ip = port["fixed_ips"][0]["ip_address"]
    resp = await stack.api.post("/compute/v2.1/servers", as_user="demo", headers=V,
                                json=server_body(networks=[{"port": port["id"]}]))
    assert resp.status_code == 202, resp.text
    sid = resp.json()["server"]["id"]
    server = await wait_for_server(stack.api, sid, {"ACTIVE"})
    host = server["OS-EXT-SRV-ATTR:host"]
    assert [a["addr"] for addrs in server["addresses"].values() for a in addrs] == [ip]
    bound = (await _port_view(stack, port["id"])).json()["port"]
    assert (bound["device_id"], bound["binding:host_id"]) == (sid, host)
    assert [p.id for p in stack.drivers[host].guests[sid].spec.ports] == [port["id"]]
    again = await stack.api.post("/compute/v2.1/servers", as_user="demo", headers=V,
                                 json=server_body(networks=[{"port": port["id"]}]))
    assert again.status_code == 409 and "in use" in again.json()["conflictingRequest"]["message"]

    assert (await stack.api.delete(f"/compute/v2.1/servers/{sid}", as_user="demo")).status_code == 204
    await wait_for_server(stack.api, sid, {"DELETED"})
    kept = (await _port_view(stack, port["id"])).json()["port"]
    assert (kept["device_id"], kept["binding:host_id"], kept["fixed_ips"][0]["ip_address"]) == ("", "", ip)
    await node_of(stack, host).wait_applied(lambda: port["id"] not in _on_host(stack, host))


async def test_a_port_of_another_project_or_for_many_servers_is_refused(stack: Any) -> None:
    theirs = await _port(stack, user="admin")
    resp = await stack.api.post("/compute/v2.1/servers", as_user="demo", headers=V,
                                json=server_body(networks=[{"port": theirs["id"]}]))
    assert resp.status_code == 400 and "could not be found" in resp.json()["badRequest"]["message"]
    mine = await _port(stack)
    resp = await stack.api.post("/compute/v2.1/servers", as_user="demo", headers=V,
                                json=server_body(networks=[{"port": mine["id"]}], max_count=2))
    assert resp.status_code == 400 and "multiple instances" in resp.json()["badRequest"]["message"]
    assert (await _port_view(stack, mine["id"])).json()["port"]["device_id"] == ""


async def test_attach_and_detach_a_users_port(stack: Any) -> None:
    sid, driver = await boot_active(stack)
    port = await _port(stack)
    url = f"/compute/v2.1/servers/{sid}/os-interface"
    resp = await stack.api.post(url, as_user="demo", headers=V, json={"interfaceAttachment": {"port_id": port["id"]}})
    assert resp.status_code == 200, resp.text
    attachment = resp.json()["interfaceAttachment"]
    assert (attachment["port_id"], attachment["net_id"], attachment["mac_addr"]) == \
        (port["id"], PUBLIC_NETWORK_ID, port["mac_address"])
    server = await _settled(stack, sid)
    assert port["fixed_ips"][0]["ip_address"] in [a["addr"] for addrs in server["addresses"].values() for a in addrs]
    assert port["id"] in [p.id for p in driver.guests[sid].spec.ports]
    assert port["id"] in _on_host(stack, driver.host)  # the host's flows have it
    listed = (await stack.api.get(url, as_user="demo", headers=V)).json()["interfaceAttachments"]
    assert len(listed) == 2 and all("tag" in a for a in listed)
    shown = await stack.api.get(f"{url}/{port['id']}", as_user="demo", headers=V)
    assert shown.json()["interfaceAttachment"]["port_id"] == port["id"]

    assert (await stack.api.delete(f"{url}/{port['id']}", as_user="demo", headers=V)).status_code == 202
    server = await _settled(stack, sid)
    assert port["fixed_ips"][0]["ip_address"] not in str(server["addresses"])
    assert port["id"] not in [p.id for p in driver.guests[sid].spec.ports]
    kept = (await _port_view(stack, port["id"])).json()["port"]
    assert (kept["device_id"], kept["binding:host_id"]) == ("", "")
    await node_of(stack, driver.host).wait_applied(lambda: port["id"] not in _on_host(stack, driver.host))


async def test_attach_on_a_network_makes_a_port_that_detach_deletes(stack: Any) -> None:
    sid, driver = await boot_active(stack)
    url = f"/compute/v2.1/servers/{sid}/os-interface"
    resp = await stack.api.post(url, as_user="demo", headers=V,
                                json={"interfaceAttachment": {"net_id": PUBLIC_NETWORK_ID}})
    assert resp.status_code == 200, resp.text
    port_id = resp.json()["interfaceAttachment"]["port_id"]
    await _settled(stack, sid)
    assert len(driver.guests[sid].spec.ports) == 2
    assert (await stack.api.delete(f"{url}/{port_id}", as_user="demo", headers=V)).status_code == 202
    await _settled(stack, sid)
    assert (await _port_view(stack, port_id)).status_code == 404
    assert len(driver.guests[sid].spec.ports) == 1


async def test_bad_attachments_are_refused_and_write_nothing(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    url = f"/compute/v2.1/servers/{sid}/os-interface"
    port = await _port(stack)
    both = {"port_id": port["id"], "net_id": PUBLIC_NETWORK_ID}
    for body, status in (({}, 400), (both, 400), ({"port_id": "nope"}, 400),
                         ({"port_id": "00000000-0000-0000-0000-000000000000"}, 404),
                         ({"net_id": "00000000-0000-0000-0000-000000000000"}, 404)):
        resp = await stack.api.post(url, as_user="demo", headers=V, json={"interfaceAttachment": body})
        assert resp.status_code == status, (body, resp.text)
    assert (await stack.api.delete(f"{url}/{port['id']}", as_user="demo", headers=V)).status_code == 404
    other, _ = await boot_active(stack, "other")
    assert (await stack.api.post(f"/compute/v2.1/servers/{other}/os-interface", as_user="demo", headers=V,
                                 json={"interfaceAttachment": {"port_id": port["id"]}})).status_code == 200
    await _settled(stack, other)
    resp = await stack.api.post(url, as_user="demo", headers=V, json={"interfaceAttachment": {"port_id": port["id"]}})
    assert resp.status_code == 409 and "in use" in resp.json()["conflictingRequest"]["message"]
    assert len((await stack.api.get(url, as_user="demo", headers=V)).json()["interfaceAttachments"]) == 1
