"""Security groups through Compute: server create's `security_groups`, the add/remove actions, the
os-security-groups listing and the server view, and the flows they reach on the server's host."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.clouds import N, V, boot_port, node_of, server_body, switch_of

G, R = f"{N}/security-groups", f"{N}/security-group-rules"
S = "/compute/v2.1/servers"


async def _group(api: Any, name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    resp = await api.post(G, as_user="demo", json={"security_group": {"name": name}})
    assert resp.status_code == 201, resp.text
    group = resp.json()["security_group"]
    for rule in rules:
        made = await api.post(R, as_user="demo", json={"security_group_rule": {
            "security_group_id": group["id"], "direction": "ingress", **rule}})
        assert made.status_code == 201, made.text
    return group  # type: ignore[no-any-return]


def _ssh_to(port: dict[str, Any]) -> str:
    """A TCP SYN to the port's address, port 22, from outside (through the uplink)."""
    from tests.clouds import UPLINK

    return (f"in_port={UPLINK},tcp,dl_src=02:00:00:00:99:01,dl_dst={port['mac_address']},nw_src=198.51.100.7,"
            f"nw_dst={port['fixed_ips'][0]['ip_address']},tcp_src=40000,tcp_dst=22,tcp_flags=0x02")


async def _reaches(stack: Any, port: dict[str, Any], packet: str, want: bool) -> None:
    """Wait until the packet is (or is not) delivered to the port on its host's switch."""
    host, ofport = port["binding:host_id"], port["binding:vif_details"]["ofport"]
    for _ in range(200):
        got = ofport in switch_of(stack, host).trace(packet).ports
        if got == want:
            return
        await asyncio.sleep(0.025)
    trace = switch_of(stack, host).trace(packet)
    raise AssertionError(f"{packet} {'never' if want else 'still'} reaches port {ofport} on {host}: "
                         f"{[(s.table, s.flow) for s in trace.steps]}; members {node_of(stack, host).state.members}")


async def test_create_with_named_groups_binds_them_and_the_view_and_listing_show_them(stack: Any) -> None:
    api = stack.api
    ssh = await _group(api, "ssh", {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22})
    port = await boot_port(stack, "a", "demo", security_groups=[{"name": "ssh"}, {"name": "default"}])
    server_id = port["device_id"]
    default = next(g for g in (await api.get(G, as_user="demo")).json()["security_groups"]
                   if g["name"] == "default")
    assert sorted(port["security_groups"]) == sorted([ssh["id"], default["id"]])
    view = (await api.get(f"{S}/{server_id}", headers=V, as_user="demo")).json()["server"]
    assert view["security_groups"] == [{"name": "default"}, {"name": "ssh"}]
    listed = (await api.get(f"{S}/{server_id}/os-security-groups", as_user="demo")).json()["security_groups"]
    assert [g["name"] for g in listed] == ["default", "ssh"]
    rule = next(r for r in listed[1]["rules"])
    assert (rule["ip_protocol"], rule["from_port"], rule["to_port"], rule["ip_range"], rule["parent_group_id"]) == (
        "tcp", 22, 22, {"cidr": "0.0.0.0/0"}, ssh["id"])
    same = next(r for r in listed[0]["rules"] if r["group"])
    assert same["group"]["name"] == "default" and same["ip_range"] == {}
    await _reaches(stack, port, _ssh_to(port), True)


async def test_no_group_named_means_the_default_group(stack: Any) -> None:
    port = await boot_port(stack, "b", "demo")
    default = next(g for g in (await stack.api.get(G, as_user="demo")).json()["security_groups"]
                   if g["name"] == "default")
    assert port["security_groups"] == [default["id"]]
    await _reaches(stack, port, _ssh_to(port), False)  # the default group lets in only its own members


async def test_an_unknown_group_is_a_400_before_anything_is_created(stack: Any) -> None:
    api = stack.api
    before = len((await api.get(f"{S}/detail", headers=V, as_user="demo")).json()["servers"])
    body = server_body(name="c", security_groups=[{"name": "no-such-group"}])
    resp = await api.post(S, json=body, headers=V, as_user="demo")
    assert resp.status_code == 400, resp.text
    assert resp.json()["badRequest"]["message"] == "Security group no-such-group not found."
    for bad in ([{"nom": "x"}], [{"name": ""}], "default"):
        resp = await api.post(S, json=server_body(name="c", security_groups=bad), headers=V, as_user="demo")
        assert resp.status_code == 400, resp.text
    assert len((await api.get(f"{S}/detail", headers=V, as_user="demo")).json()["servers"]) == before
    ports = (await api.get(f"{N}/ports?device_owner=compute:nova", as_user="demo")).json()["ports"]
    assert ports == []


async def test_add_and_remove_security_group_reach_the_hosts_flows(stack: Any) -> None:
    api = stack.api
    await _group(api, "ssh", {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22})
    port = await boot_port(stack, "d", "demo")
    server_id, action = port["device_id"], f"{S}/{port['device_id']}/action"
    await _reaches(stack, port, _ssh_to(port), False)
    resp = await api.post(action, json={"addSecurityGroup": {"name": "ssh"}}, headers=V, as_user="demo")
    assert resp.status_code == 202, resp.text
    await _reaches(stack, port, _ssh_to(port), True)
    again = await api.post(action, json={"addSecurityGroup": {"name": "ssh"}}, headers=V, as_user="demo")
    assert again.status_code == 400 and "already associated" in again.json()["badRequest"]["message"]
    view = (await api.get(f"{S}/{server_id}", headers=V, as_user="demo")).json()["server"]
    assert view["security_groups"] == [{"name": "default"}, {"name": "ssh"}]
    resp = await api.post(action, json={"removeSecurityGroup": {"name": "ssh"}}, headers=V, as_user="demo")
    assert resp.status_code == 202, resp.text
    await _reaches(stack, port, _ssh_to(port), False)
    gone = await api.post(action, json={"removeSecurityGroup": {"name": "ssh"}}, headers=V, as_user="demo")
    assert gone.status_code == 400 and "not associated" in gone.json()["badRequest"]["message"]
    missing = await api.post(action, json={"addSecurityGroup": {"name": "nope"}}, headers=V, as_user="demo")
    assert missing.status_code == 404, missing.text
    bad = await api.post(action, json={"addSecurityGroup": "ssh"}, headers=V, as_user="demo")
    assert bad.status_code == 400, bad.text


async def test_a_boot_in_the_default_group_lets_its_peers_in(stack: Any) -> None:
    """The default group's same-group ingress rule: a later server's address reaches the earlier server's
    host (a membership change), so the earlier one lets it in; a stranger stays out."""
    from tests.clouds import UPLINK

    first = await boot_port(stack, "e1", "demo")
    second = await boot_port(stack, "e2", "demo")
    syn = (f"tcp,dl_src={second['mac_address']},dl_dst={first['mac_address']},"
           f"nw_src={second['fixed_ips'][0]['ip_address']},nw_dst={first['fixed_ips'][0]['ip_address']},"
           "tcp_src=40000,tcp_dst=22,tcp_flags=0x02")
    if first["binding:host_id"] == second["binding:host_id"]:
        await _reaches(stack, first, f"in_port={second['binding:vif_details']['ofport']},{syn}", True)
    else:
        await _reaches(stack, first, f"in_port={UPLINK},{syn}", True)
    await _reaches(stack, first, _ssh_to(first), False)


async def test_a_port_in_no_group_is_sent_nothing(stack: Any) -> None:
    """Port security on and `security_groups: []`: Neutron's firewall drops all but DHCP and neighbour
    discovery (before, such a port had no firewall at all)."""
    from canopy.seed import PUBLIC_NETWORK_ID

    resp = await stack.api.post(f"{N}/ports", json={"port": {"network_id": PUBLIC_NETWORK_ID,
                                                             "binding:host_id": "hv-0003", "security_groups": []}})
    assert resp.status_code == 201, resp.text
    port = resp.json()["port"]
    assert port["security_groups"] == [] and port["port_security_enabled"] is True
    for _ in range(200):
        if node_of(stack, "hv-0003").program is not None and any(
                f"in_port={port['binding:vif_details']['ofport']}," in k
                for k in node_of(stack, "hv-0003").program.flows):  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.025)
    await _reaches(stack, port, _ssh_to(port), False)
