"""Flows follow the database through the whole in-process cloud: a boot's port reaches its host's flows
before the guest starts, neighbors learn it, an API port change and a delete follow; an agent restart
loads the same flows without ever emptying the table. The switch here is the fake (OpenFlow semantics)."""

from __future__ import annotations

import asyncio
from typing import Any

from canopy.agent.net import tables as t
from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.seed import PUBLIC_NETWORK_ID, PUBLIC_SUBNET_ID
from tests.clouds import UPLINK, N, arp_responder_on, node_of, ping, switch_of
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
    assert not _outside_firewall(node_b, extra)

    assert (await stack.api.delete(f"/compute/v2.1/servers/{a['device_id']}")).status_code == 204
    await node_a.wait_applied(lambda: not any(f"in_port={a['binding:vif_details']['ofport']}," in k
                                              for k in node_a.program.flows))  # type: ignore[union-attr]
    await node_b.wait_applied(lambda: not any(extra in k for k in node_b.program.flows))  # type: ignore[union-attr]


def _outside_firewall(node: Any, address: str) -> list[str]:
    """The flows naming `address` outside the security-group tables."""
    from canopy.agent.net import tables as t

    firewall = {t.EGRESS_ACL, t.EGRESS_CT, t.EGRESS_RULES, t.EGRESS_COMMIT, t.INGRESS_ACL, t.INGRESS_CT,
                t.INGRESS_RULES, t.INGRESS_COMMIT}
    return [k for k in node.program.flows if address in k
            and not any(k.startswith(f"table={n},") for n in firewall)]


async def test_a_port_bound_by_an_admin_reaches_its_host_and_qos_becomes_meters(stack: Any) -> None:
    policy = (await stack.api.post(f"{N}/qos/policies", json={"policy": {"name": "slow"}})).json()["policy"]
    rule = await stack.api.post(f"{N}/qos/policies/{policy['id']}/bandwidth_limit_rules",
                                json={"bandwidth_limit_rule": {"max_kbps": 8000, "max_burst_kbps": 800}})
    assert rule.status_code == 201, rule.text
    resp = await stack.api.post(f"{N}/ports", json={"port": {"network_id": PUBLIC_NETWORK_ID,
                                                             "binding:host_id": "hv-0004",
                                                             "qos_policy_id": policy["id"]}})
    assert resp.status_code == 201, resp.text
    port = resp.json()["port"]
    ofport = port["binding:vif_details"]["ofport"]
    node = node_of(stack, "hv-0004")
    await node.wait_applied(lambda: t.egress_meter(ofport) in node.program.meters)  # type: ignore[union-attr]
    assert node.program.meters[t.egress_meter(ofport)].kbps == 8000  # type: ignore[union-attr]
    # Changing the rule changes the meter (every conductor hears of it).
    rule_id = rule.json()["bandwidth_limit_rule"]["id"]
    resp = await stack.api.put(f"{N}/qos/policies/{policy['id']}/bandwidth_limit_rules/{rule_id}",
                               json={"bandwidth_limit_rule": {"max_kbps": 2000}})
    assert resp.status_code == 200, resp.text
    await node.wait_applied(lambda: node.program.meters[t.egress_meter(ofport)].kbps == 2000)  # type: ignore[union-attr]


async def test_agent_restart_loads_identical_flows_and_never_empties_the_table(stack: Any) -> None:
    a = await boot(stack, "a", "admin", availability_zone="nova:hv-0001")
    await boot(stack, "b", "admin", availability_zone="nova:hv-0001")
    agent = next(x for x in stack.agents if x.host == "hv-0001")
    old = agent.net
    applier = old.applier
    before = dict(applier.table.flows)
    counts_before = len(applier.flow_counts)
    await old.stop()
    # A new process: the switch still holds the old flows; the new node starts knowing nothing.
    fresh = NetNode("hv-0001", applier, request_sync=old.request_sync)
    agent.net = fresh
    await fresh.start()
    await fresh.wait_applied(lambda: fresh.program is not None)
    assert applier.table.flows == before
    assert all(n > 0 for n in applier.flow_counts[counts_before:])
    assert any(f"in_port={a['binding:vif_details']['ofport']}," in k for k in applier.table.flows)


async def test_nothing_is_applied_before_the_first_full_sync() -> None:
    applier = FakeApplier()
    started = asyncio.Event()

    async def never() -> Any:
        started.set()
        raise ConnectionError("no conductor yet")

    node = NetNode("h", applier, request_sync=never)
    await node.start()
    await asyncio.wait_for(started.wait(), 2)
    await asyncio.sleep(0.05)
    await node.stop()
    assert applier.replaces == 0 and applier.changes == 0 and not applier.flow_counts
