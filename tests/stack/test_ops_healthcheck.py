"""/healthcheck in the oslo.middleware shape, turning 503 when a dependency is gone; /healthcheck/fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from canopy.api.healthcheck import Check, databases_to_check, healthy
from tests.clouds import ApiClient

JSON = {"Accept": "application/json"}


async def anonymous(api: ApiClient, method: str = "GET", **kw: Any) -> Any:
    return await api.http.request(method, "/healthcheck", **kw)


async def test_healthy_in_every_shape(stack: Any) -> None:
    api = stack.api
    plain = await anonymous(api)
    assert plain.status_code == 200 and plain.text == "OK" and plain.headers["content-type"].startswith("text/plain")
    assert (await anonymous(api, "HEAD")).status_code == 204
    assert (await anonymous(api, headers=JSON)).json() == {"detailed": False, "reasons": ["OK"]}
    # the details are for admins only
    assert (await api.get("/healthcheck?detail", as_user="demo")).text == "OK"
    assert (await api.get("/healthcheck?detail", as_user="demo", headers=JSON)).json() == {"detailed": False,
                                                                                          "reasons": ["OK"]}
    detail = (await api.get("/healthcheck?detail")).json()
    assert detail["detailed"] is True and detail["version"]
    by_class = {r["class"]: r for r in detail["reasons"]}
    assert by_class["DatabaseCheck"]["reason"] == "OK" and by_class["DatabaseCheck"]["latency_ms"] >= 0
    assert by_class["BusCheck"]["reason"] == "OK" and "conductor-0" in by_class["BusCheck"]["details"]


def _move(db_file: Path, suffix_from: str, suffix_to: str) -> None:
    for extra in ("", "-wal", "-shm"):
        src = Path(f"{db_file}{extra}{suffix_from}")
        if src.exists():
            src.rename(f"{db_file}{extra}{suffix_to}")


async def test_503_while_the_sqlite_file_is_gone_and_200_when_it_is_back(stack: Any) -> None:
    api = stack.api
    db_file = Path(make_url(stack.cloud.dbs.global_db.url).database or "")
    assert db_file.exists()
    # Root reads a file whatever its mode bits, so "unreadable" here means taken away (and put back).
    _move(db_file, "", ".away")
    try:
        down = await anonymous(api)
        assert down.status_code == 503
        assert down.text.startswith("database:global+cell:cell1: primary unreachable"), down.text
        assert (await anonymous(api, "HEAD")).status_code == 503
        detail = (await api.http.get("/healthcheck?detail", headers={"X-Auth-Token": await api.token("admin")}))
        assert detail.status_code == 503
        failing = [r for r in detail.json()["reasons"] if r["reason"] != "OK"]
        assert [r["class"] for r in failing] == ["DatabaseCheck"] and "unable to open" in failing[0]["details"]
    finally:
        _move(db_file, ".away", "")
    assert (await anonymous(api)).status_code == 200


async def test_503_when_no_conductor_answers_on_the_bus(api: ApiClient) -> None:
    resp = await anonymous(api)  # the `api` fixture runs no conductor
    assert resp.status_code == 503 and resp.text.startswith("bus: no conductor answered"), resp.text
    assert (await anonymous(api, headers=JSON)).json()["reasons"][0].startswith("bus:")


async def test_fleet_counts_hosts_per_data_center_for_admins(stack: Any) -> None:
    api = stack.api
    assert (await api.http.get("/healthcheck/fleet")).status_code == 401
    assert (await api.get("/healthcheck/fleet", as_user="demo")).status_code == 403
    mv = {"OpenStack-API-Version": "compute 2.53"}
    services = (await api.get("/compute/v2.1/os-services?binary=canopy-agent", headers=mv)).json()["services"]
    by_host = {s["host"]: s["id"] for s in services}
    await api.put(f"/compute/v2.1/os-services/{by_host['hv-0002']}", json={"forced_down": True}, headers=mv)
    await api.put(f"/compute/v2.1/os-services/{by_host['hv-0003']}",
                  json={"status": "disabled", "disabled_reason": "disk swap"}, headers=mv)
    fleet = (await api.get("/healthcheck/fleet")).json()["fleet"]
    assert fleet["datacenters"] == [{"datacenter": "dc1", "hosts": 4, "up": 3, "down": 1, "disabled": 1,
                                     "forced_down": 1}]
    assert fleet["totals"]["hosts"] == 4 and fleet["service_down_s"] > 0
    assert [(h["host"], h["forced_down"]) for h in fleet["down_hosts"]] == [("hv-0002", True)]
    assert {"binary": "canopy-agent", "up": 3, "down": 1} in fleet["services"]


def test_one_database_shared_by_global_and_cell_is_checked_once(stack: Any) -> None:
    entries = databases_to_check(stack.cloud)
    assert [(name, tables) for name, _db, tables in entries] == [
        ("database:global+cell:cell1", ["alembic_version_global", "alembic_version_cell"])]


def test_only_required_checks_decide() -> None:
    ok, lagging = Check("db", "DatabaseCheck", True, ""), Check("r", "DatabaseReplicaCheck", False, "", required=False)
    assert healthy([ok, lagging])
    assert not healthy([ok, Check("bus", "BusCheck", False, "")])
