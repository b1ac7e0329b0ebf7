"""Network v2.0: bulk creates (all or nothing), the ip_address_substr filter, Neutron's subnet-overlap error,
and each error path's NeutronError body."""

from __future__ import annotations

from typing import Any

import pytest

from canopy.seed import PUBLIC_NETWORK_ID, PUBLIC_SUBNET_ID
from tests.stack.test_network_api import N, make_network, make_port, make_subnet


def neutron_error(resp: Any, status: int, kind: str) -> str:
    """The message of a NeutronError body with `status` and `type`, checking the whole shape."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"NeutronError"} and set(body["NeutronError"]) == {"type", "message", "detail"}
    assert body["NeutronError"]["type"] == kind, body
    assert isinstance(body["NeutronError"]["message"], str) and body["NeutronError"]["message"]
    return str(body["NeutronError"]["message"])


async def _names(api: Any, kind: str) -> list[str]:
    return sorted(x["name"] for x in (await api.get(f"{N}/{kind}?limit=1000")).json()[kind])


async def test_bulk_networks_subnets_and_ports(api: Any) -> None:
    resp = await api.post(f"{N}/networks", as_user="demo", json={"networks": [{"name": "b1"}, {"name": "b2"}]})
    assert resp.status_code == 201, resp.text
    made = resp.json()["networks"]
    assert [n["name"] for n in made] == ["b1", "b2"]
    subnets = [{"network_id": made[0]["id"], "cidr": "10.1.0.0/24", "ip_version": 4, "name": "s1"},
               {"network_id": made[1]["id"], "cidr": "10.1.0.0/24", "ip_version": 4, "name": "s2"}]
    resp = await api.post(f"{N}/subnets", as_user="demo", json={"subnets": subnets})
    assert resp.status_code == 201, resp.text
    assert [s["cidr"] for s in resp.json()["subnets"]] == ["10.1.0.0/24", "10.1.0.0/24"]  # across networks
    ports = [{"network_id": made[0]["id"], "name": "p1"}, {"network_id": made[1]["id"], "name": "p2"}]
    resp = await api.post(f"{N}/ports", as_user="demo", json={"ports": ports})
    assert resp.status_code == 201, resp.text
    assert [p["name"] for p in resp.json()["ports"]] == ["p1", "p2"]
    assert all(p["fixed_ips"][0]["ip_address"].startswith("10.1.0.") for p in resp.json()["ports"])


@pytest.mark.parametrize("kind,second,status,error", [
    ("networks", {"name": "ok", "bogus": 1}, 400, "HTTPBadRequest"),
    ("networks", {"name": "ok", "mtu": 1}, 400, "InvalidInput"),
    ("networks", {"name": "ok", "shared": True}, 403, "PolicyNotAuthorized"),
    ("ports", {"network_id": "00000000-0000-0000-0000-000000000000"}, 404, "NetworkNotFound"),
    ("ports", {"fixed_ips": [{"ip_address": "10.2.0.5"}]}, 409, "IpAddressAlreadyAllocated"),
    ("subnets", {"cidr": "10.2.0.128/25"}, 400, "InvalidInput"),
    ("subnets", {"cidr": "not-a-cidr"}, 400, "InvalidInput"),
])
async def test_one_bad_element_creates_nothing(api: Any, kind: str, second: dict[str, Any], status: int,
                                               error: str) -> None:
    net = await make_network(api, as_user="demo", name="base")
    await make_subnet(api, net["id"], "10.2.0.0/24", as_user="demo")
    first: dict[str, Any] = {"networks": {"name": "first"}, "ports": {"network_id": net["id"], "name": "first",
                             "fixed_ips": [{"ip_address": "10.2.0.5"}]},
                             "subnets": {"network_id": net["id"], "cidr": "10.3.0.0/24", "name": "first"}}[kind]
    if kind != "networks":
        second = {"network_id": net["id"], "name": "second", **second}
    before = {k: await _names(api, k) for k in ("networks", "subnets", "ports")}
    resp = await api.post(f"{N}/{kind}", as_user="demo", json={kind: [first, second]})
    neutron_error(resp, status, error)
    assert {k: await _names(api, k) for k in ("networks", "subnets", "ports")} == before


async def test_bulk_bodies_are_bounded_and_shaped(api: Any) -> None:
    neutron_error(await api.post(f"{N}/networks", json={"networks": []}), 400, "HTTPBadRequest")
    neutron_error(await api.post(f"{N}/networks", json={"networks": ["x"]}), 400, "HTTPBadRequest")
    many = [{"name": f"n{i}"} for i in range(101)]
    assert "at most 100" in neutron_error(await api.post(f"{N}/networks", json={"networks": many}), 400,
                                          "HTTPBadRequest")


async def test_subnet_overlap_in_neutrons_words(api: Any) -> None:
    net = await make_network(api, name="ov")
    await make_subnet(api, net["id"], "10.5.0.0/24")
    resp = await api.post(f"{N}/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.5.0.0/16",
                                                           "ip_version": 4}})
    message = neutron_error(resp, 400, "InvalidInput")
    assert message == (f"Invalid input for operation: Requested subnet with cidr: 10.5.0.0/16 for network: "
                       f"{net['id']} overlaps with another subnet.")
    other = await make_network(api, name="ov2")
    assert (await make_subnet(api, other["id"], "10.5.0.0/16"))["cidr"] == "10.5.0.0/16"


async def test_ip_address_substr_filter(api: Any) -> None:
    net = await make_network(api, name="substr")
    subnet = await make_subnet(api, net["id"], "10.7.0.0/24")
    wanted = {ip: (await make_port(api, net["id"], fixed_ips=[{"ip_address": ip}]))["id"]
              for ip in ("10.7.0.15", "10.7.0.150", "10.7.0.26")}

    async def ids(query: str) -> set[str]:
        resp = await api.get(f"{N}/ports?network_id={net['id']}&{query}")
        assert resp.status_code == 200, resp.text
        return {p["id"] for p in resp.json()["ports"]}

    assert await ids("fixed_ips=ip_address_substr=0.15") == {wanted["10.7.0.15"], wanted["10.7.0.150"]}
    assert await ids("fixed_ips=ip_address_substr=.26") == {wanted["10.7.0.26"]}
    assert await ids("fixed_ips=ip_address_substr=%25") == set()  # a literal %, not a wildcard
    both = f"fixed_ips=ip_address_substr=15&fixed_ips=subnet_id={subnet['id']}"
    assert await ids(both) == {wanted["10.7.0.15"], wanted["10.7.0.150"]}
    neutron_error(await api.get(f"{N}/ports?fixed_ips=ip_address_sub=1"), 400, "InvalidInput")


@pytest.mark.parametrize("method,path,body,status,kind", [
    ("GET", "/networks/00000000-0000-0000-0000-000000000000", None, 404, "NetworkNotFound"),
    ("GET", "/subnets/00000000-0000-0000-0000-000000000000", None, 404, "SubnetNotFound"),
    ("GET", "/ports/00000000-0000-0000-0000-000000000000", None, 404, "PortNotFound"),
    ("GET", "/extensions/nope", None, 404, "HTTPNotFound"),
    ("POST", "/networks", {"network": {"mtu": "x"}}, 400, "InvalidInput"),
    ("POST", "/networks", [1], 400, "MalformedRequestBody"),
    ("POST", "/subnets", {"subnet": {"cidr": "10.0.0.0/24"}}, 400, "HTTPBadRequest"),
    ("POST", "/ports", {"port": {}}, 400, "HTTPBadRequest"),
    ("PUT", "/networks/00000000-0000-0000-0000-000000000000", {"network": {"name": "x"}}, 404, "NetworkNotFound"),
    ("DELETE", "/ports/00000000-0000-0000-0000-000000000000", None, 404, "PortNotFound"),
    ("GET", "/routers", None, 404, "HTTPNotFound"),
    ("GET", "/floatingips", None, 404, "HTTPNotFound"),
    ("GET", "/security-group-rules-that-do-not-exist", None, 404, "HTTPNotFound"),
    ("PATCH", "/networks", None, 405, "HTTPMethodNotAllowed"),
    ("DELETE", f"/subnets/{PUBLIC_SUBNET_ID}", None, 403, "PolicyNotAuthorized"),
    ("PUT", f"/networks/{PUBLIC_NETWORK_ID}", {"network": {"name": "mine"}}, 403, "PolicyNotAuthorized"),
])
async def test_error_paths_answer_neutron_errors(api: Any, method: str, path: str, body: Any, status: int,
                                                 kind: str) -> None:
    resp = await api.request(method, f"{N}{path}", as_user="demo", json=body)
    neutron_error(resp, status, kind)
