"""A server on two networks: NIC order as requested, and nothing of it left once it is gone (404)."""

from __future__ import annotations

import asyncio
from typing import Any

from canopy.network import port_views
from tests.clouds import PUBLIC_NETWORK_ID, V, server_body, wait_for_server

N = "/network/v2.0"


async def private_network(api: Any, name: str, cidr: str) -> tuple[str, str]:
    """A demo-owned network with one subnet: (network id, subnet id)."""
    resp = await api.post(f"{N}/networks", as_user="demo", json={"network": {"name": name}})
    assert resp.status_code == 201, resp.text
    net = resp.json()["network"]["id"]
    resp = await api.post(f"{N}/subnets", as_user="demo", json={"subnet": {
        "network_id": net, "cidr": cidr, "ip_version": 4}})
    assert resp.status_code == 201, resp.text
    return net, resp.json()["subnet"]["id"]


async def test_multi_nic_order_and_cleanup(stack: Any) -> None:
    api = stack.api
    net_a, sub_a = await private_network(api, "nic-a", "10.10.0.0/24")
    net_b, sub_b = await private_network(api, "nic-b", "10.10.0.0/24")  # overlaps, on another network: allowed
    order = [net_b, PUBLIC_NETWORK_ID, net_a]
    body = server_body(name="multi", networks=[{"uuid": n} for n in order])
    resp = await api.post("/compute/v2.1/servers", json=body, headers=V, as_user="demo")
    assert resp.status_code == 202, resp.text
    sid = resp.json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ACTIVE"}, as_user="demo")
    names = [(await api.get(f"{N}/networks/{n}")).json()["network"]["name"] for n in order]
    assert list(server["addresses"]) == names
    # A server's ports, as os-interface and the agent's sync read them (oldest first), in the order asked.
    with stack.cloud.dbs.cell(stack.cloud.cell_name).reader() as conn:
        ports = port_views.ports_of_devices(conn, [sid])[sid]
    assert [p["network_id"] for p in ports] == order
    ifaces = (await api.get(f"/compute/v2.1/servers/{sid}/os-interface", headers=V, as_user="demo"))
    if ifaces.status_code == 200:  # os-interface comes with the compute branch
        assert [i["net_id"] for i in ifaces.json()["interfaceAttachments"]] == order
    assert (await api.delete(f"/compute/v2.1/servers/{sid}", as_user="demo")).status_code == 204
    await wait_for_server(api, sid, {"DELETED"}, as_user="demo")
    results = await asyncio.gather(*(api.delete(f"{N}/subnets/{s}", as_user="demo") for s in (sub_a, sub_b)))
    assert [r.status_code for r in results] == [204, 204], [r.text for r in results]
    results = await asyncio.gather(*(api.delete(f"{N}/networks/{n}", as_user="demo") for n in (net_a, net_b)))
    assert [r.status_code for r in results] == [204, 204], [r.text for r in results]
    assert (await api.get(f"{N}/ports?device_id={sid}")).json()["ports"] == []


async def test_server_deleted_while_building_leaves_no_port(stack: Any) -> None:
    """Deleted before it is ACTIVE, a two-NIC server leaves no port behind once it is 404."""
    api = stack.api
    nets = [await private_network(api, f"race-{i}", f"10.20.{i}.0/24") for i in range(2)]
    for _ in range(3):
        body = server_body(name="racer", networks=[{"uuid": n} for n, _ in nets])
        resp = await api.post("/compute/v2.1/servers", json=body, headers=V, as_user="demo")
        assert resp.status_code == 202, resp.text
        sid = resp.json()["server"]["id"]
        assert (await api.delete(f"/compute/v2.1/servers/{sid}", as_user="demo")).status_code == 204
        await wait_for_server(api, sid, {"DELETED"}, as_user="demo")
    results = await asyncio.gather(*(api.delete(f"{N}/subnets/{s}", as_user="demo") for _, s in nets))
    assert [r.status_code for r in results] == [204, 204], [r.text for r in results]
    results = await asyncio.gather(*(api.delete(f"{N}/networks/{n}", as_user="demo") for n, _ in nets))
    assert [r.status_code for r in results] == [204, 204], [r.text for r in results]


async def test_duplicate_network_nics_are_kept_and_released(stack: Any) -> None:
    """networks [a, b, a] (Nova allows a network twice): three NICs in that order, all gone with the server."""
    api = stack.api
    (net_a, sub_a), (net_b, sub_b) = [await private_network(api, f"dup-{i}", f"10.30.{i}.0/24") for i in range(2)]
    order = [net_a, net_b, net_a]
    body = server_body(name="dup", networks=[{"uuid": n} for n in order])
    resp = await api.post("/compute/v2.1/servers", json=body, headers=V, as_user="demo")
    assert resp.status_code == 202, resp.text
    sid = resp.json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ACTIVE", "ERROR"}, as_user="demo")
    assert server["status"] == "ACTIVE", server
    with stack.cloud.dbs.cell(stack.cloud.cell_name).reader() as conn:
        assert [p["network_id"] for p in port_views.ports_of_devices(conn, [sid])[sid]] == order
    assert sum(len(v) for v in server["addresses"].values()) == 3
    assert (await api.delete(f"/compute/v2.1/servers/{sid}", as_user="demo")).status_code == 204
    await wait_for_server(api, sid, {"DELETED"}, as_user="demo")
    results = await asyncio.gather(*(api.delete(f"{N}/subnets/{s}", as_user="demo") for s in (sub_a, sub_b)))
    assert [r.status_code for r in results] == [204, 204], [r.text for r in results]
    results = await asyncio.gather(*(api.delete(f"{N}/networks/{n}", as_user="demo") for n in (net_a, net_b)))
    assert [r.status_code for r in results] == [204, 204], [r.text for r in results]
