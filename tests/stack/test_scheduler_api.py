"""The APIs that feed the scheduler, through the in-process cloud: os-aggregates (zones, tenant
isolation), os-server-groups (both shapes), scheduler hints on create, multi-create with anti-affinity,
and the explain extension and command."""

from __future__ import annotations

import json
import uuid
from typing import Any

from typer.testing import CliRunner

from canopy.cli import app
from tests.clouds import V, server_body, wait_for_server

AGG = "/compute/v2.1/os-aggregates"
GROUPS = "/compute/v2.1/os-server-groups"
EXPLAIN = "/compute/v2.1/canopy-scheduler/explain"
V241 = {"OpenStack-API-Version": "compute 2.41"}


async def make_aggregate(api: Any, name: str, zone: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, **({"availability_zone": zone} if zone else {})}
    resp = await api.post(AGG, json={"aggregate": body}, headers=V241)
    assert resp.status_code == 200, resp.text
    return resp.json()["aggregate"]


async def action(api: Any, agg_id: int, body: dict[str, Any]) -> Any:
    return await api.post(f"{AGG}/{agg_id}/action", json=body, headers=V241)


async def boot(api: Any, *, as_user: str = "admin", hints: dict[str, Any] | None = None, **server: Any) -> str:
    body = server_body(**server)
    if hints is not None:
        body["os:scheduler_hints"] = hints
    resp = await api.post("/compute/v2.1/servers", json=body, headers=V, as_user=as_user)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["server"]["id"])


async def host_of(api: Any, sid: str) -> str:
    server = await wait_for_server(api, sid, {"ACTIVE", "ERROR"})
    assert server["status"] == "ACTIVE", server
    return str(server["OS-EXT-SRV-ATTR:host"])


async def test_aggregate_lifecycle_in_novas_shapes(stack: Any) -> None:
    api = stack.api
    agg = await make_aggregate(api, "rack-a", "az-a")
    assert agg["availability_zone"] == "az-a" and "hosts" not in agg and "uuid" in agg and agg["deleted"] is False
    assert (await api.post(AGG, json={"aggregate": {"name": "rack-a"}})).status_code == 409
    assert (await api.post(AGG, json={"aggregate": {"name": "x", "availability_zone": "a:b"}})).status_code == 400
    assert (await api.post(AGG, json={"aggregate": {"name": "x"}}, as_user="demo")).status_code == 403
    added = await action(api, agg["id"], {"add_host": {"host": "hv-0001"}})
    assert added.status_code == 200 and added.json()["aggregate"]["hosts"] == ["hv-0001"]
    assert (await action(api, agg["id"], {"add_host": {"host": "hv-0001"}})).status_code == 409
    assert (await action(api, agg["id"], {"add_host": {"host": "nope"}})).status_code == 404
    meta = await action(api, agg["id"], {"set_metadata": {"metadata": {"ssd": "true", "availability_zone": "az-b"}}})
    assert meta.json()["aggregate"]["metadata"] == {"ssd": "true", "availability_zone": "az-b"}
    assert meta.json()["aggregate"]["availability_zone"] == "az-b"
    zones = (await api.get("/compute/v2.1/os-availability-zone")).json()["availabilityZoneInfo"]
    assert "az-b" in {z["zoneName"] for z in zones}  # the host's row follows its aggregate's zone
    other = await make_aggregate(api, "other", "az-c")
    clash = await action(api, other["id"], {"add_host": {"host": "hv-0001"}})
    assert clash.status_code == 409 and "az-b" in clash.json()["conflictingRequest"]["message"]
    renamed = await api.put(f"{AGG}/{agg['id']}", json={"aggregate": {"name": "rack-b"}})
    assert renamed.json()["aggregate"]["name"] == "rack-b"
    assert (await api.delete(f"{AGG}/{agg['id']}")).status_code == 400  # not empty
    assert (await action(api, agg["id"], {"remove_host": {"host": "hv-0002"}})).status_code == 404
    assert (await action(api, agg["id"], {"remove_host": {"host": "hv-0001"}})).status_code == 200
    assert (await api.delete(f"{AGG}/{agg['id']}")).status_code == 200
    assert (await api.get(f"{AGG}/{agg['id']}")).status_code == 404
    names = [a["name"] for a in (await api.get(AGG)).json()["aggregates"]]
    assert names == ["other"]
    assert (await api.post(AGG, json={"aggregate": {"name": "rack-b"}})).status_code == 200  # name free again


async def test_an_aggregate_zone_and_a_tenant_reservation_steer_placement(stack: Any) -> None:
    api = stack.api
    stack.scheduler.cfg.refresh_s = 0.0  # the change feed is read at most every refresh_s (1 s by default)
    agg = await make_aggregate(api, "west", "az-west")
    await action(api, agg["id"], {"add_host": {"host": "hv-0003"}})
    assert await host_of(api, await boot(api, availability_zone="az-west")) == "hv-0003"

    demo = (await api.get("/identity/v3/projects?name=demo")).json()["projects"][0]["id"]
    reserved = await make_aggregate(api, "demo-only")
    await action(api, reserved["id"], {"add_host": {"host": "hv-0002"}})
    await action(api, reserved["id"], {"set_metadata": {"metadata": {"filter_tenant_id": demo}}})
    demo_hosts = {await host_of(api, await boot(api, as_user="demo")) for _ in range(3)}
    assert demo_hosts == {"hv-0002"}  # the demo project is pinned to its aggregate
    admin_hosts = {await host_of(api, await boot(api, availability_zone="nova")) for _ in range(4)}
    assert "hv-0002" not in admin_hosts and "hv-0003" not in admin_hosts


async def test_server_groups_in_both_shapes(stack: Any) -> None:
    api = stack.api
    old = await api.post(GROUPS, json={"server_group": {"name": "g1", "policies": ["anti-affinity"]}})
    assert old.status_code == 200
    g1 = old.json()["server_group"]
    assert g1["policies"] == ["anti-affinity"] and g1["metadata"] == {} and g1["members"] == []
    v264 = {"OpenStack-API-Version": "compute 2.64"}
    new = await api.post(GROUPS, json={"server_group": {"name": "g2", "policy": "anti-affinity",
                                                        "rules": {"max_server_per_host": 2}}}, headers=v264)
    assert new.status_code == 200, new.text
    g2 = new.json()["server_group"]
    assert g2["policy"] == "anti-affinity" and g2["rules"] == {"max_server_per_host": 2} and "policies" not in g2
    bad = [({"name": "x", "policy": "affinity", "rules": {"max_server_per_host": 2}}, v264),
           ({"name": "x", "policy": "sideways"}, v264),
           ({"name": "x", "policies": ["soft-affinity"]}, {"OpenStack-API-Version": "compute 2.14"}),
           ({"name": "x", "policies": ["affinity"]}, v264),
           ({"name": "x", "policy": "anti-affinity", "rules": {"max_server_per_host": 0}}, v264)]
    for body, headers in bad:
        resp = await api.post(GROUPS, json={"server_group": body}, headers=headers)
        assert resp.status_code == 400, (body, resp.text)
    shown = (await api.get(f"{GROUPS}/{g2['id']}", headers=v264)).json()["server_group"]
    assert shown["project_id"] and shown["user_id"]
    assert (await api.get(f"{GROUPS}/{g2['id']}", as_user="demo")).status_code == 404
    assert len((await api.get(GROUPS)).json()["server_groups"]) == 2
    assert (await api.get(GROUPS, as_user="demo")).json()["server_groups"] == []
    assert (await api.delete(f"{GROUPS}/{g2['id']}")).status_code == 204
    assert (await api.get(f"{GROUPS}/{g2['id']}")).status_code == 404
    assert (await api.delete(f"{GROUPS}/{g2['id']}")).status_code == 404


async def test_multi_create_in_an_anti_affinity_group_lands_on_distinct_hosts(stack: Any) -> None:
    api = stack.api
    group = (await api.post(GROUPS, json={"server_group": {"name": "spread", "policies": ["anti-affinity"]}})
             ).json()["server_group"]
    resp = await api.post("/compute/v2.1/servers", headers=V, json={
        **server_body(name="web", min_count=5, max_count=5), "os:scheduler_hints": {"group": group["id"]}})
    assert resp.status_code == 202, resp.text
    servers = (await api.get("/compute/v2.1/servers/detail?name=web")).json()["servers"]
    final = [await wait_for_server(api, s["id"], {"ACTIVE", "ERROR"}) for s in servers]
    active = [s for s in final if s["status"] == "ACTIVE"]
    assert len(active) == 4 and len({s["OS-EXT-SRV-ATTR:host"] for s in active}) == 4
    failed = [s for s in final if s["status"] == "ERROR"]
    assert len(failed) == 1 and "server_group: 4 ruled out" in failed[0]["fault"]["message"]
    members = (await api.get(f"{GROUPS}/{group['id']}")).json()["server_group"]["members"]
    assert sorted(members) == sorted(s["id"] for s in servers)


async def test_same_host_and_different_host_hints(stack: Any) -> None:
    api = stack.api
    first = await boot(api)
    home = await host_of(api, first)
    assert await host_of(api, await boot(api, hints={"same_host": first})) == home
    assert await host_of(api, await boot(api, hints={"different_host": [first]})) != home
    for hints in ({"same_host": "not-a-uuid"}, {"group": str(uuid.uuid4())}, {"group": 5}, []):
        body = {**server_body(), "os:scheduler_hints": hints}
        resp = await api.post("/compute/v2.1/servers", json=body, headers=V)
        assert resp.status_code == 400, (hints, resp.text)


async def test_explain_extension_names_the_filters_and_claims_nothing(stack: Any) -> None:
    api = stack.api
    resp = await api.post(EXPLAIN, json={"server": {"flavorRef": "1", "availability_zone": "nova:hv-0002"}})
    assert resp.status_code == 200, resp.text
    out = resp.json()["explanation"]
    assert out["fit"] == 1 and out["candidates"][0]["host"] == "hv-0002"
    assert out["message"] == "1 of 4 hosts fit; host: 3 not the requested host"
    big = (await api.post(EXPLAIN, json={"server": {"flavorRef": "5"}})).json()["explanation"]
    assert big["fit"] == 0 and "ram: 4 without enough free RAM" in big["message"]
    hosts = (await api.get("/compute/v2.1/os-hypervisors/detail")).json()["hypervisors"]
    assert sum(h["vcpus_used"] for h in hosts) == 0
    assert (await api.post(EXPLAIN, json={"server": {"flavorRef": "1"}}, as_user="demo")).status_code == 403
    assert (await api.post(EXPLAIN, json={"server": {}})).status_code == 400


def test_the_explain_command_reads_the_database(data_dir: Any) -> None:
    result = CliRunner().invoke(app, ["scheduler-explain", "--data-dir", str(data_dir), "--vcpus", "1", "--ram",
                                      "512", "--disk", "1", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["hosts"] == 0 and out["message"] == "0 of 0 hosts fit"
    missing = CliRunner().invoke(app, ["scheduler-explain", "--data-dir", str(data_dir), "--flavor", "nope"])
    assert missing.exit_code != 0


async def test_the_command_and_the_api_extension_explain_alike(stack: Any) -> None:
    from canopy.cli_scheduler import explain_request

    api = stack.api
    await boot(api, name="busy")
    await wait_for_server(api, (await api.get("/compute/v2.1/servers?name=busy")).json()["servers"][0]["id"],
                          {"ACTIVE"})
    via_api = (await api.post(EXPLAIN, json={"server": {"flavorRef": "4", "availability_zone": "nova"}, "top": 0})
               ).json()["explanation"]
    via_cli = await explain_request(stack.settings, {"flavor": "m1.large", "zone": "nova"}, 0)
    assert via_cli == via_api and via_api["hosts"] == 4
