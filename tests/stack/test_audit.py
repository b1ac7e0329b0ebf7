"""The audit trail: each mutating call leaves exactly one record with who, what, target, source, result
and request ID; reads leave none; admins read it over the API; the export is CADF JSON lines."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from canopy.runtime import Cloud
from tests.clouds import ApiClient, project_id


async def _records(api: ApiClient, **params: Any) -> list[dict[str, Any]]:
    resp = await api.get("/identity/v3/canopy-audit", params=params)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["audit_records"])


async def test_a_success_and_a_failure_each_leave_one_record(api: ApiClient, cloud: Cloud) -> None:
    await api.token("demo")  # logins are POSTs too: leave them out of the count below
    before = await _records(api)
    created = await api.post("/network/v2.0/networks", as_user="demo", json={"network": {"name": "audited"}})
    assert created.status_code == 201
    net_id = created.json()["network"]["id"]
    refused = await api.delete("/network/v2.0/networks/no-such-net", as_user="demo")
    assert refused.status_code == 404
    for _ in range(3):
        assert (await api.get("/network/v2.0/networks", as_user="demo")).status_code == 200
    after = await _records(api)
    new = [r for r in after if r["id"] not in {b["id"] for b in before}]
    assert len(new) == 2, new
    ok, bad = sorted(new, key=lambda r: r["method"], reverse=True)  # POST, DELETE
    demo = project_id(cloud, "demo")
    assert ok["method"] == "POST" and ok["route"] == "network.networks.create" and ok["status"] == 201
    assert ok["target_id"] == net_id  # the created id, from the answer
    assert ok["user_name"] == "demo" and ok["user_id"] and ok["project_id"] == demo
    assert ok["domain_id"] == "default" and ok["source"] and ok["at"]
    assert ok["request_id"] == created.headers["x-openstack-request-id"]
    assert bad["method"] == "DELETE" and bad["status"] == 404 and bad["target_id"] == "no-such-net"
    assert bad["request_id"] == refused.headers["x-openstack-request-id"]


async def test_filters_paging_and_admin_only(api: ApiClient, cloud: Cloud) -> None:
    for i in range(3):
        resp = await api.post("/compute/v2.1/os-keypairs", as_user="demo", json={"keypair": {"name": f"k{i}"}})
        assert resp.status_code in (200, 201), resp.text
    demo = project_id(cloud, "demo")
    mine = await _records(api, project_id=demo)
    assert sorted(r["target_id"] for r in mine if r["route"] == "compute:keypairs:create") == ["k0", "k1", "k2"]
    first = await _records(api, project_id=demo, limit=1)
    rest = await _records(api, project_id=demo, marker=first[0]["id"])
    assert [r["id"] for r in first + rest] == [r["id"] for r in mine]
    assert await _records(api, since="2999-01-01T00:00:00Z") == []
    assert (await api.get("/identity/v3/canopy-audit", params={"since": "yesterday"})).status_code == 400
    assert (await api.get("/identity/v3/canopy-audit", as_user="demo")).status_code == 403


async def test_export_is_cadf_json_lines(api: ApiClient, cloud: Cloud, monkeypatch: Any) -> None:
    from canopy.cli import app

    await api.post("/network/v2.0/networks", as_user="demo", json={"network": {"name": "x"}})
    await api.delete("/network/v2.0/networks/missing", as_user="demo")
    await api.app.state.audit.flush()
    monkeypatch.setenv("CANOPY_AUTH__TOKEN_SECRET", "test-secret")
    out = CliRunner().invoke(app, ["audit", "export", "--since", "2000-01-01T00:00:00Z",
                                   "--data-dir", str(cloud.settings.data_dir)])
    assert out.exit_code == 0, out.output
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(events) >= 3  # two logins, the create, the failed delete
    for e in events:
        assert {"typeURI", "eventType", "action", "outcome", "initiator", "target", "observer", "reason",
                "requestId", "eventTime", "id"} <= set(e)
        assert e["eventType"] == "activity"
        assert e["typeURI"] == "http://schemas.dmtf.org/cloud/audit/1.0/event"
    by_route = {(e["name"], e["outcome"]) for e in events}
    assert ("network.networks.create", "success") in by_route
    failed = [e for e in events if e["action"] == "delete"]
    assert failed[0]["outcome"] == "failure" and failed[0]["reason"]["reasonCode"] == "404"
