"""Issue 14, limits: Nova's limits on what a server carries hold on every path (create, metadata API,
rename, rebuild), private flavors are not usable by members, a multi-create is bounded and planned only
after the quota, and an unknown zone or security group is a 400 at the API. Each test failed on the code
before issue 14."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from canopy.db import tables_cell as c
from tests.clouds import V, server_body, wait_for_server

S = "/compute/v2.1/servers"


async def _instances(stack: Any) -> int:
    def count(conn: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(c.instances)).scalar_one())
    return await stack.cloud.dbs.cell(stack.cloud.cell_name).read_fresh(count)


BAD_SERVERS = [
    ("129 metadata items", {"metadata": {f"k{i}": "v" for i in range(129)}}, 403, "metadata_items"),
    ("a 256-character metadata key", {"metadata": {"k" * 256: "v"}}, 400, "metadata"),
    ("a metadata key with a slash", {"metadata": {"a/b": "v"}}, 400, "metadata"),
    ("a 256-character metadata value", {"metadata": {"k": "v" * 256}}, 400, "metadata"),
    ("51 tags", {"tags": [f"t{i}" for i in range(51)]}, 400, "tags"),
    ("a 61-character tag", {"tags": ["t" * 61]}, 400, "tags"),
    ("a tag with a comma", {"tags": ["a,b"]}, 400, "tags"),
    ("a name with NUL", {"name": "web\x00"}, 400, "name"),
    ("a name with a terminal escape", {"name": "web\x1b[2J"}, 400, "name"),
    ("a 256-character name", {"name": "n" * 256}, 400, "name"),
    ("a description with a terminal escape", {"description": "x\x1b]0;pwned\x07"}, 400, "description"),
    ("user_data over 64 KiB", {"user_data": "QUFB" * 16384}, 400, "user_data"),
    ("accessIPv4 not an IP", {"accessIPv4": "not-an-ip"}, 400, "accessIPv4"),
    ("accessIPv6 an IPv4 address", {"accessIPv6": "192.0.2.1"}, 400, "accessIPv6"),
    ("an unknown security group", {"security_groups": [{"name": "nope"}]}, 400, "nope"),
    ("an unknown availability zone", {"availability_zone": "nowhere"}, 400, "availability zone"),
    ("min_count over the bound", {"min_count": 200_000, "max_count": 200_000}, 400, "min_count"),
]


@pytest.mark.parametrize("label,over,status,needle", BAD_SERVERS, ids=[b[0] for b in BAD_SERVERS])
async def test_a_server_over_novas_limits_is_refused_and_writes_nothing(stack: Any, label: str, over: dict[str, Any],
                                                                         status: int, needle: str) -> None:
    before = await _instances(stack)
    resp = await stack.api.post(S, json=server_body(**over), headers=V, as_user="demo")
    assert resp.status_code == status, resp.text
    assert needle in next(iter(resp.json().values()))["message"]
    assert await _instances(stack) == before


async def test_personality_limits_hold_before_2_57(stack: Any) -> None:
    files = [{"path": f"/etc/f{i}", "contents": "QUFB"} for i in range(6)]
    resp = await stack.api.post(S, json=server_body(personality=files), as_user="demo",
                                headers={"OpenStack-API-Version": "compute 2.56"})
    assert resp.status_code == 403, resp.text
    big = [{"path": "/etc/big", "contents": "QUFB" * 4000}]
    resp = await stack.api.post(S, json=server_body(personality=big), as_user="demo",
                                headers={"OpenStack-API-Version": "compute 2.56"})
    assert resp.status_code == 403, resp.text


async def test_a_huge_max_count_plans_only_what_the_quota_grants(stack: Any, monkeypatch: Any) -> None:
    from canopy.api.compute import server_create

    planned = []
    real = server_create.hostname_of
    monkeypatch.setattr(server_create, "hostname_of", lambda name, fb: planned.append(name) or real(name, fb))
    resp = await stack.api.post(S, json=server_body(max_count=200_000), headers=V, as_user="demo")
    assert resp.status_code == 202, resp.text
    assert len(planned) <= 2, f"{len(planned)} servers planned for a create the quota lowers to one"


async def _server(stack: Any) -> str:
    resp = await stack.api.post(S, json=server_body(name="limits"), headers=V, as_user="demo")
    sid = resp.json()["server"]["id"]
    await wait_for_server(stack.api, sid, {"ACTIVE"}, as_user="demo")
    return str(sid)


async def test_every_other_path_applies_the_same_limits(stack: Any) -> None:
    sid = await _server(stack)
    api = stack.api
    cases = [
        ("PUT", f"{S}/{sid}", {"server": {"name": "evil\x1b[2J"}}, 400),
        ("PUT", f"{S}/{sid}", {"server": {"accessIPv4": "not-an-ip"}}, 400),
        ("PUT", f"{S}/{sid}/metadata", {"metadata": {"a/b": "v"}}, 400),
        ("POST", f"{S}/{sid}/metadata", {"metadata": {"k": "v" * 256}}, 400),
        ("PUT", f"{S}/{sid}/metadata/k", {"meta": {"k": "v" * 256}}, 400),
        ("POST", f"{S}/{sid}/action", {"rebuild": {"imageRef": server_body()["server"]["imageRef"],
                                                   "name": "x\x00"}}, 400),
        ("POST", f"{S}/{sid}/action", {"rebuild": {"imageRef": server_body()["server"]["imageRef"],
                                                   "metadata": {"k" * 256: "v"}}}, 400),
        ("POST", f"{S}/{sid}/action", {"createImage": {"name": "snap", "metadata": {"k": "v" * 256}}}, 400),
    ]
    for method, path, body, status in cases:
        resp = await api.request(method, path, json=body, headers=V, as_user="demo")
        assert resp.status_code == status, (method, path, body, resp.text)
    server = (await api.get(f"{S}/{sid}", headers=V, as_user="demo")).json()["server"]
    assert server["name"] == "limits" and server["metadata"] == {}


@pytest.mark.parametrize("resource", ["networks", "ports", "subnets"])
async def test_network_names_refuse_control_characters(stack: Any, resource: str) -> None:
    from canopy.seed import PUBLIC_NETWORK_ID

    body: dict[str, Any] = {"name": "a\x00b"}
    if resource == "ports":
        body["network_id"] = PUBLIC_NETWORK_ID
    if resource == "subnets":
        body.update(network_id=PUBLIC_NETWORK_ID, ip_version=4, cidr="192.0.2.0/24", name="x\x1b[31m")
    resp = await stack.api.post(f"/network/v2.0/{resource}", json={resource[:-1]: body})
    assert resp.status_code == 400, resp.text
    assert "NeutronError" in resp.json()


async def _private_flavor(stack: Any) -> str:
    resp = await stack.api.post("/compute/v2.1/flavors", json={"flavor": {
        "name": "secret", "id": "secret", "ram": 512, "vcpus": 1, "disk": 1, "os-flavor-access:is_public": False}})
    assert resp.status_code == 200, resp.text
    assert (await stack.api.get("/compute/v2.1/flavors/secret", as_user="demo")).status_code == 404
    return "secret"


async def test_a_member_cannot_boot_a_private_flavor(stack: Any) -> None:
    flavor = await _private_flavor(stack)
    before = await _instances(stack)
    resp = await stack.api.post(S, json=server_body(flavorRef=flavor), headers=V, as_user="demo")
    assert resp.status_code == 400, resp.text
    assert "Flavor secret could not be found" in resp.json()["badRequest"]["message"]
    assert await _instances(stack) == before
    admin = await stack.api.post(S, json=server_body(flavorRef=flavor), headers=V)
    assert admin.status_code == 202, "admins may use private flavors"


async def test_a_member_cannot_resize_to_a_private_flavor(stack: Any) -> None:
    flavor = await _private_flavor(stack)
    sid = await _server(stack)
    resp = await stack.api.post(f"{S}/{sid}/action", json={"resize": {"flavorRef": flavor}}, headers=V,
                                as_user="demo")
    assert resp.status_code == 400, resp.text
    assert "Unable to locate requested flavor" in resp.json()["badRequest"]["message"]
