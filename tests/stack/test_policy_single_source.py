"""Issue 14 deliverable 3: the policy table is the one source of truth for who may call a route. An
operator's override that lets readers call admin routes takes effect (the handlers' own admin checks,
which refused regardless, are gone; they fail this test on the previous commit), while the handlers still
narrow what a caller sees. A refusal is worded as each service words it."""

from __future__ import annotations

import pytest

from canopy.auth.policy import Policy
from canopy.auth.policy_defaults import DEFAULTS
from tests.clouds import ApiClient

OPENED = {
    "compute:hypervisors": "/compute/v2.1/os-hypervisors",
    "compute:aggregates": "/compute/v2.1/os-aggregates",
    "compute:services": "/compute/v2.1/os-services",
    "compute:availability-zones:detail": "/compute/v2.1/os-availability-zone/detail",
    "compute:usage:index": "/compute/v2.1/os-simple-tenant-usage",
    "compute:migrations:index": "/compute/v2.1/os-migrations",
    "network.segments.list": "/network/v2.0/segments",
    "network.quotas.list": "/network/v2.0/quotas",
    "identity:list_users": "/identity/v3/users",
    "identity:list_roles": "/identity/v3/roles",
}


@pytest.mark.parametrize("rule", sorted(OPENED))
async def test_an_override_opening_an_admin_route_to_readers_takes_effect(api: ApiClient, rule: str) -> None:
    path = OPENED[rule]
    assert (await api.get(path, as_user="demo")).status_code == 403
    api.app.state.policy = Policy({**DEFAULTS, rule: "rule:project_reader"})
    resp = await api.get(path, as_user="demo")
    assert resp.status_code == 200, resp.text


async def test_an_override_closing_a_route_to_admins_takes_effect(api: ApiClient) -> None:
    assert (await api.get("/compute/v2.1/os-hypervisors")).status_code == 200
    api.app.state.policy = Policy({**DEFAULTS, "compute:hypervisors": "role:nobody"})
    assert (await api.get("/compute/v2.1/os-hypervisors")).status_code == 403


async def test_refusals_are_worded_per_service(api: ApiClient) -> None:
    resp = await api.post("/network/v2.0/qos/policies", as_user="demo", json={"policy": {"name": "q"}})
    assert resp.status_code == 403
    assert resp.json()["NeutronError"]["type"] == "PolicyNotAuthorized"
    assert "is disallowed by policy" in resp.json()["NeutronError"]["message"]
    resp = await api.get("/compute/v2.1/os-hypervisors", as_user="demo")
    assert "Policy doesn't allow compute:hypervisors" in resp.json()["forbidden"]["message"]
    resp = await api.get("/identity/v3/users", as_user="demo")
    assert "not authorized to perform the requested action" in resp.json()["error"]["message"]
