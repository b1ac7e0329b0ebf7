"""The network API around the flows: segments of routed networks (and the rack -> segment mapping a boot
follows), QoS policies and bandwidth limit rules, per-project quotas on ports and public addresses, the
hold time of freed public addresses — in Neutron's shapes and errors."""

from __future__ import annotations

from typing import Any

from canopy.network import segments as sg
from canopy.seed import PUBLIC_NETWORK_ID
from tests.clouds import V, server_body, wait_for_server

N = "/network/v2.0"


def error_of(resp: Any) -> str:
    return resp.json()["NeutronError"]["type"]  # type: ignore[no-any-return]


async def post(api: Any, path: str, root: str, body: dict[str, Any], status: int = 201, **kw: Any) -> Any:
    resp = await api.post(f"{N}/{path}", json={root: body}, **kw)
    assert resp.status_code == status, resp.text
    return resp.json()[root] if status < 300 else resp


async def routed_network(api: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    net = await post(api, "networks", "network", {"name": "routed", "shared": True,
                                                  "provider:network_type": "flat",
                                                  "provider:physical_network": "edge"})
    s1 = await post(api, "segments", "segment", {"network_id": net["id"], "network_type": "flat",
                                                 "physical_network": "rack-r01", "name": "r01",
                                                 "canopy:racks": ["dc1/r01"]})
    s2 = await post(api, "segments", "segment", {"network_id": net["id"], "network_type": "flat",
                                                 "physical_network": "rack-r02", "canopy:racks": ["r02"]})
    return net, s1, s2


async def test_segments_shapes_admin_only_and_conflicts(api: Any) -> None:
    net, s1, s2 = await routed_network(api)
    assert s1["canopy:racks"] == ["dc1/r01"] and s2["canopy:racks"] == ["dc1/r02"]
    assert {k for k in s1} >= {"id", "network_id", "network_type", "physical_network", "segmentation_id", "name"}
    assert (await api.get(f"{N}/segments", as_user="demo")).status_code == 403
    listed = (await api.get(f"{N}/segments?network_id={net['id']}")).json()["segments"]
    assert {s["id"] for s in listed} == {s1["id"], s2["id"]}
    same_physnet = await post(api, "segments", "segment", {"network_id": net["id"], "network_type": "flat",
                                                           "physical_network": "rack-r01"}, status=409)
    assert error_of(same_physnet) == "FlatNetworkInUse"
    rack_twice = await api.put(f"{N}/segments/{s2['id']}", json={"segment": {"canopy:racks": ["dc1/r01"]}})
    assert rack_twice.status_code == 409 and "dc1/r01" in rack_twice.json()["NeutronError"]["message"]
    bad = await post(api, "segments", "segment", {"network_id": net["id"], "network_type": "vlan"}, status=400)
    assert "network_type" in bad.json()["NeutronError"]["message"]
    moved = await api.put(f"{N}/segments/{s1['id']}", json={"segment": {"physical_network": "x"}})
    assert moved.status_code == 400
    # A subnet on a segment of another network is refused; one on its own segment pins the segment.
    other = await post(api, "networks", "network", {"name": "other"})
    wrong = await post(api, "subnets", "subnet", {"network_id": other["id"], "cidr": "192.0.2.0/24",
                                                  "ip_version": 4, "segment_id": s1["id"]}, status=400)
    assert "segment_id" in wrong.json()["NeutronError"]["message"]
    await post(api, "subnets", "subnet", {"network_id": net["id"], "cidr": "198.51.100.0/25", "ip_version": 4,
                                          "segment_id": s1["id"]})
    in_use = await api.delete(f"{N}/segments/{s1['id']}")
    assert in_use.status_code == 409 and error_of(in_use) == "SegmentInUse"
    assert (await api.delete(f"{N}/segments/{s2['id']}")).status_code == 204
    assert (await api.get(f"{N}/segments/{s2['id']}")).status_code == 404


async def test_a_boot_on_a_routed_network_takes_its_address_from_the_racks_segment(stack: Any) -> None:
    api = stack.api
    net, s1, s2 = await routed_network(api)
    await post(api, "subnets", "subnet", {"network_id": net["id"], "cidr": "198.51.100.0/25", "ip_version": 4,
                                          "segment_id": s1["id"]})
    await post(api, "subnets", "subnet", {"network_id": net["id"], "cidr": "198.51.100.128/25", "ip_version": 4,
                                          "segment_id": s2["id"]})
    body = server_body(name="routed")
    body["server"]["networks"] = [{"uuid": net["id"]}]
    sid = (await api.post("/compute/v2.1/servers", json=body, headers=V)).json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ACTIVE"})
    (port,) = (await api.get(f"{N}/ports?device_id={server['id']}")).json()["ports"]
    assert port["fixed_ips"][0]["ip_address"].startswith("198.51.100.") and \
        int(port["fixed_ips"][0]["ip_address"].rsplit(".", 1)[1]) < 128  # every stack host is in rack r01
    node = next(a.net for a in stack.agents if a.host == port["binding:host_id"])
    assert "rack-r01" in node.state.uplinks()
    db_g, db_c = stack.cloud.dbs.global_db, stack.cloud.dbs.cell(stack.cloud.cell_name)
    with db_g.reader() as g, db_c.reader() as c:
        free = sg.free_addresses(g, c, net["id"])
        racks = sg.racks_with_free_addresses(g, c, net["id"])
    assert free == {s1["id"]: 124, s2["id"]: 125} and racks == ["dc1/r01", "dc1/r02"]
    # With no segment for rack r01, a boot fails and says why.
    assert (await api.put(f"{N}/segments/{s1['id']}", json={"segment": {"canopy:racks": []}})).status_code == 200
    sid = (await api.post("/compute/v2.1/servers", json=body, headers=V)).json()["server"]["id"]
    failed = await wait_for_server(api, sid, {"ERROR"})
    assert "No segment of network" in failed["fault"]["message"] and "dc1/r01" in failed["fault"]["message"]


async def test_qos_policies_and_rules(api: Any) -> None:
    assert (await api.post(f"{N}/qos/policies", as_user="demo", json={"policy": {"name": "x"}})).status_code == 403
    policy = await post(api, "qos/policies", "policy", {"name": "gold", "shared": True})
    assert policy["rules"] == [] and policy["shared"] is True
    path = f"qos/policies/{policy['id']}/bandwidth_limit_rules"
    rule = await post(api, path, "bandwidth_limit_rule", {"max_kbps": 10000, "max_burst_kbps": 1000})
    assert rule["direction"] == "egress"
    dup = await post(api, path, "bandwidth_limit_rule", {"max_kbps": 5}, status=409)
    assert error_of(dup) == "QoSRulesConflict"
    await post(api, path, "bandwidth_limit_rule", {"max_kbps": 20000, "direction": "ingress"})
    bad = await post(api, path, "bandwidth_limit_rule", {"max_kbps": 0, "direction": "ingress"}, status=400)
    assert "max_kbps" in bad.json()["NeutronError"]["message"]
    shown = (await api.get(f"{N}/qos/policies/{policy['id']}", as_user="demo")).json()["policy"]
    assert sorted(r["direction"] for r in shown["rules"]) == ["egress", "ingress"]
    assert (await api.get(f"{N}/qos/rule-types")).json() == {"rule_types": [{"type": "bandwidth_limit"}]}
    private = await post(api, "qos/policies", "policy", {"name": "private"})
    hidden = await post(api, "ports", "port", {"network_id": PUBLIC_NETWORK_ID, "qos_policy_id": private["id"]},
                        status=404, as_user="demo")
    assert error_of(hidden) == "QosPolicyNotFound"
    port = await post(api, "ports", "port", {"network_id": PUBLIC_NETWORK_ID, "qos_policy_id": policy["id"]},
                      as_user="demo")
    assert port["qos_policy_id"] == policy["id"]
    in_use = await api.delete(f"{N}/qos/policies/{policy['id']}")
    assert in_use.status_code == 409 and error_of(in_use) == "QosPolicyInUse"
    cleared = await api.put(f"{N}/ports/{port['id']}", json={"port": {"qos_policy_id": None}})
    assert cleared.json()["port"]["qos_policy_id"] is None
    net = await post(api, "networks", "network", {"name": "metered", "qos_policy_id": policy["id"]})
    assert net["qos_policy_id"] == policy["id"]
    assert (await api.get(f"{N}/networks/{net['id']}")).json()["network"]["qos_policy_id"] == policy["id"]
    assert (await api.delete(f"{N}/qos/policies/{policy['id']}")).status_code == 409  # the network uses it
    await api.put(f"{N}/networks/{net['id']}", json={"network": {"qos_policy_id": None}})
    assert (await api.delete(f"{N}/qos/policies/{policy['id']}")).status_code == 204


async def test_quotas_on_ports_and_public_addresses(api: Any) -> None:
    me = (await api.get(f"{N}/quotas/nope", as_user="demo"))
    assert me.status_code == 403
    demo = (await api.get("/identity/v3/projects?name=demo")).json()["projects"][0]["id"]
    assert (await api.get(f"{N}/quotas/{demo}", as_user="demo")).json()["quota"]["port"] == -1
    assert (await api.put(f"{N}/quotas/{demo}", as_user="demo", json={"quota": {"port": 1}})).status_code == 403
    bad = await api.put(f"{N}/quotas/{demo}", json={"quota": {"port": -5}})
    assert bad.status_code == 400
    assert (await api.put(f"{N}/quotas/{demo}", json={"quota": {"network": 3}})).status_code == 400
    resp = await api.put(f"{N}/quotas/{demo}", json={"quota": {"port": 2, "public_ip": 1}})
    assert resp.status_code == 200 and resp.json()["quota"]["public_ip"] == 1
    await post(api, "ports", "port", {"network_id": PUBLIC_NETWORK_ID}, as_user="demo")
    over = await post(api, "ports", "port", {"network_id": PUBLIC_NETWORK_ID}, status=409, as_user="demo")
    assert error_of(over) == "OverQuota" and "public_ip" in over.json()["NeutronError"]["message"]
    private = await post(api, "networks", "network", {"name": "mine"}, as_user="demo")
    await post(api, "subnets", "subnet", {"network_id": private["id"], "cidr": "10.9.0.0/24", "ip_version": 4},
               as_user="demo")
    await post(api, "ports", "port", {"network_id": private["id"]}, as_user="demo")
    over = await post(api, "ports", "port", {"network_id": private["id"]}, status=409, as_user="demo")
    assert "port" in over.json()["NeutronError"]["message"]
    details = (await api.get(f"{N}/quotas/{demo}/details", as_user="demo")).json()["quota"]
    assert details["port"] == {"limit": 2, "used": 2, "reserved": 0}
    assert details["public_ip"] == {"limit": 1, "used": 1, "reserved": 0}
    assert any(q["project_id"] == demo for q in (await api.get(f"{N}/quotas")).json()["quotas"])
    assert (await api.delete(f"{N}/quotas/{demo}")).status_code == 204
    await post(api, "ports", "port", {"network_id": private["id"]}, as_user="demo")


async def test_a_freed_public_address_is_held_for_its_project(api: Any, cloud: Any) -> None:
    cloud.settings.network.public_ip_hold_s = 3600.0
    net = await post(api, "networks", "network", {"name": "tiny-public", "shared": True, "router:external": True})
    subnet = await post(api, "subnets", "subnet", {"network_id": net["id"], "cidr": "192.0.2.0/29",
                                                   "ip_version": 4})  # pool .2 - .6
    ports = [await post(api, "ports", "port", {"network_id": net["id"]}, as_user="demo") for _ in range(5)]
    freed = ports[0]["fixed_ips"][0]["ip_address"]
    assert (await api.delete(f"{N}/ports/{ports[0]['id']}", as_user="demo")).status_code == 204
    taken = await post(api, "ports", "port", {"network_id": net["id"]}, status=409)  # admin: another project
    assert error_of(taken) == "IpAddressGenerationFailure"
    again = await post(api, "ports", "port", {"network_id": net["id"]}, as_user="demo")
    assert again["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": freed}]
    # Without a hold time, another project gets a freed address at once.
    cloud.settings.network.public_ip_hold_s = 0.0
    assert (await api.delete(f"{N}/ports/{again['id']}", as_user="demo")).status_code == 204
    mine = await post(api, "ports", "port", {"network_id": net["id"]})
    assert mine["fixed_ips"][0]["ip_address"] == freed
