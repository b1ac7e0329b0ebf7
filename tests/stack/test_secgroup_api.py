"""Network v2.0 security groups and rules: Neutron's shapes, errors, defaults and quotas, and ports'
security_groups, through the API."""

from __future__ import annotations

from typing import Any

import pytest

from canopy.seed import PUBLIC_NETWORK_ID
from tests.stack.test_network_api import N, error_type, make_network, make_port, make_subnet

G, R = f"{N}/security-groups", f"{N}/security-group-rules"


async def make_group(api: Any, name: str = "web", as_user: str = "demo") -> dict[str, Any]:
    resp = await api.post(G, as_user=as_user, json={"security_group": {"name": name, "description": "d"}})
    assert resp.status_code == 201, resp.text
    return resp.json()["security_group"]  # type: ignore[no-any-return]


async def add_rule(api: Any, group_id: str, status: int = 201, as_user: str = "demo", **attrs: Any) -> Any:
    body = {"security_group_rule": {"security_group_id": group_id, "direction": "ingress", **attrs}}
    resp = await api.post(R, as_user=as_user, json=body)
    assert resp.status_code == status, resp.text
    return resp.json()


async def test_default_group_is_made_on_first_use_with_neutrons_default_rules(api: Any) -> None:
    groups = (await api.get(G, as_user="demo")).json()["security_groups"]
    (default,) = [g for g in groups if g["name"] == "default"]
    rules = {(r["direction"], r["ethertype"], r["remote_group_id"]) for r in default["security_group_rules"]}
    assert rules == {("egress", "IPv4", None), ("egress", "IPv6", None),
                     ("ingress", "IPv4", default["id"]), ("ingress", "IPv6", default["id"])}
    again = (await api.get(G, as_user="demo")).json()["security_groups"]
    assert [g["id"] for g in again if g["name"] == "default"] == [default["id"]]
    resp = await api.delete(f"{G}/{default['id']}", as_user="demo")
    assert resp.status_code == 409 and error_type(resp) == "SecurityGroupCannotRemoveDefault"
    resp = await api.put(f"{G}/{default['id']}", as_user="demo", json={"security_group": {"name": "x"}})
    assert resp.status_code == 409 and error_type(resp) == "SecurityGroupCannotUpdateDefault"
    resp = await api.post(G, as_user="demo", json={"security_group": {"name": "default"}})
    assert resp.status_code == 409 and error_type(resp) == "SecurityGroupDefaultAlreadyExists"


async def test_group_and_rule_crud_in_neutrons_shape(api: Any) -> None:
    group = await make_group(api)
    assert {"id", "name", "description", "project_id", "tenant_id", "security_group_rules", "stateful",
            "created_at", "updated_at", "revision_number", "tags"} <= set(group)
    assert {(r["direction"], r["ethertype"]) for r in group["security_group_rules"]} == {("egress", "IPv4"),
                                                                                        ("egress", "IPv6")}
    rule = (await add_rule(api, group["id"], protocol="tcp", port_range_min=22, port_range_max=22,
                           remote_ip_prefix="198.51.100.7/24"))["security_group_rule"]
    assert rule["remote_ip_prefix"] == "198.51.100.0/24" and rule["ethertype"] == "IPv4"
    assert rule["protocol"] == "tcp" and rule["security_group_id"] == group["id"]
    dup = await add_rule(api, group["id"], 409, protocol="6", port_range_min=22, port_range_max=22,
                         remote_ip_prefix="198.51.100.0/24")
    assert dup["NeutronError"]["type"] == "SecurityGroupRuleExists" and rule["id"] in dup["NeutronError"]["message"]
    listed = (await api.get(f"{R}?security_group_id={group['id']}&direction=ingress", as_user="demo")).json()
    assert [r["id"] for r in listed["security_group_rules"]] == [rule["id"]]
    admins = await make_group(api, "admins", as_user="admin")
    assert (await api.get(f"{G}/{admins['id']}", as_user="demo")).status_code == 404
    admin_rule = admins["security_group_rules"][0]["id"]
    assert (await api.get(f"{R}/{admin_rule}", as_user="demo")).status_code == 404
    shown = (await api.get(f"{G}/{group['id']}", as_user="demo")).json()["security_group"]
    assert rule["id"] in {r["id"] for r in shown["security_group_rules"]}
    renamed = await api.put(f"{G}/{group['id']}", as_user="demo", json={"security_group": {"name": "www"}})
    assert renamed.json()["security_group"]["name"] == "www"
    assert (await api.delete(f"{R}/{rule['id']}", as_user="demo")).status_code == 204
    assert (await api.get(f"{R}/{rule['id']}", as_user="demo")).status_code == 404
    assert (await api.delete(f"{G}/{group['id']}", as_user="demo")).status_code == 204
    resp = await api.get(f"{G}/{group['id']}", as_user="demo")
    assert resp.status_code == 404 and error_type(resp) == "SecurityGroupNotFound"


BAD_RULES = [
    ({"direction": "sideways"}, 400, "InvalidInput"),
    ({"ethertype": "IPX"}, 400, "InvalidInput"),
    ({"protocol": "carrier-pigeon"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": 256}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": "tcp", "port_range_min": 90, "port_range_max": 80}, 400, "SecurityGroupInvalidPortRange"),
    ({"protocol": "tcp", "port_range_min": 0, "port_range_max": 80}, 400, "SecurityGroupInvalidPortValue"),
    ({"port_range_min": 80, "port_range_max": 80}, 400, "SecurityGroupProtocolRequiredWithPorts"),
    ({"protocol": "icmp", "port_range_min": 256}, 400, "SecurityGroupInvalidIcmpValue"),
    ({"protocol": "icmp", "port_range_max": 0}, 400, "SecurityGroupMissingIcmpType"),
    ({"remote_ip_prefix": "2001:db8::/64"}, 400, "SecurityGroupRuleParameterConflict"),
    ({"remote_ip_prefix": "not-a-prefix"}, 400, "InvalidInput"),
    ({"ethertype": "IPv4", "protocol": "ipv6-icmp"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"remote_ip_prefix": "192.0.2.0/24", "remote_group_id": "GROUP"}, 400,
     "SecurityGroupRemoteGroupAndRemoteIpPrefix"),
    ({"remote_group_id": "8d1f5c7e-0000-4000-8000-000000000000"}, 404, "SecurityGroupNotFound"),
    ({"surprise": 1}, 400, "HTTPBadRequest"),
]


@pytest.mark.parametrize(("attrs", "status", "kind"), BAD_RULES)
async def test_bad_rules_name_the_problem_and_write_nothing(api: Any, attrs: dict[str, Any], status: int,
                                                            kind: str) -> None:
    group = await make_group(api, "bad")
    if attrs.get("remote_group_id") == "GROUP":
        attrs = {**attrs, "remote_group_id": group["id"]}
    body = await add_rule(api, group["id"], status, **attrs)
    assert body["NeutronError"]["type"] == kind
    rules = (await api.get(f"{R}?security_group_id={group['id']}", as_user="demo")).json()["security_group_rules"]
    assert len(rules) == 2  # the two egress rules every new group has


async def test_quotas_for_groups_and_rules(api: Any) -> None:
    await api.get(G, as_user="demo")  # the default group
    project = (await api.get(G, as_user="demo")).json()["security_groups"][0]["project_id"]
    resp = await api.put(f"{N}/quotas/{project}", json={"quota": {"security_group": 2, "security_group_rule": 9}})
    assert resp.status_code == 200 and resp.json()["quota"]["security_group"] == 2
    group = await make_group(api, "one")  # default (4 rules) + this one (2 rules): 2 groups, 6 rules
    resp = await api.post(G, as_user="demo", json={"security_group": {"name": "two"}})
    assert resp.status_code == 409 and error_type(resp) == "OverQuota"
    for port in (1, 2, 3):
        await add_rule(api, group["id"], protocol="tcp", port_range_min=port, port_range_max=port)
    body = await add_rule(api, group["id"], 409, protocol="tcp", port_range_min=4, port_range_max=4)
    assert body["NeutronError"]["type"] == "OverQuota"
    details = (await api.get(f"{N}/quotas/{project}/details", as_user="demo")).json()["quota"]
    assert details["security_group"] == {"limit": 2, "used": 2, "reserved": 0}
    assert details["security_group_rule"]["used"] == 9


async def test_ports_get_the_default_group_and_take_their_projects_groups(api: Any) -> None:
    net = await make_network(api, as_user="demo")
    await make_subnet(api, net["id"], "10.21.0.0/24", as_user="demo")
    port = await make_port(api, net["id"], as_user="demo")
    default = [g for g in (await api.get(G, as_user="demo")).json()["security_groups"] if g["name"] == "default"]
    assert port["security_groups"] == [default[0]["id"]]
    web = await make_group(api, "web2")
    resp = await api.put(f"{N}/ports/{port['id']}", as_user="demo", json={"port": {"security_groups": [web["id"]]}})
    assert resp.status_code == 200 and resp.json()["port"]["security_groups"] == [web["id"]]
    assert (await api.get(f"{N}/ports/{port['id']}", as_user="demo")).json()["port"]["security_groups"] == [web["id"]]
    listed = (await api.get(f"{N}/ports?id={port['id']}", as_user="demo")).json()["ports"]
    assert listed[0]["security_groups"] == [web["id"]]
    resp = await api.delete(f"{G}/{web['id']}", as_user="demo")
    assert resp.status_code == 409 and error_type(resp) == "SecurityGroupInUse"
    others = await make_group(api, "theirs", as_user="admin")
    resp = await api.put(f"{N}/ports/{port['id']}", as_user="demo", json={"port": {"security_groups": [others["id"]]}})
    assert resp.status_code == 404 and error_type(resp) == "SecurityGroupNotFound"
    off = await make_port(api, net["id"], as_user="demo", port_security_enabled=False)
    assert off["security_groups"] == [] and off["port_security_enabled"] is False
    bad = await make_port(api, net["id"], as_user="demo", status=400, port_security_enabled=False,
                          security_groups=[web["id"]])
    assert bad["type"] == "PortSecurityAndIPRequiredForSecurityGroups"
    # port security off on a network the project does not own: admins only
    denied = await make_port(api, PUBLIC_NETWORK_ID, as_user="demo", status=403, port_security_enabled=False)
    assert denied["type"] == "PolicyNotAuthorized"
