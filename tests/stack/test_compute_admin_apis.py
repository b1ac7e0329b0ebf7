"""Compute admin APIs: os-services, os-hypervisors, availability zones, limits and quota sets. No agents
run under the `api` fixture, so the tests write host and service rows into the cell tables themselves."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import insert, select

from canopy.api.compute import quota_store
from canopy.clock import FakeClock
from canopy.db import tables_cell as c
from canopy.runtime import Cloud
from tests.clouds import ApiClient, project_id

NOW = dt.datetime(2026, 3, 1, 12, 0, 0)
SERVICES = "/compute/v2.1/os-services"
HYPERVISORS = "/compute/v2.1/os-hypervisors"


def mv(version: str) -> dict[str, str]:
    return {"OpenStack-API-Version": f"compute {version}"}


def add_host(cloud: Cloud, name: str, *, zone: str = "nova", seen_s_ago: float | None = 5.0,
             binary: str = "canopy-agent") -> dict[str, Any]:
    """A host row (for agents) and its service row, last heard from `seen_s_ago` seconds before NOW."""
    seen = NOW - dt.timedelta(seconds=seen_s_ago) if seen_s_ago is not None else None
    ids = {"host_uuid": str(uuid.uuid4()), "service_uuid": str(uuid.uuid4())}
    with cloud.dbs.cell(cloud.cell_name).writer() as conn:
        if binary == "canopy-agent":
            conn.execute(insert(c.hosts).values(
                name=name, uuid=ids["host_uuid"], host_ip="192.0.2.10", vcpus=16, memory_mb=32768, local_gb=500,
                vcpus_used=2, memory_mb_used=4096, local_gb_used=20, running_vms=1, reserved_memory_mb=512,
                availability_zone=zone, created_at=NOW - dt.timedelta(days=3), updated_at=NOW))
        conn.execute(insert(c.services).values(
            uuid=ids["service_uuid"], binary=binary, host=name, version="1", last_seen_at=seen,
            created_at=NOW, updated_at=NOW))
    return ids


def host_row(cloud: Cloud, name: str) -> dict[str, Any]:
    with cloud.dbs.cell(cloud.cell_name).reader() as conn:
        return dict(conn.execute(select(c.hosts).where(c.hosts.c.name == name)).mappings().one())


def frozen(cloud: Cloud) -> FakeClock:
    clock = FakeClock(NOW)
    cloud.clock = clock
    return clock


async def test_services_list_reports_zone_state_and_versioned_ids(api: ApiClient, cloud: Cloud) -> None:
    frozen(cloud)
    up = add_host(cloud, "cmp-1", zone="az-east")
    add_host(cloud, "cmp-2", seen_s_ago=600)
    add_host(cloud, "ctl-1", binary="canopy-conductor")

    old = (await api.get(SERVICES)).json()["services"]
    by_host = {s["host"]: s for s in old}
    assert by_host["cmp-1"]["state"] == "up" and by_host["cmp-1"]["zone"] == "az-east"
    assert by_host["cmp-2"]["state"] == "down" and by_host["cmp-2"]["zone"] == "nova"
    assert by_host["ctl-1"]["zone"] == "internal" and by_host["ctl-1"]["binary"] == "canopy-conductor"
    assert isinstance(by_host["cmp-1"]["id"], int) and "forced_down" not in by_host["cmp-1"]
    assert by_host["cmp-1"]["status"] == "enabled" and by_host["cmp-1"]["updated_at"] == "2026-03-01T11:59:55Z"

    new = (await api.get(SERVICES, params={"host": "cmp-1"}, headers=mv("2.53"))).json()["services"]
    assert len(new) == 1 and new[0]["id"] == up["service_uuid"] and new[0]["forced_down"] is False
    only_agents = (await api.get(SERVICES, params={"binary": "canopy-agent"})).json()["services"]
    assert {s["host"] for s in only_agents} == {"cmp-1", "cmp-2"}

    denied = await api.get(SERVICES, as_user="demo")
    assert denied.status_code == 403 and "forbidden" in denied.json()


async def test_disabling_a_service_disables_its_host_for_the_scheduler(api: ApiClient, cloud: Cloud) -> None:
    clock = frozen(cloud)
    ids = add_host(cloud, "cmp-1")
    clock.advance(30)
    url = f"{SERVICES}/{ids['service_uuid']}"
    resp = await api.put(url, json={"status": "disabled", "disabled_reason": "maintenance"}, headers=mv("2.53"))
    assert resp.status_code == 200, resp.text
    svc = resp.json()["service"]
    assert svc["status"] == "disabled" and svc["disabled_reason"] == "maintenance" and svc["state"] == "up"
    host = host_row(cloud, "cmp-1")
    assert host["enabled"] is False and host["disabled_reason"] == "maintenance"
    assert host["updated_at"] == NOW + dt.timedelta(seconds=30)

    bad = await api.put(url, json={"status": "enabled", "disabled_reason": "x"}, headers=mv("2.53"))
    assert bad.status_code == 400
    assert (await api.put(url, json={}, headers=mv("2.53"))).status_code == 400
    assert (await api.put(f"{SERVICES}/not-a-uuid", json={"status": "enabled"}, headers=mv("2.53"))).status_code == 400

    forced = await api.put(url, json={"status": "enabled", "forced_down": True}, headers=mv("2.53"))
    assert forced.json()["service"]["state"] == "down" and forced.json()["service"]["forced_down"] is True
    assert host_row(cloud, "cmp-1")["enabled"] is True
    assert (await api.put(url, json={"status": "disabled"}, as_user="demo", headers=mv("2.53"))).status_code == 403


async def test_pre_253_service_actions(api: ApiClient, cloud: Cloud) -> None:
    frozen(cloud)
    add_host(cloud, "cmp-1")
    add_host(cloud, "ctl-1", binary="canopy-conductor")
    body = {"host": "cmp-1", "binary": "canopy-agent", "disabled_reason": "disk swap"}
    resp = await api.put(f"{SERVICES}/disable-log-reason", json=body)
    assert resp.status_code == 200
    assert resp.json() == {"service": {**body, "status": "disabled"}}
    assert host_row(cloud, "cmp-1")["enabled"] is False
    resp = await api.put(f"{SERVICES}/enable", json={"host": "cmp-1", "binary": "canopy-agent"})
    assert resp.json()["service"]["status"] == "enabled"
    assert host_row(cloud, "cmp-1")["enabled"] is True and host_row(cloud, "cmp-1")["disabled_reason"] is None

    assert (await api.put(f"{SERVICES}/force-down", json={"host": "cmp-1", "binary": "canopy-agent",
                                                          "forced_down": True})).status_code == 404
    resp = await api.put(f"{SERVICES}/force-down", json={"host": "cmp-1", "binary": "canopy-agent",
                                                         "forced_down": True}, headers=mv("2.11"))
    assert resp.json() == {"service": {"host": "cmp-1", "binary": "canopy-agent", "forced_down": True}}
    missing = await api.put(f"{SERVICES}/disable", json={"host": "nowhere", "binary": "canopy-agent"})
    assert missing.status_code == 404
    assert (await api.put(f"{SERVICES}/disable", json={"host": "ctl-1", "binary": "canopy-conductor"})
            ).status_code == 400


async def test_deleting_an_agent_service_removes_its_idle_host(api: ApiClient, cloud: Cloud) -> None:
    frozen(cloud)
    ids = add_host(cloud, "cmp-1")
    services = (await api.get(SERVICES)).json()["services"]
    assert (await api.delete(f"{SERVICES}/{services[0]['id']}")).status_code == 204
    assert (await api.get(SERVICES)).json()["services"] == []
    assert (await api.get(HYPERVISORS)).json()["hypervisors"] == []
    assert (await api.delete(f"{SERVICES}/{ids['service_uuid']}", headers=mv("2.53"))).status_code == 404
    assert (await api.delete(f"{SERVICES}/abc")).status_code == 400


async def test_hypervisors_list_detail_show_and_statistics(api: ApiClient, cloud: Cloud) -> None:
    frozen(cloud)
    one = add_host(cloud, "cmp-1")
    add_host(cloud, "cmp-2", seen_s_ago=None)

    brief = (await api.get(HYPERVISORS)).json()["hypervisors"]
    assert [set(h) for h in brief] == [{"id", "hypervisor_hostname", "state", "status"}] * 2
    assert [(h["hypervisor_hostname"], h["state"], h["status"]) for h in brief] == [
        ("cmp-1", "up", "enabled"), ("cmp-2", "down", "enabled")]

    detail = (await api.get(f"{HYPERVISORS}/detail")).json()["hypervisors"][0]
    assert detail["memory_mb_used"] == 4096 + 512 and detail["free_ram_mb"] == 32768 - 4608
    assert detail["vcpus"] == 16 and detail["running_vms"] == 1 and detail["host_ip"] == "192.0.2.10"
    assert detail["service"]["host"] == "cmp-1" and isinstance(detail["service"]["id"], int)
    assert isinstance(detail["cpu_info"], str) and json.loads(detail["cpu_info"])["arch"] == "x86_64"

    new = (await api.get(f"{HYPERVISORS}/{one['host_uuid']}", headers=mv("2.53"))).json()["hypervisor"]
    assert new["id"] == one["host_uuid"] and new["service"]["id"] == one["service_uuid"]
    assert isinstance(new["cpu_info"], dict)
    assert (await api.get(f"{HYPERVISORS}/{detail['id']}", headers=mv("2.53"))).status_code == 400
    assert (await api.get(f"{HYPERVISORS}/999")).status_code == 404

    page = (await api.get(HYPERVISORS, params={"limit": "1"}, headers=mv("2.33"))).json()
    assert len(page["hypervisors"]) == 1 and "hypervisors_links" in page
    stats = (await api.get(f"{HYPERVISORS}/statistics")).json()["hypervisor_statistics"]
    assert stats["count"] == 2 and stats["vcpus"] == 32 and stats["running_vms"] == 2
    assert (await api.get(HYPERVISORS, as_user="demo")).status_code == 403


async def test_hypervisor_search_and_servers(api: ApiClient, cloud: Cloud) -> None:
    frozen(cloud)
    add_host(cloud, "rack1-cmp")
    add_host(cloud, "rack2-cmp")
    with cloud.dbs.cell(cloud.cell_name).writer() as conn:
        conn.execute(insert(c.instances).values(
            uuid=str(uuid.uuid4()), project_id="p", user_id="u", name="vm1", flavor_id="1", flavor={},
            host="rack1-cmp", vm_state="active", created_at=NOW, updated_at=NOW))
    found = await api.get(HYPERVISORS, params={"hypervisor_hostname_pattern": "rack1", "with_servers": "true"},
                          headers=mv("2.53"))
    hyps = found.json()["hypervisors"]
    assert [h["hypervisor_hostname"] for h in hyps] == ["rack1-cmp"] and hyps[0]["servers"][0]["name"] == "vm1"
    none = await api.get(HYPERVISORS, params={"hypervisor_hostname_pattern": "zzz"}, headers=mv("2.53"))
    assert none.status_code == 404
    empty = await api.get(HYPERVISORS, params={"hypervisor_hostname_pattern": "rack2", "with_servers": "1"},
                          headers=mv("2.75"))
    assert empty.json()["hypervisors"][0]["servers"] == []
    old = (await api.get(f"{HYPERVISORS}/rack1/servers")).json()["hypervisors"]
    assert old[0]["servers"][0]["name"] == "vm1"
    assert (await api.get(f"{HYPERVISORS}/rack/search")).json()["hypervisors"][1]["hypervisor_hostname"] == "rack2-cmp"


async def test_availability_zones(api: ApiClient, cloud: Cloud) -> None:
    frozen(cloud)
    assert (await api.get("/compute/v2.1/os-availability-zone", as_user="demo")).json() == {
        "availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}]}
    add_host(cloud, "cmp-1", zone="az-a")
    add_host(cloud, "cmp-2", zone="az-b")
    add_host(cloud, "ctl-1", binary="canopy-conductor")
    zones = (await api.get("/compute/v2.1/os-availability-zone", as_user="demo")).json()["availabilityZoneInfo"]
    assert [z["zoneName"] for z in zones] == ["az-a", "az-b"]
    detail = (await api.get("/compute/v2.1/os-availability-zone/detail")).json()["availabilityZoneInfo"]
    names = {z["zoneName"]: z for z in detail}
    assert names["internal"]["hosts"]["ctl-1"]["canopy-conductor"]["available"] is True
    assert names["az-a"]["hosts"]["cmp-1"]["canopy-agent"]["active"] is True
    assert (await api.get("/compute/v2.1/os-availability-zone/detail", as_user="demo")).status_code == 403


async def test_limits_follow_quota_and_microversion(api: ApiClient, cloud: Cloud) -> None:
    demo = project_id(cloud, "demo")
    resp = await api.put(f"/compute/v2.1/os-quota-sets/{demo}",
                         json={"quota_set": {"instances": 7, "cores": "30", "key_pairs": 50}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["quota_set"]["instances"] == 7 and resp.json()["quota_set"]["key_pairs"] == 100
    assert "id" not in resp.json()["quota_set"]

    old = (await api.get("/compute/v2.1/limits", as_user="demo")).json()["limits"]
    assert old["rate"] == []
    assert old["absolute"]["maxTotalInstances"] == 7 and old["absolute"]["maxTotalCores"] == 30
    assert old["absolute"]["totalInstancesUsed"] == 0 and old["absolute"]["maxTotalFloatingIps"] == 10
    assert old["absolute"]["maxPersonality"] == 5 and old["absolute"]["maxImageMeta"] == 128
    new = (await api.get("/compute/v2.1/limits", as_user="demo", headers=mv("2.57"))).json()["limits"]["absolute"]
    assert "maxTotalFloatingIps" not in new and "maxPersonality" not in new and "maxImageMeta" not in new
    assert new["maxServerMeta"] == 128 and new["maxTotalKeypairs"] == 100 and new["maxTotalInstances"] == 7

    as_admin = (await api.get("/compute/v2.1/limits", params={"tenant_id": demo})).json()
    assert as_admin["limits"]["absolute"]["maxTotalInstances"] == 7
    admin = project_id(cloud, "admin")
    assert (await api.get("/compute/v2.1/limits", params={"tenant_id": admin}, as_user="demo")).status_code == 403


async def test_quota_sets_show_detail_update_and_reset(api: ApiClient, cloud: Cloud) -> None:
    demo, admin = project_id(cloud, "demo"), project_id(cloud, "admin")
    url = f"/compute/v2.1/os-quota-sets/{demo}"
    defaults = cloud.settings.quota
    shown = (await api.get(url, as_user="demo")).json()["quota_set"]
    assert shown["id"] == demo and shown["instances"] == defaults.instances and shown["security_groups"] == 10
    assert (await api.get(f"/compute/v2.1/os-quota-sets/{admin}", as_user="demo")).status_code == 403
    assert (await api.put(url, json={"quota_set": {"instances": 3}}, as_user="demo")).status_code == 403

    with cloud.dbs.global_db.writer() as conn:
        quota_store.reserve(conn, demo, {"instances": 2, "cores": 4, "ram": 1024}, defaults)
    detail = (await api.get(f"{url}/detail", as_user="demo", headers=mv("2.57"))).json()["quota_set"]
    assert detail["instances"] == {"in_use": 2, "limit": defaults.instances, "reserved": 0}
    assert detail["ram"]["in_use"] == 1024 and "injected_files" not in detail and "floating_ips" not in detail

    too_low = await api.put(url, json={"quota_set": {"instances": 1}})
    assert too_low.status_code == 400 and "already used" in too_low.json()["badRequest"]["message"]
    assert (await api.put(url, json={"quota_set": {"instances": 1, "force": True}})).status_code == 200
    assert (await api.put(url, json={"quota_set": {"bogus": 1}})).status_code == 400
    assert (await api.put(url, json={"quota_set": {"floating_ips": 1}}, headers=mv("2.36"))).status_code == 400
    assert (await api.put(url, json={"quota_set": {"floating_ips": 1}})).status_code == 200
    assert (await api.put(url, json={"quota_set": {"cores": -2}})).status_code == 400

    assert (await api.delete(url)).status_code == 202
    assert (await api.get(url, as_user="demo")).json()["quota_set"]["instances"] == defaults.instances
    assert (await api.get(f"{url}/defaults", as_user="demo", headers=mv("2.36"))).json()["quota_set"].keys() >= {
        "id", "instances", "cores", "ram", "key_pairs"}
    assert (await api.get("/compute/v2.1/os-quota-sets/nope")).status_code == 400
