"""End to end, issue 16 item 7: the identity calls operators type, with the `openstack` CLI and openstacksdk
against a real `canopy all-in-one` (catalog, groups, domains, system role assignments, project tags).
Each of these commands failed on main with a 404."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.running import RunningCloud
from tests.e2e.test_openstack_clients import _cli, connect

pytestmark = pytest.mark.e2e


def test_cli_lists_the_catalog(running_cloud: RunningCloud) -> None:
    endpoints = _cli(running_cloud, "canopy", "endpoint", "list", "-f", "json")
    compute = [e for e in endpoints if e["Service Type"] == "compute"]
    assert {e["Interface"] for e in compute} == {"public", "internal", "admin"}
    assert all(e["URL"].startswith(running_cloud.url) and e["Region"] == "RegionOne" for e in compute)
    services = _cli(running_cloud, "canopy", "service", "list", "-f", "json")
    assert {"identity", "compute", "network", "image"} <= {s["Type"] for s in services}
    regions = _cli(running_cloud, "canopy", "region", "list", "-f", "json")
    assert "RegionOne" in {r["Region"] for r in regions}


def test_sdk_list_endpoints(running_cloud: RunningCloud) -> None:
    conn = connect(running_cloud, "admin")
    try:
        endpoints = conn.list_endpoints()
        assert len(endpoints) >= 12
        assert {e.interface for e in endpoints} == {"public", "internal", "admin"}
        assert any(s.type == "network" for s in conn.list_services())
    finally:
        conn.close()


def test_cli_groups(running_cloud: RunningCloud) -> None:
    made = _cli(running_cloud, "canopy", "group", "create", "--description", "operators", "-f", "json", "e2e-ops")
    assert made["name"] == "e2e-ops"
    _cli(running_cloud, "canopy", "group", "add", "user", "e2e-ops", "demo")
    assert "demo in group e2e-ops" in _cli(running_cloud, "canopy", "group", "contains", "user", "e2e-ops", "demo")
    groups = _cli(running_cloud, "canopy", "group", "list", "-f", "json")
    assert "e2e-ops" in {g["Name"] for g in groups}
    members = _cli(running_cloud, "canopy", "user", "list", "--group", "e2e-ops", "-f", "json")
    assert [u["Name"] for u in members] == ["demo"]
    _cli(running_cloud, "canopy", "group", "remove", "user", "e2e-ops", "demo")
    _cli(running_cloud, "canopy", "group", "delete", "e2e-ops")


def test_cli_domain_lifecycle(running_cloud: RunningCloud) -> None:
    made = _cli(running_cloud, "canopy", "domain", "create", "--description", "a reseller", "-f", "json", "resell1")
    assert made["enabled"] is True
    _cli(running_cloud, "canopy", "project", "create", "--domain", "resell1", "-f", "json", "cust1")
    _cli(running_cloud, "canopy", "domain", "set", "--disable", "resell1")
    shown: dict[str, Any] = _cli(running_cloud, "canopy", "domain", "show", "-f", "json", "resell1")
    assert shown["enabled"] is False
    _cli(running_cloud, "canopy", "domain", "delete", "resell1")
    names = {d["Name"] for d in _cli(running_cloud, "canopy", "domain", "list", "-f", "json")}
    assert "resell1" not in names and "Default" in names


def test_cli_system_role_assignments(running_cloud: RunningCloud) -> None:
    _cli(running_cloud, "canopy", "role", "add", "--system", "all", "--user", "demo", "reader")
    found = _cli(running_cloud, "canopy", "role", "assignment", "list", "--system", "all", "--names", "-f", "json")
    assert any(a["User"].startswith("demo") and a["Role"] == "reader" and a["System"] == "all" for a in found)
    _cli(running_cloud, "canopy", "role", "remove", "--system", "all", "--user", "demo", "reader")


def test_cli_project_tags(running_cloud: RunningCloud) -> None:
    _cli(running_cloud, "canopy", "project", "set", "--tag", "gold", "--tag", "eu", "demo")
    shown = _cli(running_cloud, "canopy", "project", "show", "-f", "json", "demo")
    assert sorted(shown["tags"]) == ["eu", "gold"]
    tagged = _cli(running_cloud, "canopy", "project", "list", "--tags", "gold", "-f", "json")
    assert [p["Name"] for p in tagged] == ["demo"]
    _cli(running_cloud, "canopy", "project", "set", "--clear-tags", "demo")
    assert _cli(running_cloud, "canopy", "project", "show", "-f", "json", "demo")["tags"] == []
