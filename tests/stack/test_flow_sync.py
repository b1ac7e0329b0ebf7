"""Flows follow the database through the whole in-process cloud: a boot's port reaches its host's flows
before the guest starts, neighbors learn it, an API port change and a delete follow; an agent restart
loads the same flows without ever emptying the table. The switch here is the fake (OpenFlow semantics)."""

from __future__ import annotations

from typing import Any

from canopy.agent.net import tables as t
from canopy.seed import PUBLIC_SUBNET_ID
from tests.clouds import UPLINK, N, arp_responder_on, flows_outside_firewall, node_of, ping, switch_of
from tests.clouds import boot_port as boot


def arp_for(src: dict[str, Any], target_ip: str) -> str:
    return (f"in_port={src['binding:vif_details']['ofport']},arp,dl_src={src['mac_address']},"
            f"dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_sha={src['mac_address']},"
            f"arp_spa={src['fixed_ips'][0]['ip_address']},arp_tpa={target_ip}")


async def test_two_projects_on_the_flat_network_reach_each_other_and_no_further(stack: Any) -> None:
    a = await boot(stack, "a", "admin", availability_zone="nova:hv-0001")
    # B's project lets anyone in (its default group admits only its own servers, as in Neutron)
    group = (await stack.api.post("/network/v2.0/security-groups", as_user="demo",
                                  json={"security_group": {"name": "open"}})).json()["security_group"]
    made = await stack.api.post("/network/v2.0/security-group-rules", as_user="demo", json={
        "security_group_rule": {"security_group_id": group["id"], "direction": "ingress"}})
    assert made.status_code == 201, made.text
    b = await boot(stack, "b", "demo", security_groups=[{"name": "open"}])
    ha, hb = a["binding:host_id"], b["binding:host_id"]
    assert a["binding:vif_details"]["ofport"] >= t.FIRST_VM_OFPORT
    # The guest started after its flows were in place: the owner host's switch already had them.
    sa = switch_of(stack, ha)
    if ha == hb:
        assert sa.trace(ping(a, b)).ports == [b["binding:vif_details"]["ofport"]]
    else:
        assert sa.trace(ping(a, b)).ports == [UPLINK]
        uplink_in = ping(a, b).replace(f"in_port={a['binding:vif_details']['ofport']}", f"in_port={UPLINK}")
        assert switch_of(stack, hb).trace(uplink_in).ports == [b["binding:vif_details"]["ofport"]]
    # No ARP responder on the public network: A's request for B reaches B only, which answers itself.
    ask = arp_for(a, b["fixed_ips"][0]["ip_address"])
    b_port = b["binding:vif_details"]["ofport"]
    if ha == hb:
        assert sa.trace(ask).ports == [b_port]
    else:
        assert sa.trace(ask).ports == [UPLINK]
        from_uplink = ask.replace(f"in_port={a['binding:vif_details']['ofport']}", f"in_port={UPLINK}")
        assert switch_of(stack, hb).trace(from_uplink).ports == [b_port]
    # ... and no host holds another's port: A's host has no flow naming B's address.
    if ha != hb:
        assert not any(b["fixed_ips"][0]["ip_address"] in k for k in sa.flows)
    # A cannot pretend to be B.
    assert sa.trace(ping(a, b, src_ip=b["fixed_ips"][0]["ip_address"])).dropped


async def test_with_an_arp_responder_every_host_of_the_network_answers_for_its_addresses(stack: Any) -> None:
    await arp_responder_on(stack)
    a = await boot(stack, "a", "admin", availability_zone="nova:hv-0001")
    b = await boot(stack, "b", "admin", availability_zone="nova:hv-0002")
    node_a, b_ip = node_of(stack, "hv-0001"), b["fixed_ips"][0]["ip_address"]
    await node_a.wait_applied(lambda: any(f"arp_tpa={b_ip}" in k for k in node_a.program.flows))  # type: ignore[union-attr]
    ((port, reply),) = switch_of(stack, "hv-0001").trace(arp_for(a, b_ip)).outputs
    assert port == a["binding:vif_details"]["ofport"]
    assert reply["arp_sha"] == int(b["mac_address"].replace(":", ""), 16)


async def test_an_ip_added_through_the_api_reaches_the_flows_and_a_delete_clears_them(stack: Any) -> None:
    a = await boot(stack, "a", "admin", availability_zone="nova:hv-0002")
    b = await boot(stack, "b", "admin", availability_zone="nova:hv-0003")
    node_a, node_b = node_of(stack, "hv-0002"), node_of(stack, "hv-0003")
    extra = "203.0.113.240"
    resp = await stack.api.put(f"{N}/ports/{a['id']}", json={"port": {"fixed_ips": [
        *a["fixed_ips"], {"subnet_id": PUBLIC_SUBNET_ID, "ip_address": extra}]}})
    assert resp.status_code == 200, resp.text
    # the anti-spoofing flow (the default group's member flows name the address too, and may come first)
    await node_a.wait_applied(lambda: any(k.startswith("table=10,") and f"nw_src={extra}" in k
                                          for k in node_a.program.flows))  # type: ignore[union-attr]
    assert not switch_of(stack, "hv-0002").trace(ping(a, b, src_ip=extra)).dropped
    # ... and an ARP request for it from the physical network reaches A; B's host never heard of it.
    asked = arp_for(b, extra).replace(f"in_port={b['binding:vif_details']['ofport']}", f"in_port={UPLINK}")
    assert switch_of(stack, "hv-0002").trace(asked).ports == [a["binding:vif_details"]["ofport"]]
    # B's host knows the address only as a member of the default group B shares with A (its same-group
    # ingress rule), never as a neighbour to answer or forward to
    assert not flows_outside_firewall(node_b, extra)

    assert (await stack.api.delete(f"/compute/v2.1/servers/{a['device_id']}")).status_code == 204
    await node_a.wait_applied(lambda: not any(f"in_port={a['binding:vif_details']['ofport']}," in k
                                              for k in node_a.program.flows))  # type: ignore[union-attr]
    await node_b.wait_applied(lambda: not any(extra in k for k in node_b.program.flows))  # type: ignore[union-attr]

