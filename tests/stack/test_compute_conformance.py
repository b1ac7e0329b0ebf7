"""Issue 16's compute conformance: adminPass, access IPs, lock/unlock, tags, os-server-password, the
versions document. Each test failed before the change (the fields were dropped or the routes missing)."""

from __future__ import annotations

from typing import Any

import pytest

from canopy.agent import configdrive
from tests.clouds import V, boot_active, server_body, wait_for_server

V25 = {"OpenStack-API-Version": "compute 2.25"}
ID = "/identity/v3"


async def add_alt_user(stack: Any) -> None:
    """A member user `alt` (password alt) in a project of its own, `alt`."""
    api = stack.api
    project = (await api.post(f"{ID}/projects", json={"project": {"name": "alt", "domain_id": "default"}})).json()
    user = (await api.post(f"{ID}/users", json={"user": {"name": "alt", "password": "alt"}})).json()["user"]
    role = (await api.get(f"{ID}/roles?name=member")).json()["roles"][0]["id"]
    resp = await api.put(f"{ID}/projects/{project['project']['id']}/users/{user['id']}/roles/{role}")
    assert resp.status_code == 204, resp.text
V72 = {"OpenStack-API-Version": "compute 2.72"}


async def test_versions_document_lists_v20_then_v21(stack: Any) -> None:
    versions = (await stack.api.get("/compute/")).json()["versions"]
    assert [v["id"] for v in versions] == ["v2.0", "v2.1"]
    assert versions[0]["status"] == "SUPPORTED" and versions[1]["status"] == "CURRENT"


async def test_create_returns_an_admin_pass_the_guest_gets_on_its_config_drive(stack: Any) -> None:
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(), as_user="demo", headers=V)
    assert resp.status_code == 202, resp.text
    body = resp.json()["server"]
    password = body["adminPass"]
    assert len(password) == 12 and password.isalnum()
    server = await wait_for_server(stack.api, body["id"], {"ACTIVE"})
    guest = stack.drivers[server["OS-EXT-SRV-ATTR:host"]].guests[body["id"]]
    assert configdrive.meta_data(guest.spec)["admin_pass"] == password


async def test_a_given_admin_pass_is_kept(stack: Any) -> None:
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(adminPass="s3cret-Pass"),
                                as_user="demo", headers=V)
    assert resp.json()["server"]["adminPass"] == "s3cret-Pass"


async def test_rebuild_and_rescue_return_an_admin_pass(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    image = (await stack.api.get("/image/v2/images?name=canopy-tiny")).json()["images"][0]["id"]
    resp = await stack.api.post(f"/compute/v2.1/servers/{sid}/action", json={"rebuild": {"imageRef": image}},
                                as_user="demo", headers=V)
    assert resp.status_code == 202, resp.text
    assert len(resp.json()["server"]["adminPass"]) == 12
    await wait_for_server(stack.api, sid, {"ACTIVE"})
    resp = await stack.api.post(f"/compute/v2.1/servers/{sid}/action", json={"rescue": None},
                                as_user="demo", headers=V)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["adminPass"]) == 12


async def test_instance_password_can_be_turned_off(stack: Any) -> None:
    stack.cloud.settings.compute.enable_instance_password = False
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(), as_user="demo", headers=V)
    assert resp.status_code == 202
    assert "adminPass" not in resp.json()["server"]


async def test_server_password_reads_empty_and_clears(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    url = f"/compute/v2.1/servers/{sid}/os-server-password"
    await add_alt_user(stack)
    assert (await stack.api.get(url, as_user="demo")).json() == {"password": ""}
    assert (await stack.api.delete(url, as_user="demo")).status_code == 204
    assert (await stack.api.get(url, as_user="alt")).status_code == 404


async def test_access_ips_are_stored_shown_and_updated(stack: Any) -> None:
    resp = await stack.api.post("/compute/v2.1/servers", as_user="demo", headers=V,
                                json=server_body(accessIPv4="1.1.1.1", accessIPv6="2001:db8::1"))
    sid = resp.json()["server"]["id"]
    shown = (await stack.api.get(f"/compute/v2.1/servers/{sid}", as_user="demo", headers=V)).json()["server"]
    assert (shown["accessIPv4"], shown["accessIPv6"]) == ("1.1.1.1", "2001:db8::1")
    resp = await stack.api.put(f"/compute/v2.1/servers/{sid}", as_user="demo", headers=V,
                               json={"server": {"accessIPv4": "192.0.2.7"}})
    assert resp.status_code == 200 and resp.json()["server"]["accessIPv4"] == "192.0.2.7"
    resp = await stack.api.put(f"/compute/v2.1/servers/{sid}", as_user="demo", headers=V,
                               json={"server": {"accessIPv6": "192.0.2.7"}})
    assert resp.status_code == 400 and "accessIPv6" in resp.json()["badRequest"]["message"]


@pytest.mark.parametrize("field,value", [("accessIPv4", "300.1.1.1"), ("accessIPv4", "2001:db8::1"),
                                         ("accessIPv6", "1.1.1.1"), ("accessIPv6", "nope")])
async def test_bad_access_ip_is_400(stack: Any, field: str, value: str) -> None:
    resp = await stack.api.post("/compute/v2.1/servers", as_user="demo", headers=V,
                                json=server_body(**{field: value}))
    assert resp.status_code == 400
    assert field in resp.json()["badRequest"]["message"]


async def _action(stack: Any, sid: str, body: Any, user: str = "demo", headers: Any = V) -> Any:
    return await stack.api.post(f"/compute/v2.1/servers/{sid}/action", json=body, as_user=user, headers=headers)


async def test_a_locked_server_refuses_its_owner_until_unlocked(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    assert (await _action(stack, sid, {"lock": {"locked_reason": "billing"}})).status_code == 202
    shown = (await stack.api.get(f"/compute/v2.1/servers/{sid}", as_user="demo", headers=V)).json()["server"]
    assert shown["locked"] is True and shown["locked_reason"] == "billing"
    resp = await _action(stack, sid, {"os-stop": None})
    assert resp.status_code == 409 and resp.json()["conflictingRequest"]["message"] == f"Instance {sid} is locked"
    assert (await stack.api.delete(f"/compute/v2.1/servers/{sid}", as_user="demo")).status_code == 409
    assert (await stack.api.put(f"/compute/v2.1/servers/{sid}/metadata/k", as_user="demo",
                                json={"meta": {"k": "v"}})).status_code == 409
    assert (await _action(stack, sid, {"unlock": None})).status_code == 202
    assert (await _action(stack, sid, {"os-stop": None})).status_code == 202


async def test_an_admin_lock_binds_the_owner_and_the_admin_overrides(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    assert (await _action(stack, sid, {"lock": None}, user="admin")).status_code == 202
    resp = await _action(stack, sid, {"unlock": None})
    assert resp.status_code == 403 and "unlock_override" in resp.json()["forbidden"]["message"]
    assert (await _action(stack, sid, {"os-stop": None}, user="admin")).status_code == 202  # admin override
    assert (await _action(stack, sid, {"unlock": None}, user="admin")).status_code == 202
    shown = (await stack.api.get(f"/compute/v2.1/servers/{sid}", headers=V)).json()["server"]
    assert shown["locked"] is False and shown["locked_reason"] is None


async def test_locked_reason_needs_2_73(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    resp = await _action(stack, sid, {"lock": {"locked_reason": "x"}}, headers=V72)
    assert resp.status_code == 400 and "locked_reason" in resp.json()["badRequest"]["message"]
    assert (await _action(stack, sid, {"lock": {"locked_reason": "x" * 256}})).status_code == 400


async def test_server_tags(stack: Any) -> None:
    resp = await stack.api.post("/compute/v2.1/servers", as_user="demo", headers=V,
                                json=server_body(tags=["web", "prod"]))
    assert resp.status_code == 202, resp.text
    sid = resp.json()["server"]["id"]
    url = f"/compute/v2.1/servers/{sid}/tags"
    assert (await stack.api.get(url, as_user="demo", headers=V)).json() == {"tags": ["web", "prod"]}
    assert (await stack.api.put(f"{url}/db", as_user="demo", headers=V)).status_code == 201
    assert (await stack.api.put(f"{url}/db", as_user="demo", headers=V)).status_code == 204
    assert (await stack.api.get(f"{url}/db", as_user="demo", headers=V)).status_code == 204
    missing = await stack.api.get(f"{url}/nope", as_user="demo", headers=V)
    assert missing.status_code == 404 and "nope" in missing.json()["itemNotFound"]["message"]
    shown = (await stack.api.get(f"/compute/v2.1/servers/{sid}", as_user="demo", headers=V)).json()["server"]
    assert shown["tags"] == ["web", "prod", "db"]
    assert (await stack.api.delete(f"{url}/web", as_user="demo", headers=V)).status_code == 204
    resp = await stack.api.put(url, as_user="demo", headers=V, json={"tags": ["a", "b"]})
    assert resp.status_code == 200 and resp.json() == {"tags": ["a", "b"]}
    assert (await stack.api.delete(url, as_user="demo", headers=V)).status_code == 204
    assert (await stack.api.get(url, as_user="demo", headers=V)).json() == {"tags": []}
    assert (await stack.api.get(url, as_user="demo", headers=V25)).status_code == 404
    await add_alt_user(stack)
    assert (await stack.api.get(url, as_user="alt", headers=V)).status_code == 404


@pytest.mark.parametrize("tags,needle", [([f"t{i}" for i in range(51)], "limit 50"), (["x" * 61], "tags"),
                                         (["a/b"], "tags"), (["a,b"], "tags"), ("web", "array")])
async def test_bad_tags_are_400(stack: Any, tags: Any, needle: str) -> None:
    sid, _ = await boot_active(stack)
    resp = await stack.api.put(f"/compute/v2.1/servers/{sid}/tags", as_user="demo", headers=V, json={"tags": tags})
    assert resp.status_code == 400 and needle in resp.json()["badRequest"]["message"]
