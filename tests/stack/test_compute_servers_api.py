"""The servers API: validation that writes nothing, microversions, listing, metadata, actions, isolation."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.seed import PUBLIC_NETWORK_ID, TINY_IMAGE_ID
from tests.clouds import V, server_body, wait_for_server


async def _counts(stack: Any) -> tuple[int, int, int, int]:
    def read(conn: Any) -> tuple[int, int, int, int]:
        n = conn.execute(select(func.count()).select_from(c.instances)).scalar()
        t = conn.execute(select(func.count()).select_from(c.tasks)).scalar()
        m = conn.execute(select(func.count()).select_from(g.instance_mappings)).scalar()
        used = conn.execute(select(func.coalesce(func.sum(g.quota_usage.c.instances_used), 0))).scalar()
        return n, t, m, used

    return await stack.cloud.dbs.global_db.read_fresh(read)


BAD_BODIES = [
    ("malformed JSON", b"{not json", "Malformed request body"),
    ("not an object", b"[]", "JSON object"),
    ("no server", b'{"serverx": {}}', "server"),
    ("unknown field", {"server": {**server_body()["server"], "colour": "red"}}, "colour"),
    ("missing flavorRef", {"server": {"name": "a", "imageRef": TINY_IMAGE_ID, "networks": "auto"}}, "flavorRef"),
    ("wrong type", {"server": {**server_body()["server"], "min_count": "two"}}, "min_count"),
    ("bad image uuid", {"server": {**server_body()["server"], "imageRef": "not-a-uuid"}}, "imageRef"),
    ("unknown image", {"server": {**server_body()["server"], "imageRef": "00000000-0000-0000-0000-000000000000"}},
     "could not be found"),
    ("bad network uuid", {"server": {**server_body()["server"], "networks": [{"uuid": "nope"}]}}, "nope"),
    ("unknown network", {"server": {**server_body()["server"],
                                    "networks": [{"uuid": "00000000-0000-0000-0000-00000000000a"}]}}, "Network"),
    ("unknown flavor", {"server": {**server_body()["server"], "flavorRef": "999"}}, "Flavor 999"),
    ("bad fixed ip", {"server": {**server_body()["server"],
                                 "networks": [{"uuid": PUBLIC_NETWORK_ID, "fixed_ip": "300.1.1.1"}]}}, "fixed_ip"),
    ("name with spaces around", {"server": {**server_body()["server"], "name": " x "}}, "name"),
    ("unknown key", {"server": {**server_body()["server"], "key_name": "missing"}}, "key_name"),
    ("user_data not base64", {"server": {**server_body()["server"], "user_data": "%%%"}}, "user_data"),
    ("networks required at 2.37+", {"server": {"name": "a", "flavorRef": "1", "imageRef": TINY_IMAGE_ID}},
     "networks"),
]


@pytest.mark.parametrize("label,body,needle", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_create_is_400_naming_the_cause_and_writes_nothing(stack: Any, label: str, body: Any,
                                                                     needle: str) -> None:
    before = await _counts(stack)
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    resp = await stack.api.post("/compute/v2.1/servers", headers={**V, "Content-Type": "application/json"},
                                as_user="demo", **kwargs)
    assert resp.status_code == 400, resp.text
    assert needle in resp.json()["badRequest"]["message"]
    assert await _counts(stack) == before


async def test_quota_exceeded_is_403_and_writes_nothing(stack: Any) -> None:
    admin_project = (await stack.api.get("/identity/v3/projects?name=demo")).json()["projects"][0]["id"]
    assert (await stack.api.put(f"/compute/v2.1/os-quota-sets/{admin_project}",
                                json={"quota_set": {"cores": 1}})).status_code == 200
    before = await _counts(stack)
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(flavorRef="3"), as_user="demo", headers=V)
    assert resp.status_code == 403
    assert "cores" in resp.json()["forbidden"]["message"]
    assert await _counts(stack) == before


async def test_microversion_above_maximum_is_406_and_bad_format_400(stack: Any) -> None:
    resp = await stack.api.get("/compute/v2.1/servers", headers={"OpenStack-API-Version": "compute 2.200"})
    assert resp.status_code == 406
    resp = await stack.api.get("/compute/v2.1/servers", headers={"OpenStack-API-Version": "compute two"})
    assert resp.status_code == 400
    resp = await stack.api.get("/compute/v2.1/servers", headers={"OpenStack-API-Version": "compute latest"})
    assert resp.headers["openstack-api-version"] == "compute 2.87"
    doc = (await stack.api.http.get("/compute/v2.1")).json()["version"]
    assert (doc["min_version"], doc["version"]) == ("2.1", "2.87")


async def test_list_pagination_filters_and_changes_since(stack: Any) -> None:
    api = stack.api
    ids = []
    for n in range(5):
        ids.append((await api.post("/compute/v2.1/servers", json=server_body(name=f"page-{n}"), headers=V)
                    ).json()["server"]["id"])
    for sid in ids:
        await wait_for_server(api, sid, {"ACTIVE"})
    page1 = (await api.get("/compute/v2.1/servers?limit=2")).json()
    assert [s["id"] for s in page1["servers"]] == ids[::-1][:2]
    assert "marker=" in page1["servers_links"][0]["href"]
    page2 = (await api.get(f"/compute/v2.1/servers?limit=2&marker={ids[3]}")).json()
    assert [s["id"] for s in page2["servers"]] == [ids[2], ids[1]]
    assert (await api.get("/compute/v2.1/servers?marker=nope")).status_code == 400
    named = (await api.get("/compute/v2.1/servers/detail?name=page-3")).json()["servers"]
    assert [s["id"] for s in named] == [ids[3]]
    assert (await api.get("/compute/v2.1/servers/detail?status=SHUTOFF")).json()["servers"] == []
    await api.delete(f"/compute/v2.1/servers/{ids[0]}")
    await wait_for_server(api, ids[0], {"DELETED"})
    changed = (await api.get("/compute/v2.1/servers/detail?changes-since=2000-01-01T00:00:00Z")).json()["servers"]
    assert {s["id"]: s["status"] for s in changed}[ids[0]] == "DELETED"
    hosts = (await api.get("/compute/v2.1/servers/detail?host=hv-0001")).json()["servers"]
    assert all(s["OS-EXT-SRV-ATTR:host"] == "hv-0001" for s in hosts)


async def test_rename_and_metadata(stack: Any) -> None:
    api = stack.api
    sid = (await api.post("/compute/v2.1/servers", json=server_body(metadata={"a": "1"}), as_user="demo",
                          headers=V)).json()["server"]["id"]
    resp = await api.put(f"/compute/v2.1/servers/{sid}", json={"server": {"name": "renamed"}}, as_user="demo")
    assert resp.status_code == 200 and resp.json()["server"]["name"] == "renamed"
    assert (await api.put(f"/compute/v2.1/servers/{sid}", json={"server": {"name": ""}}, as_user="demo")
            ).status_code == 400
    resp = await api.post(f"/compute/v2.1/servers/{sid}/metadata", json={"metadata": {"b": "2"}}, as_user="demo")
    assert resp.json()["metadata"] == {"a": "1", "b": "2"}
    resp = await api.put(f"/compute/v2.1/servers/{sid}/metadata/c", json={"meta": {"c": "3"}}, as_user="demo")
    assert resp.status_code == 200
    assert (await api.delete(f"/compute/v2.1/servers/{sid}/metadata/a", as_user="demo")).status_code == 204
    assert (await api.get(f"/compute/v2.1/servers/{sid}/metadata", as_user="demo")).json()["metadata"] == {
        "b": "2", "c": "3"}
    assert (await api.get(f"/compute/v2.1/servers/{sid}/metadata/a", as_user="demo")).status_code == 404


async def test_another_projects_server_is_404_and_admin_calls_403(stack: Any) -> None:
    api = stack.api
    sid = (await api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    for method, path, body in (("GET", f"/compute/v2.1/servers/{sid}", None),
                               ("DELETE", f"/compute/v2.1/servers/{sid}", None),
                               ("POST", f"/compute/v2.1/servers/{sid}/action", {"os-stop": None}),
                               ("PUT", f"/compute/v2.1/servers/{sid}", {"server": {"name": "x"}}),
                               ("GET", f"/compute/v2.1/servers/{sid}/os-instance-actions", None)):
        resp = await api.request(method, path, as_user="demo", json=body)
        assert resp.status_code == 404, (method, path, resp.text)
        assert "could not be found" in resp.json()["itemNotFound"]["message"]
    assert sid not in {s["id"] for s in (await api.get("/compute/v2.1/servers", as_user="demo")).json()["servers"]}
    for path in ("/compute/v2.1/os-services", "/compute/v2.1/os-hypervisors"):
        assert (await api.get(path, as_user="demo")).status_code == 403
    resp = await api.post(f"/compute/v2.1/servers/{sid}/action", json={"os-resetState": {"state": "error"}},
                          as_user="demo")
    assert resp.status_code == 403  # the admin-only policy is checked before the lookup, as in Nova


async def test_action_validation(stack: Any) -> None:
    api = stack.api
    sid = (await api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    await wait_for_server(api, sid, {"ACTIVE"})
    cases = [({"reboot": {"type": "SIDEWAYS"}}, "SIDEWAYS"), ({"fly": None}, "no such action"),
             ({"os-stop": None, "os-start": None}, "one action"), ({"canopy-stopSoft": {"timeout": -1}}, "timeout"),
             ({"os-resetState": {"state": "paused"}}, "state")]
    for body, needle in cases:
        resp = await api.post(f"/compute/v2.1/servers/{sid}/action", json=body)
        assert resp.status_code == 400 and needle in resp.text, (body, resp.text)
    server = (await api.get(f"/compute/v2.1/servers/{sid}")).json()["server"]
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:task_state"] is None


async def test_stop_falls_back_to_hard_power_off_when_the_guest_ignores_acpi(stack: Any) -> None:
    api = stack.api
    sid = (await api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ACTIVE"})
    stack.drivers[server["OS-EXT-SRV-ATTR:host"]].ignore_acpi.add(sid)
    await api.post(f"/compute/v2.1/servers/{sid}/action", json={"os-stop": None})
    await wait_for_server(api, sid, {"SHUTOFF"})
    actions = (await api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions")).json()["instanceActions"]
    stop = (await api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{actions[0]['request_id']}")
            ).json()["instanceAction"]
    assert stop["action"] == "stop"
    assert [(e["event"], e["result"]) for e in stop["events"]] == [
        ("compute_clean_shutdown", "Timeout"), ("compute_hard_power_off", "Success")]


async def test_stop_soft_leaves_a_guest_that_ignores_acpi_running_with_a_fault(stack: Any) -> None:
    api = stack.api
    sid = (await api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ACTIVE"})
    stack.drivers[server["OS-EXT-SRV-ATTR:host"]].ignore_acpi.add(sid)
    await api.post(f"/compute/v2.1/servers/{sid}/action", json={"canopy-stopSoft": {"timeout": 0.2}})
    for _ in range(200):
        server = (await api.get(f"/compute/v2.1/servers/{sid}")).json()["server"]
        if server["OS-EXT-STS:task_state"] is None:
            break
        assert server["OS-EXT-STS:task_state"] == "powering-off-soft"
        await __import__("asyncio").sleep(0.02)
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:power_state"] == 1
    assert "ignored the shutdown request" in server["fault"]["message"]
    await api.post(f"/compute/v2.1/servers/{sid}/action", json={"canopy-stopHard": None})
    server = await wait_for_server(api, sid, {"SHUTOFF"})
    assert "fault" not in server
