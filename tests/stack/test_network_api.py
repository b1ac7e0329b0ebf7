"""Network v2.0 API behaviour: networks, subnets, ports and their addresses, as openstacksdk sees them."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from canopy.network import networks as nets
from canopy.network import ports as pt
from canopy.network.port_views import port_view
from canopy.seed import PUBLIC_NETWORK_ID, PUBLIC_SUBNET_ID

N = "/network/v2.0"
PUBLIC_POOL = (ipaddress.ip_address("203.0.113.10"), ipaddress.ip_address("203.0.113.250"))


def error_type(resp: Any) -> str:
    return resp.json()["NeutronError"]["type"]


async def make_network(api: Any, as_user: str = "admin", **attrs: Any) -> dict[str, Any]:
    resp = await api.post(f"{N}/networks", as_user=as_user, json={"network": {"name": "net", **attrs}})
    assert resp.status_code == 201, resp.text
    return resp.json()["network"]  # type: ignore[no-any-return]


async def make_subnet(api: Any, network_id: str, cidr: str = "10.0.0.0/24", as_user: str = "admin",
                      **attrs: Any) -> dict[str, Any]:
    body = {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": 6 if ":" in cidr else 4, **attrs}}
    resp = await api.post(f"{N}/subnets", as_user=as_user, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["subnet"]  # type: ignore[no-any-return]


async def make_port(api: Any, network_id: str, as_user: str = "admin", status: int = 201,
                    **attrs: Any) -> dict[str, Any]:
    resp = await api.post(f"{N}/ports", as_user=as_user, json={"port": {"network_id": network_id, **attrs}})
    assert resp.status_code == status, resp.text
    return resp.json()["port" if status == 201 else "NeutronError"]  # type: ignore[no-any-return]


async def test_versions_resources_and_extensions(api: Any) -> None:
    root = await api.http.get("/network/")
    assert root.status_code == 200
    (version,) = root.json()["versions"]
    assert version["id"] == "v2.0" and version["status"] == "CURRENT"
    assert version["links"][0]["href"].endswith("/network/v2.0/")
    resources = (await api.http.get("/network/v2.0")).json()["resources"]
    assert {r["collection"] for r in resources} == {"networks", "subnets", "ports"}
    exts = (await api.get(f"{N}/extensions", as_user="demo")).json()["extensions"]
    aliases = {e["alias"] for e in exts}
    assert {"provider", "external-net", "allowed-address-pairs", "port-security", "binding",
            "standard-attr-description", "project-id"} <= aliases
    assert (await api.get(f"{N}/extensions/binding")).json()["extension"]["alias"] == "binding"
    assert (await api.get(f"{N}/extensions/nope")).status_code == 404
    assert (await api.http.get(f"{N}/networks")).status_code == 401


async def test_admin_creates_provider_network_and_subnet(api: Any) -> None:
    net = await make_network(api, **{"provider:network_type": "flat", "provider:physical_network": "dc2",
                                     "shared": True, "router:external": True, "description": "uplink"})
    for key, value in {"status": "ACTIVE", "admin_state_up": True, "shared": True, "router:external": True,
                       "mtu": 1500, "provider:network_type": "flat", "provider:physical_network": "dc2",
                       "provider:segmentation_id": None, "description": "uplink", "tags": [],
                       "availability_zones": [], "port_security_enabled": True, "is_default": False,
                       "subnets": []}.items():
        assert net[key] == value, key
    assert net["project_id"] == net["tenant_id"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", net["created_at"])
    assert "revision_number" in net
    subnet = await make_subnet(api, net["id"], "198.51.100.0/24", dns_nameservers=["198.51.100.53"])
    assert subnet["gateway_ip"] == "198.51.100.1"
    assert subnet["allocation_pools"] == [{"start": "198.51.100.2", "end": "198.51.100.254"}]
    assert subnet["enable_dhcp"] is False and subnet["segment_id"] is None and subnet["ip_version"] == 4
    shown = (await api.get(f"{N}/networks/{net['id']}")).json()["network"]
    assert shown["subnets"] == [subnet["id"]]
    vx = await make_network(api, **{"provider:network_type": "vxlan", "provider:segmentation_id": 4242})
    assert vx["provider:segmentation_id"] == 4242


@pytest.mark.parametrize("attrs, status, kind", [
    ({"provider:network_type": "flat"}, 400, "InvalidInput"),
    ({"provider:network_type": "flat", "provider:physical_network": "x", "provider:segmentation_id": 5}, 400,
     "InvalidInput"),
    ({"provider:network_type": "vxlan", "provider:segmentation_id": 16777216}, 400, "InvalidInput"),
    ({"provider:network_type": "vxlan", "provider:segmentation_id": 0}, 400, "InvalidInput"),
    ({"provider:network_type": "geneve"}, 400, "InvalidInput"),
    ({"provider:network_type": "flat", "provider:physical_network": "public"}, 409, "FlatNetworkInUse"),
    ({"bogus": 1}, 400, "HTTPBadRequest"),
    ({"mtu": 10}, 400, "InvalidInput"),
])
async def test_bad_network_requests_write_nothing(api: Any, attrs: dict[str, Any], status: int, kind: str) -> None:
    before = (await api.get(f"{N}/networks")).json()["networks"]
    resp = await api.post(f"{N}/networks", json={"network": {"name": "bad", **attrs}})
    assert resp.status_code == status, resp.text
    assert error_type(resp) == kind
    assert (await api.get(f"{N}/networks")).json()["networks"] == before


async def test_vxlan_ids_in_use_conflict(api: Any) -> None:
    await make_network(api, **{"provider:network_type": "vxlan", "provider:segmentation_id": 77})
    resp = await api.post(f"{N}/networks", json={"network": {"provider:network_type": "vxlan",
                                                             "provider:segmentation_id": 77}})
    assert resp.status_code == 409 and error_type(resp) == "TunnelIdInUse"


async def test_member_network_is_vxlan_and_provider_attributes_are_admin_only(api: Any) -> None:
    net = await make_network(api, as_user="demo")
    assert "provider:network_type" not in net and net["shared"] is False
    admin_view = (await api.get(f"{N}/networks/{net['id']}")).json()["network"]
    assert admin_view["provider:network_type"] == "vxlan" and admin_view["provider:segmentation_id"] >= 1
    for attrs in ({"shared": True}, {"router:external": True}, {"provider:network_type": "vxlan"}):
        resp = await api.post(f"{N}/networks", as_user="demo", json={"network": attrs})
        assert resp.status_code == 403, attrs
    resp = await api.put(f"{N}/networks/{net['id']}", as_user="demo", json={"network": {"shared": True}})
    assert resp.status_code == 403
    resp = await api.put(f"{N}/networks/{net['id']}", as_user="demo",
                         json={"network": {"name": "renamed", "description": "d", "admin_state_up": False}})
    assert resp.status_code == 200
    assert resp.json()["network"]["name"] == "renamed" and resp.json()["network"]["admin_state_up"] is False
    resp = await api.post(f"{N}/networks", as_user="demo", json={"network": {"project_id": "someone-else"}})
    assert resp.status_code == 400


async def test_member_visibility(api: Any) -> None:
    private = await make_network(api, name="admin-private")
    private_subnet = await make_subnet(api, private["id"], "10.5.0.0/24")
    admin_port = await make_port(api, private["id"])
    own = await make_network(api, as_user="demo", name="mine")
    own_subnet = await make_subnet(api, own["id"], "10.6.0.0/24", as_user="demo")

    names = {n["name"] for n in (await api.get(f"{N}/networks", as_user="demo")).json()["networks"]}
    assert names == {"public", "mine"}
    resp = await api.get(f"{N}/networks/{private['id']}", as_user="demo")
    assert resp.status_code == 404 and error_type(resp) == "NetworkNotFound"
    subnet_ids = {s["id"] for s in (await api.get(f"{N}/subnets", as_user="demo")).json()["subnets"]}
    assert subnet_ids == {PUBLIC_SUBNET_ID, own_subnet["id"]}
    resp = await api.get(f"{N}/subnets/{private_subnet['id']}", as_user="demo")
    assert resp.status_code == 404 and error_type(resp) == "SubnetNotFound"
    resp = await api.get(f"{N}/ports/{admin_port['id']}", as_user="demo")
    assert resp.status_code == 404 and error_type(resp) == "PortNotFound"
    assert (await api.get(f"{N}/ports", as_user="demo")).json()["ports"] == []
    resp = await api.post(f"{N}/ports", as_user="demo", json={"port": {"network_id": private["id"]}})
    assert resp.status_code == 404 and error_type(resp) == "NetworkNotFound"
    resp = await api.post(f"{N}/subnets", as_user="demo",
                          json={"subnet": {"network_id": PUBLIC_NETWORK_ID, "cidr": "10.9.0.0/24", "ip_version": 4}})
    assert resp.status_code == 403
    assert (await api.get(f"{N}/networks/not-a-uuid", as_user="demo")).status_code == 404


async def test_list_filters_fields_and_pagination(api: Any) -> None:
    for i in range(3):
        await make_network(api, name=f"page-{i}")
    resp = await api.get(f"{N}/networks?name=page-1&fields=id&fields=name")
    (only,) = resp.json()["networks"]
    assert set(only) == {"id", "name"} and only["name"] == "page-1"
    external = (await api.get(f"{N}/networks?router:external=true")).json()["networks"]
    assert [n["id"] for n in external] == [PUBLIC_NETWORK_ID]
    assert (await api.get(f"{N}/networks?shared=maybe")).status_code == 400
    seen: list[str] = []
    url = f"{N}/networks?limit=2"
    while url:
        body = (await api.get(url)).json()
        seen += [n["id"] for n in body["networks"]]
        assert len(body["networks"]) <= 2
        links = [link["href"] for link in body.get("networks_links", []) if link["rel"] == "next"]
        url = links[0].replace("http://canopy.test", "") if links else ""
    assert len(seen) == 4 and seen == sorted(seen)


async def test_port_gets_an_address_from_the_pool(api: Any) -> None:
    port = await make_port(api, PUBLIC_NETWORK_ID, as_user="demo", name="p1")
    (fixed,) = port["fixed_ips"]
    assert fixed["subnet_id"] == PUBLIC_SUBNET_ID
    addr = ipaddress.ip_address(fixed["ip_address"])
    assert PUBLIC_POOL[0] <= addr <= PUBLIC_POOL[1] and str(addr) != "203.0.113.1"
    assert re.match(r"^fa:16:3e(:[0-9a-f]{2}){3}$", port["mac_address"])
    for key, value in {"status": "DOWN", "admin_state_up": True, "port_security_enabled": True,
                       "allowed_address_pairs": [], "binding:vif_type": "ovs",
                       "binding:vnic_type": "normal", "device_id": "", "device_owner": "", "tags": []}.items():
        assert port[key] == value, key
    assert "binding:host_id" not in port
    assert len(port["security_groups"]) == 1  # the project's default group
    admin_view = (await api.get(f"{N}/ports/{port['id']}")).json()["port"]
    assert admin_view["binding:host_id"] == "" and admin_view["fixed_ips"] == port["fixed_ips"]
    other = await make_port(api, PUBLIC_NETWORK_ID, as_user="demo")
    assert other["fixed_ips"][0]["ip_address"] != fixed["ip_address"]
    assert other["mac_address"] != port["mac_address"]


async def test_specific_addresses(api: Any) -> None:
    port = await make_port(api, PUBLIC_NETWORK_ID, fixed_ips=[{"ip_address": "203.0.113.77"}])
    assert port["fixed_ips"] == [{"subnet_id": PUBLIC_SUBNET_ID, "ip_address": "203.0.113.77"}]
    err = await make_port(api, PUBLIC_NETWORK_ID, status=409,
                          fixed_ips=[{"subnet_id": PUBLIC_SUBNET_ID, "ip_address": "203.0.113.77"}])
    assert err["type"] == "IpAddressAlreadyAllocated" and "203.0.113.77" in err["message"]
    # A member may not pick an address on a network it does not own, but may on its own.
    resp = await api.post(f"{N}/ports", as_user="demo", json={"port": {
        "network_id": PUBLIC_NETWORK_ID, "fixed_ips": [{"ip_address": "203.0.113.78"}]}})
    assert resp.status_code == 403
    own = await make_network(api, as_user="demo")
    await make_subnet(api, own["id"], "10.7.0.0/24", as_user="demo")
    mine = await make_port(api, own["id"], as_user="demo", fixed_ips=[{"ip_address": "10.7.0.50"}])
    assert mine["fixed_ips"][0]["ip_address"] == "10.7.0.50"


@pytest.mark.parametrize("fixed_ips, status, kind", [
    ([{"ip_address": "10.99.0.5"}], 400, "InvalidIpForNetwork"),
    ([{"subnet_id": PUBLIC_SUBNET_ID, "ip_address": "10.99.0.5"}], 400, "InvalidIpForSubnet"),
    ([{"ip_address": "203.0.113.255"}], 400, "InvalidIpForNetwork"),
    ([{"ip_address": "203.0.113.1"}], 409, "IpAddressAlreadyAllocated"),
    ([{"ip_address": "not-an-ip"}], 400, "InvalidInput"),
    ([{"subnet_id": "9f9b2b5e-8d8e-4c1f-9d1e-000000000000"}], 400, "InvalidInput"),
    ([{"bogus": 1}], 400, "InvalidInput"),
    ([{"ip_address": "203.0.113.90"}, {"ip_address": "203.0.113.90"}], 409, "IpAddressAlreadyAllocated"),
])
async def test_bad_fixed_ips_write_nothing(api: Any, fixed_ips: list[dict[str, Any]], status: int,
                                           kind: str) -> None:
    err = await make_port(api, PUBLIC_NETWORK_ID, status=status, fixed_ips=fixed_ips)
    assert err["type"] == kind, err
    assert (await api.get(f"{N}/ports")).json()["ports"] == []


async def test_add_and_remove_fixed_ips_on_a_live_port(api: Any) -> None:
    port = await make_port(api, PUBLIC_NETWORK_ID, fixed_ips=[{"ip_address": "203.0.113.20"}])
    url = f"{N}/ports/{port['id']}"
    resp = await api.put(url, json={"port": {"fixed_ips": [{"ip_address": "203.0.113.20"},
                                                           {"subnet_id": PUBLIC_SUBNET_ID}]}})
    assert resp.status_code == 200, resp.text
    ips = [f["ip_address"] for f in resp.json()["port"]["fixed_ips"]]
    assert len(ips) == 2 and "203.0.113.20" in ips
    added = next(ip for ip in ips if ip != "203.0.113.20")
    resp = await api.put(url, json={"port": {"fixed_ips": [{"ip_address": added}, {"ip_address": "203.0.113.21"}]}})
    assert [f["ip_address"] for f in resp.json()["port"]["fixed_ips"]] == sorted(
        [added, "203.0.113.21"], key=lambda s: int(ipaddress.ip_address(s)))
    # The removed address is free again; a taken one cannot be added.
    await make_port(api, PUBLIC_NETWORK_ID, fixed_ips=[{"ip_address": "203.0.113.20"}])
    resp = await api.put(url, json={"port": {"fixed_ips": [{"ip_address": "203.0.113.20"}]}})
    assert resp.status_code == 409 and error_type(resp) == "IpAddressAlreadyAllocated"
    after = (await api.get(url)).json()["port"]["fixed_ips"]
    assert {f["ip_address"] for f in after} == {added, "203.0.113.21"}
    resp = await api.put(url, json={"port": {"fixed_ips": []}})
    assert resp.json()["port"]["fixed_ips"] == []


async def test_exhausted_pool_is_a_conflict(api: Any) -> None:
    net = await make_network(api)
    subnet = await make_subnet(api, net["id"], "10.1.0.0/29",
                               allocation_pools=[{"start": "10.1.0.2", "end": "10.1.0.3"}])
    got = {(await make_port(api, net["id"]))["fixed_ips"][0]["ip_address"] for _ in range(2)}
    assert got == {"10.1.0.2", "10.1.0.3"}
    err = await make_port(api, net["id"], status=409)
    assert err["type"] == "IpAddressGenerationFailure" and net["id"] in err["message"]
    ports = (await api.get(f"{N}/ports?network_id={net['id']}")).json()["ports"]
    assert len(ports) == 2
    # An address outside the pool but inside the subnet may still be asked for.
    outside = await make_port(api, net["id"], fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.1.0.6"}])
    assert outside["fixed_ips"][0]["ip_address"] == "10.1.0.6"


@pytest.mark.parametrize("attrs, status, kind, words", [
    ({"cidr": "10.2.0.1/24"}, 400, "InvalidInput", "10.2.0.0/24"),
    ({"cidr": "10.2.0.0/33"}, 400, "InvalidInput", "cidr"),
    ({"cidr": "banana"}, 400, "InvalidInput", "cidr"),
    ({"cidr": "2001:db8::/64", "ip_version": 4}, 400, "InvalidInput", "ip_version"),
    ({"cidr": "10.2.0.0/24", "ip_version": 5}, 400, "InvalidInput", "ip_version"),
    ({"allocation_pools": [{"start": "10.2.0.10", "end": "10.2.1.10"}]}, 400, "OutOfBoundsAllocationPool", "10.2.1.10"),
    ({"allocation_pools": [{"start": "10.2.0.0", "end": "10.2.0.10"}]}, 400, "OutOfBoundsAllocationPool", "10.2.0.0"),
    ({"allocation_pools": [{"start": "10.2.0.20", "end": "10.2.0.10"}]}, 400, "InvalidAllocationPool", "10.2.0.20"),
    ({"allocation_pools": [{"start": "10.2.0.x", "end": "10.2.0.10"}]}, 400, "InvalidInput", "allocation_pools"),
    ({"allocation_pools": [{"start": "10.2.0.10", "end": "10.2.0.20"}, {"start": "10.2.0.15", "end": "10.2.0.30"}]},
     409, "OverlappingAllocationPools", "10.2.0.15"),
    ({"allocation_pools": [{"start": "10.2.0.1", "end": "10.2.0.20"}]}, 409, "GatewayConflictWithAllocationPools",
     "10.2.0.1"),
    ({"gateway_ip": "10.3.0.1"}, 400, "InvalidInput", "gateway_ip"),
    ({"gateway_ip": "10.2.0.255"}, 400, "InvalidInput", "gateway_ip"),
    ({"dns_nameservers": ["nope"]}, 400, "InvalidInput", "dns_nameservers"),
    ({"host_routes": [{"destination": "0.0.0.0/0"}]}, 400, "InvalidInput", "host_routes"),
    ({"ipv6_ra_mode": "slaac"}, 400, "InvalidInput", "ipv6_ra_mode"),
    ({"color": "red"}, 400, "HTTPBadRequest", "color"),
])
async def test_bad_subnets_write_nothing(api: Any, attrs: dict[str, Any], status: int, kind: str,
                                         words: str) -> None:
    net = await make_network(api)
    body = {"network_id": net["id"], "cidr": "10.2.0.0/24", "ip_version": 4, **attrs}
    resp = await api.post(f"{N}/subnets", json={"subnet": body})
    assert resp.status_code == status, resp.text
    assert error_type(resp) == kind and words in resp.json()["NeutronError"]["message"]
    assert (await api.get(f"{N}/subnets?network_id={net['id']}")).json()["subnets"] == []


async def test_subnet_options_and_update(api: Any) -> None:
    net = await make_network(api)
    subnet = await make_subnet(api, net["id"], "10.4.0.0/24", gateway_ip=None, enable_dhcp=True,
                               host_routes=[{"destination": "0.0.0.0/0", "nexthop": "10.4.0.254"}])
    assert subnet["gateway_ip"] is None and subnet["enable_dhcp"] is True
    assert subnet["allocation_pools"] == [{"start": "10.4.0.1", "end": "10.4.0.254"}]
    with_gw = await make_subnet(api, (await make_network(api))["id"], "10.8.0.0/24", gateway_ip="10.8.0.100")
    assert with_gw["allocation_pools"] == [{"start": "10.8.0.1", "end": "10.8.0.99"},
                                           {"start": "10.8.0.101", "end": "10.8.0.254"}]
    url = f"{N}/subnets/{subnet['id']}"
    resp = await api.put(url, json={"subnet": {"name": "s", "allocation_pools": [
        {"start": "10.4.0.10", "end": "10.4.0.20"}], "gateway_ip": "10.4.0.1"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["subnet"]["allocation_pools"] == [{"start": "10.4.0.10", "end": "10.4.0.20"}]
    port = await make_port(api, net["id"])
    assert 10 <= int(port["fixed_ips"][0]["ip_address"].rsplit(".", 1)[1]) <= 20
    resp = await api.put(url, json={"subnet": {"gateway_ip": "10.4.0.15"}})
    assert resp.status_code == 409 and error_type(resp) == "GatewayConflictWithAllocationPools"
    assert (await api.put(url, json={"subnet": {"cidr": "10.4.0.0/16"}})).status_code == 400
    overlap = await api.post(f"{N}/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.4.0.128/25",
                                                              "ip_version": 4}})
    assert overlap.status_code == 400 and "overlaps" in overlap.json()["NeutronError"]["message"]


async def test_ipv6_subnet_and_port(api: Any) -> None:
    net = await make_network(api)
    v4 = await make_subnet(api, net["id"], "10.10.0.0/24")
    v6 = await make_subnet(api, net["id"], "2001:DB8::/64")
    assert v6["cidr"] == "2001:db8::/64" and v6["gateway_ip"] == "2001:db8::1"
    assert v6["allocation_pools"] == [{"start": "2001:db8::2", "end": "2001:db8::ffff:ffff:ffff:ffff"}]
    default = await make_port(api, net["id"])
    assert [f["subnet_id"] for f in default["fixed_ips"]] == [v4["id"]]
    dual = await make_port(api, net["id"], fixed_ips=[{"subnet_id": v6["id"]}, {"subnet_id": v4["id"]}])
    assert [f["subnet_id"] for f in dual["fixed_ips"]] == [v4["id"], v6["id"]]
    assert ipaddress.ip_address(dual["fixed_ips"][1]["ip_address"]) in ipaddress.ip_network("2001:db8::/64")
    spec = await make_port(api, net["id"], fixed_ips=[{"ip_address": "2001:db8:0::00ab"}])
    assert spec["fixed_ips"] == [{"subnet_id": v6["id"], "ip_address": "2001:db8::ab"}]
    err = await make_port(api, net["id"], status=409, fixed_ips=[{"ip_address": "2001:db8::ab"}])
    assert err["type"] == "IpAddressAlreadyAllocated"


async def test_delete_releases_the_address(api: Any) -> None:
    port = await make_port(api, PUBLIC_NETWORK_ID, fixed_ips=[{"ip_address": "203.0.113.99"}])
    await make_port(api, PUBLIC_NETWORK_ID, status=409, fixed_ips=[{"ip_address": "203.0.113.99"}])
    assert (await api.delete(f"{N}/ports/{port['id']}")).status_code == 204
    assert (await api.get(f"{N}/ports/{port['id']}")).status_code == 404
    assert (await api.delete(f"{N}/ports/{port['id']}")).status_code == 404
    again = await make_port(api, PUBLIC_NETWORK_ID, fixed_ips=[{"ip_address": "203.0.113.99"}])
    assert again["fixed_ips"][0]["ip_address"] == "203.0.113.99"


async def test_network_in_use_and_cascading_delete(api: Any) -> None:
    net = await make_network(api)
    subnet = await make_subnet(api, net["id"], "10.11.0.0/24")
    server_port = await make_port(api, net["id"], device_id="vm-1", device_owner="compute:nova")
    other_port = await make_port(api, net["id"], device_id="x", device_owner="network:dhcp")
    resp = await api.delete(f"{N}/networks/{net['id']}")
    assert resp.status_code == 409 and error_type(resp) == "NetworkInUse"
    resp = await api.delete(f"{N}/subnets/{subnet['id']}")
    assert resp.status_code == 409 and error_type(resp) == "SubnetInUse"
    assert (await api.delete(f"{N}/ports/{server_port['id']}")).status_code == 204
    assert (await api.delete(f"{N}/networks/{net['id']}")).status_code == 204
    assert (await api.get(f"{N}/networks/{net['id']}")).status_code == 404
    assert (await api.get(f"{N}/subnets/{subnet['id']}")).status_code == 404
    assert (await api.get(f"{N}/ports/{other_port['id']}")).status_code == 404
    net2 = await make_network(api)
    sub2 = await make_subnet(api, net2["id"], "10.12.0.0/24")
    assert (await api.delete(f"{N}/subnets/{sub2['id']}")).status_code == 204
    assert (await api.get(f"{N}/networks/{net2['id']}")).json()["network"]["subnets"] == []
    assert (await api.delete(f"{N}/networks/{net2['id']}", as_user="demo")).status_code == 404


async def test_port_update_policy_and_attributes(api: Any) -> None:
    own = await make_network(api, as_user="demo")
    await make_subnet(api, own["id"], "10.13.0.0/24", as_user="demo")
    port = await make_port(api, own["id"], as_user="demo")
    url = f"{N}/ports/{port['id']}"
    assert (await api.put(url, as_user="demo", json={"port": {"binding:host_id": "h1"}})).status_code == 403
    # the network's owner may turn port security off, once the port is in no security group
    resp = await api.put(url, as_user="demo", json={"port": {"port_security_enabled": False}})
    assert resp.status_code == 409 and error_type(resp) == "PortSecurityPortHasSecurityGroup"
    pairs = [{"ip_address": "10.13.0.200"}, {"ip_address": "192.0.2.0/24", "mac_address": "FA:16:3E:00:00:01"}]
    resp = await api.put(url, as_user="demo", json={"port": {"allowed_address_pairs": pairs, "name": "web",
                                                             "device_id": "dev", "device_owner": "compute:az1"}})
    assert resp.status_code == 200, resp.text
    body = resp.json()["port"]
    assert body["allowed_address_pairs"] == [{"ip_address": "10.13.0.200", "mac_address": port["mac_address"]},
                                             {"ip_address": "192.0.2.0/24", "mac_address": "fa:16:3e:00:00:01"}]
    assert body["name"] == "web" and body["device_owner"] == "compute:az1"
    resp = await api.put(url, json={"port": {"port_security_enabled": False, "security_groups": []}})
    assert resp.status_code == 409 and error_type(resp) == "AddressPairAndPortSecurityRequired"
    resp = await api.put(url, json={"port": {"port_security_enabled": False, "allowed_address_pairs": [],
                                             "security_groups": [], "binding:host_id": "host-1"}})
    assert resp.status_code == 200
    assert resp.json()["port"]["binding:host_id"] == "host-1" and resp.json()["port"]["status"] == "ACTIVE"
    assert (await api.put(url, json={"port": {"network_id": PUBLIC_NETWORK_ID}})).status_code == 400
    public = await make_port(api, PUBLIC_NETWORK_ID, as_user="demo")
    for attrs in ({"allowed_address_pairs": [{"ip_address": "203.0.113.5"}]},
                  {"port_security_enabled": False, "security_groups": []}):
        resp = await api.put(f"{N}/ports/{public['id']}", as_user="demo", json={"port": attrs})
        assert resp.status_code == 403, attrs


async def test_port_list_filters(api: Any) -> None:
    a = await make_port(api, PUBLIC_NETWORK_ID, device_id="vm-a", device_owner="compute:nova",
                        fixed_ips=[{"ip_address": "203.0.113.30"}])
    b = await make_port(api, PUBLIC_NETWORK_ID, device_id="vm-b", as_user="demo")

    async def ids(query: str, as_user: str = "admin") -> set[str]:
        resp = await api.get(f"{N}/ports?{query}", as_user=as_user)
        assert resp.status_code == 200, resp.text
        return {p["id"] for p in resp.json()["ports"]}

    assert await ids("fixed_ips=ip_address%3D203.0.113.30") == {a["id"]}
    assert await ids(f"fixed_ips=subnet_id%3D{PUBLIC_SUBNET_ID}") == {a["id"], b["id"]}
    assert await ids("device_id=vm-a&device_id=vm-b") == {a["id"], b["id"]}
    assert await ids("device_owner=compute:nova") == {a["id"]}
    assert await ids(f"mac_address={b['mac_address']}") == {b["id"]}
    assert await ids(f"network_id={PUBLIC_NETWORK_ID}", as_user="demo") == {b["id"]}
    assert await ids("limit=1") <= {a["id"], b["id"]}
    assert (await api.get(f"{N}/ports?fixed_ips=foo")).status_code == 400


async def test_conductor_entry_points(api: Any, cloud: Any) -> None:
    gdb, cdb = cloud.dbs.global_db, cloud.dbs.cell(cloud.cell_name)
    network, subnets = await gdb.read(nets.load_network, PUBLIC_NETWORK_ID)
    assert network["id"] == PUBLIC_NETWORK_ID and [s["id"] for s in subnets] == [PUBLIC_SUBNET_ID]
    assert await gdb.read(nets.load_network, "00000000-0000-0000-0000-000000000000") is None
    now = cloud.clock.now()
    before = cdb.counter.total
    port = await cdb.write(lambda conn: pt.create_port(
        conn, network=network, subnets=subnets, project_id="p1", device_id="srv-1", device_owner="compute:nova",
        host_id="host-1", name="eth0", now=now, port_id="11111111-2222-3333-4444-555555555555"))
    assert cdb.counter.total - before == 3  # the port INSERT, one ip_allocations INSERT, the binding INSERT
    assert port.id == "11111111-2222-3333-4444-555555555555" and port.status == "ACTIVE"
    assert port.host_id == "host-1" and len(port.fixed_ips) == 1
    view = port_view(port.row(), port.fixed_ips)  # the API's rendering of the record
    assert view["binding:host_id"] == "host-1" and view["created_at"].endswith("Z")
    await cdb.write(lambda conn: pt.create_port(conn, network=network, subnets=subnets, project_id="p1",
                                                device_id="srv-1", now=now, fixed_ips=[]))
    with pytest.raises(pt.NetworkError) as info:
        await cdb.write(lambda conn: pt.create_port(conn, network=network, subnets=subnets, project_id="p1",
                                                    now=now, port_id=view["id"]))
    assert info.value.status == 409 and info.value.neutron_type == "PortExists"
    by_device = await cdb.read(pt.ports_of_devices, ["srv-1", "srv-2"])
    assert [len(by_device["srv-1"]), by_device["srv-2"]] == [2, []]
    assert next(p for p in by_device["srv-1"] if p["id"] == view["id"]) == view
    deleted = await cdb.write(pt.delete_ports_of_device, "srv-1")
    assert len(deleted) == 2 and view["id"] in deleted
    assert await cdb.read(pt.ports_of_devices, ["srv-1"]) == {"srv-1": []}
    again = await cdb.write(lambda conn: pt.create_port(conn, network=network, subnets=subnets, project_id="p1",
                                                        now=now, fixed_ips=view["fixed_ips"]))
    assert again.fixed_ips == view["fixed_ips"]


async def test_the_arp_responder_is_an_admin_option_set_at_creation(api: Any) -> None:
    vx = await make_network(api, **{"provider:network_type": "vxlan", "canopy:arp_responder": True})
    assert vx["canopy:arp_responder"] is True
    plain = await make_network(api, **{"provider:network_type": "vxlan"})
    assert plain["canopy:arp_responder"] is False  # off unless asked for: see docs/network.md
    member = await make_network(api, as_user="demo")
    assert "canopy:arp_responder" not in member
    resp = await api.post(f"{N}/networks", as_user="demo", json={"network": {"canopy:arp_responder": True}})
    assert resp.status_code == 403
    resp = await api.post(f"{N}/networks", json={"network": {"canopy:arp_responder": "maybe"}})
    assert resp.status_code == 400 and "canopy:arp_responder" in resp.text
    resp = await api.put(f"{N}/networks/{plain['id']}", json={"network": {"canopy:arp_responder": True}})
    assert resp.status_code == 400 and error_type(resp) == "InvalidInput"
    shown = (await api.get(f"{N}/networks/{plain['id']}")).json()["network"]
    assert shown["canopy:arp_responder"] is False
