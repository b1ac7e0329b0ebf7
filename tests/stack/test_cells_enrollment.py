"""Enrollment (issue 19): 500 hosts pre-registered from a CSV plus self-registered ones enroll through the
api with single-use tokens, start as in-process agents on the fake driver, and become schedulable only
once a heartbeat reports their health checks passing. Reused, expired, unknown and foreign-cell tokens
are refused with a clear error and leave nothing behind."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from canopy.agent.enroll import Enrolled, EnrollmentRefused, enroll, hardware_report, simulated_facts
from canopy.agent.service import Agent
from canopy.agent.virt.fake import FakeDriver
from canopy.db import enrollment as enr
from canopy.db import inventory as inv
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.db.cells import register_cell
from canopy.db.migrate import upgrade_part
from canopy.rpc.calls import Heartbeat
from tests.clouds import server_body, wait_for_server

DAY = dt.timedelta(days=1)


def make_rack(db: Any, dc: str, rack: str, now: dt.datetime, cell: str | None = None) -> str:
    """A data center (run by `cell`), a row and a rack; the rack's id."""
    with db.writer() as conn:
        inv.create_record(conn, inv.KINDS["datacenters"], {"name": dc, "cell_name": cell}, now)
        row = inv.create_record(conn, inv.KINDS["rows"], {"name": "row-a", "datacenter": dc}, now)
        return str(inv.create_record(conn, inv.KINDS["racks"], {"name": rack, "row_id": row["id"]}, now)["id"])


def hosts_csv(names: list[str], rack: str) -> str:
    lines = ["name,rack,serial,macs"]
    for name in names:
        facts = simulated_facts(name)
        lines.append(f"{name},{rack},{facts.serial},{' '.join(facts.nics.values())}")
    return "\n".join(lines) + "\n"


def fake_hardware(name: str, memory_mb: int = 16384) -> dict[str, Any]:
    return hardware_report(FakeDriver(name, vcpus=8, memory_mb=memory_mb, local_gb=200), simulated_facts(name))


def counts(stack: Any) -> tuple[int, int, int, int]:
    """Inventory hosts, cell hosts, host mappings, used tokens."""
    with stack.cloud.dbs.global_db.reader() as conn:
        n_inv = conn.execute(select(func.count()).select_from(g.inventory_hosts)).scalar_one()
        n_map = conn.execute(select(func.count()).select_from(g.host_mappings)).scalar_one()
        n_used = conn.execute(select(func.count()).select_from(g.enrollment_tokens)
                              .where(g.enrollment_tokens.c.used_at.is_not(None))).scalar_one()
    with stack.cloud.dbs.cell("cell1").reader() as conn:
        n_hosts = conn.execute(select(func.count()).select_from(c.hosts)).scalar_one()
    return n_inv, n_hosts, n_map, n_used


async def start_agents(stack: Any, enrolled: list[Enrolled]) -> list[Agent]:
    agents = [Agent(e.host, FakeDriver(e.host, vcpus=8, memory_mb=16384, local_gb=200), stack.cloud.bus,
                    heartbeat_s=3600, datacenter=e.datacenter, rack=e.rack) for e in enrolled]
    for i in range(0, len(agents), 100):
        await asyncio.gather(*(a.start() for a in agents[i:i + 100]))
    return agents


async def beat(stack: Any, agents: list[Agent]) -> None:
    """Every agent's heartbeat with its health checks' results, written by the conductor."""
    for a in agents:
        await a.health.run()
        await stack.conductor.handle(Heartbeat(binary="canopy-agent", host=a.host, service_version="t",
                                               sent_at=stack.cloud.clock.now().timestamp(),
                                               health=a.health.failing()))
    await stack.conductor.flush_heartbeats()


def enrollment_states(stack: Any, names: list[str]) -> set[str | None]:
    with stack.cloud.dbs.cell("cell1").reader() as conn:
        return set(conn.execute(select(c.hosts.c.enrollment).where(c.hosts.c.name.in_(names))).scalars())


async def test_500_from_csv_and_self_registration_become_schedulable_when_healthy(stack: Any) -> None:
    cloud, now = stack.cloud, stack.cloud.clock.now()
    make_rack(cloud.dbs.global_db, "dc1", "r01", now)
    listed = [f"node-{n:04d}" for n in range(500)]
    by_mac = [f"mac-{n:02d}" for n in range(5)]  # pre-registered; self-registered, found by a MAC
    with cloud.dbs.global_db.writer() as conn:
        enr.preregister(conn, enr.parse_hosts_csv(hosts_csv(listed, "dc1/r01")), now)
        rows = enr.parse_hosts_csv(hosts_csv(by_mac, "dc1/r01"))
        enr.preregister(conn, [{**r, "serial": None} for r in rows], now)  # no serial: the MAC must do
        bound = enr.issue_tokens(conn, "cell1", list[str | None](listed), DAY, now)
        free = enr.issue_tokens(conn, "cell1", [None] * 10, DAY, now)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.api.app), base_url="http://canopy.test")
    try:
        jobs = [(tok, name, {}) for tok, name in zip(bound, listed, strict=True)]
        jobs += [(tok, name, {}) for tok, name in zip(free[:5], by_mac, strict=True)]
        jobs += [(tok, f"labelled-{n}", {"datacenter": "dc1", "rack": "r01"}) for n, tok in enumerate(free[5:])]
        enrolled: list[Enrolled] = []
        for i in range(0, len(jobs), 50):
            enrolled += await asyncio.gather(*(
                enroll(http, tok, name, fake_hardware(name), cell="cell1", labels=labels or None)
                for tok, name, labels in jobs[i:i + 50]))
    finally:
        await http.aclose()
    names = [e.host for e in enrolled]
    assert names == listed + by_mac + [f"labelled-{n}" for n in range(5)]
    assert {(e.cell, e.datacenter, e.rack) for e in enrolled} == {("cell1", "dc1", "r01")}
    assert len({e.bus_secret for e in enrolled}) == 510 and enrolled[0].bus["transport"] == "local"
    with cloud.dbs.global_db.reader() as conn:
        h = g.inventory_hosts.c
        rows = conn.execute(select(h.name, h.state, h.credential_hash, h.hardware).where(h.name.in_(names))).all()
        mapped = set(conn.execute(select(g.host_mappings.c.host).where(g.host_mappings.c.cell_name == "cell1"))
                     .scalars())
    assert len(rows) == 510 and {r.state for r in rows} == {"enrolled"} and set(names) <= mapped
    assert all(r.credential_hash == enr.hash_token(e.bus_secret) for r, e in
               zip(sorted(rows), sorted(enrolled, key=lambda e: e.host), strict=True))
    assert rows[0].hardware["switch_version"] == "simulated"
    assert enrollment_states(stack, names) == {"pending"}

    # Enrolled, registered, heartbeating, but no health check has run: still not schedulable.
    agents = await start_agents(stack, enrolled)
    try:
        await stack.conductor.flush_heartbeats()
        target = enrolled[0].host
        resp = await stack.api.post("/compute/v2.1/servers",
                                    json=server_body(name="early", availability_zone=f"nova:{target}"))
        assert resp.status_code == 202, resp.text
        early = await wait_for_server(stack.api, resp.json()["server"]["id"], {"ERROR"})
        assert "enrollment: 510 still enrolling" in early["fault"]["message"], early["fault"]
        await beat(stack, agents)
        assert enrollment_states(stack, names) == {"complete"}
        resp = await stack.api.post("/compute/v2.1/servers",
                                    json=server_body(name="late", availability_zone=f"nova:{target}"))
        late = await wait_for_server(stack.api, resp.json()["server"]["id"], {"ACTIVE"})
        assert late["OS-EXT-SRV-ATTR:host"] == target
    finally:
        for a in agents:
            await a.stop()


async def test_bad_tokens_are_refused_and_create_nothing(stack: Any, data_dir: Path) -> None:
    cloud, now = stack.cloud, stack.cloud.clock.now()
    url = f"sqlite:///{data_dir / 'cell2.db'}"
    with cloud.dbs.global_db.writer() as conn:
        register_cell(conn, "cell2", url, "", now)
    upgrade_part(cloud.dbs.add_cell("cell2", url).primary, "cell")
    make_rack(cloud.dbs.global_db, "dc1", "r01", now)
    make_rack(cloud.dbs.global_db, "dc2", "r01", now, cell="cell2")
    with cloud.dbs.global_db.writer() as conn:
        enr.preregister(conn, enr.parse_hosts_csv(hosts_csv(["a1", "a2"], "dc1/r01")), now)
        enr.preregister(conn, enr.parse_hosts_csv(hosts_csv(["b1"], "dc2/r01")), now)
        good, = enr.issue_tokens(conn, "cell1", ["a1"], DAY, now)
        stale, = enr.issue_tokens(conn, "cell1", ["a2"], DAY, now - 2 * DAY)
        foreign, = enr.issue_tokens(conn, "cell1", ["b1"], DAY, now)  # b1's rack is run by cell2
        other, = enr.issue_tokens(conn, "cell2", [None], DAY, now)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.api.app), base_url="http://canopy.test")

    async def refused(token: str, host: str, **kw: Any) -> EnrollmentRefused:
        before = counts(stack)
        try:
            await enroll(http, token, host, fake_hardware(host), **kw)
        except EnrollmentRefused as e:
            assert counts(stack) == before, "a refused enrollment left something behind"
            return e
        raise AssertionError("enrolled with a bad token")

    try:
        await enroll(http, good, "a1", fake_hardware("a1"))
        e = await refused(good, "a1")
        assert e.status == 409 and "already used (by host a1" in e.message
        e = await refused(stale, "a2")
        assert e.status == 401 and "expired at" in e.message
        e = await refused("cnpe_not-a-token", "a2")
        assert e.status == 401 and "not valid" in e.message
        e = await refused(foreign, "b1")
        assert e.status == 409 and "run by cell cell2" in e.message
        e = await refused(other, "a2", cell="cell1")
        assert e.status == 409 and "for cell cell2, not cell cell1" in e.message
        e = await refused(other, "stranger")  # no match by serial or MAC, no labels
        assert e.status == 409 and "gave no datacenter and rack labels" in e.message
        with cloud.dbs.global_db.writer() as conn:
            fresh, = enr.issue_tokens(conn, "cell1", ["a2"], DAY, now)
        before = counts(stack)
        try:  # a2's token, another machine's hardware
            await enroll(http, fresh, "a2", fake_hardware("someone-else"))
            raise AssertionError("enrolled the wrong machine")
        except EnrollmentRefused as e2:
            assert e2.status == 409 and "is not host a2" in e2.message and counts(stack) == before
    finally:
        await http.aclose()
