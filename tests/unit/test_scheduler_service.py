"""The scheduler service on SQLite: incremental refresh, lost races, fresh "no"s, multi-create in one
pass with anti-affinity among its members, explanations, and the audit riding on refresh."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from canopy.clock import Clock
from canopy.conductor import records
from canopy.config import SchedulerConfig
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.db.engine import Database
from canopy.db.migrate import upgrade_part
from canopy.rpc.calls import SelectHost
from canopy.scheduler import claims
from canopy.scheduler.feed import Changes
from canopy.scheduler.service import NoValidHost, Scheduler
from tests.unit.fleet_rows import add_instance


async def make_fleet(path: Path, n: int, vcpus: int = 4, ram: int = 8192) -> Database:
    db = Database(f"sqlite:///{path}")
    upgrade_part(db.primary, "global")
    upgrade_part(db.primary, "cell")
    now = Clock().now()
    with db.writer() as conn:
        for i in range(1, n + 1):
            records.upsert_host(conn, {"name": f"hv-{i:02d}", "hypervisor_type": "fake", "hypervisor_version": 1,
                                       "vcpus": vcpus, "memory_mb": ram, "local_gb": 100, "rack": f"r{i % 2}",
                                       "reserved_memory_mb": 0, "cpu_allocation_ratio": 1.0},
                                now - dt.timedelta(seconds=60 - i))
            records.upsert_service(conn, "canopy-agent", f"hv-{i:02d}", "1", now)
    return db


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Database]:
    db = await make_fleet(tmp_path / "fleet.db", 4)
    yield db
    db.dispose()


def scheduler(db: Database, seed: int = 1, **cfg: Any) -> Scheduler:
    config = SchedulerConfig(**{"refresh_s": 0.0, "feed_overlap_s": 0.0, "audit_interval_s": 0.0, **cfg})
    return Scheduler(db, None, config=config, rng=random.Random(seed))


def ask(instance: str = "", vcpus: int = 1, ram: int = 1024, **kw: Any) -> SelectHost:
    return SelectHost(instance_uuid=instance, project_id="p", vcpus=vcpus, memory_mb=ram, disk_gb=1, **kw)


async def used(db: Database) -> dict[str, int]:
    rows = await db.read(lambda conn: conn.execute(select(c.hosts.c.name, c.hosts.c.vcpus_used)).all())
    return dict(rows)  # type: ignore[arg-type]


async def test_the_index_loads_once_then_reads_only_what_changed(fleet: Database) -> None:
    s = scheduler(fleet)
    await s.refresh(force=True)
    assert s.index.size == 4
    await fleet.write(lambda conn: conn.execute(update(c.hosts).where(c.hosts.c.name == "hv-02").values(
        enabled=False, updated_at=Clock().now() + dt.timedelta(seconds=1))))
    changes = await fleet.read_fresh(s.feed.fetch_cell, Changes(), services=False)
    assert [row.name for row in changes.hosts] == ["hv-02"]
    s.feed.apply(s.index, changes)
    placed = {(await s.select_host(ask())).host for _ in range(6)}
    assert "hv-02" not in placed


async def test_the_overlap_catches_a_row_stamped_before_the_watermark_but_committed_after(fleet: Database) -> None:
    s = scheduler(fleet, feed_overlap_s=5.0)
    await s.refresh(force=True)
    late = s.feed.hosts_mark - dt.timedelta(seconds=2)  # type: ignore[operator]
    await fleet.write(lambda conn: conn.execute(update(c.hosts).where(c.hosts.c.name == "hv-03").values(
        enabled=False, updated_at=late)))
    await s.refresh(force=True)
    assert not s.index.cols["enabled"][s.index.by_name["hv-03"]]


async def test_a_lost_race_rereads_that_host_and_moves_on(fleet: Database) -> None:
    a, b = scheduler(fleet, seed=1, top_k=1, refresh_s=3600), scheduler(fleet, seed=2, top_k=1)
    await a.refresh(force=True)
    await b.refresh(force=True)
    first = (await b.select_host(ask(vcpus=4))).host  # b fills the host a would pick (a is now stale)
    a.index.cols["jitter"][:] = 0
    a.index.cols["jitter"][a.index.by_name[first]] = 1e-3
    a.index.rescore()
    second = (await a.select_host(ask(vcpus=4))).host
    assert second != first and a.stats["lost_races"] == 1
    assert (await used(fleet))[first] == 4 and (await used(fleet))[second] == 4


async def test_no_valid_host_is_said_only_on_a_fresh_view(fleet: Database) -> None:
    a = scheduler(fleet, refresh_s=3600)
    await a.refresh(force=True)
    for _ in range(4):
        await a.select_host(ask(vcpus=4))
    with pytest.raises(NoValidHost, match="0 of 4 hosts fit; vcpus: 4 without enough free vCPUs"):
        await a.select_host(ask(vcpus=1))
    now = Clock().now()
    await fleet.write(claims.release, "hv-03", 4, 1024, 1, now)  # someone frees room; a's index does not know
    assert (await a.select_host(ask(vcpus=2))).host == "hv-03"


async def test_multi_create_is_placed_in_one_pass_with_anti_affinity_among_its_members(fleet: Database) -> None:
    s = scheduler(fleet, batch_wait_s=5.0)
    await s.refresh(force=True)
    uuids = [await fleet.write(add_instance) for _ in range(5)]
    group = {"uuid": str(uuid.uuid4()), "policy": "anti-affinity", "rules": {}}
    msgs = [ask(u, group=group, reservation_id="r-1", batch_size=5) for u in uuids]
    results = await asyncio.gather(*(s.handle(m) for m in msgs), return_exceptions=True)
    hosts = [r.host for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert sorted(hosts) == ["hv-01", "hv-02", "hv-03", "hv-04"]
    assert len(errors) == 1 and isinstance(errors[0], NoValidHost)
    assert "server_group: 4 ruled out by the server group's policy" in str(errors[0])
    placed = await fleet.read(lambda conn: conn.execute(select(c.instances.c.uuid, c.instances.c.host)).all())
    assert sum(1 for _, h in placed if h) == 4  # each claim recorded its instance's host


async def test_hard_affinity_keeps_a_group_on_one_host(fleet: Database) -> None:
    s = scheduler(fleet)
    group = {"uuid": str(uuid.uuid4()), "policy": "affinity", "rules": {}}
    hosts = {(await s.select_host(ask(await fleet.write(add_instance), group=group))).host for _ in range(3)}
    assert len(hosts) == 1


async def test_explain_says_why_without_claiming(fleet: Database) -> None:
    s = scheduler(fleet)
    out = await s.explain(ask(vcpus=3, availability_zone="nova", force_host="hv-01"), top=3)
    assert out["fit"] == 1 and out["candidates"][0]["host"] == "hv-01"
    assert {"filter": "host", "removed": 3, "reason": "not the requested host", "remaining": 1} in out["filters"]
    assert sum((await used(fleet)).values()) == 0
    nothing = await s.explain(ask(vcpus=64))
    assert nothing["message"] == "0 of 4 hosts fit; vcpus: 4 without enough free vCPUs"


async def test_network_reachability_uses_the_subnets_free_addresses(fleet: Database) -> None:
    now = Clock().now()

    def add_network(conn: Any) -> None:
        conn.execute(insert(g.networks).values(id="net-1", name="n", project_id="p", created_at=now, updated_at=now))
        for seg, rack in (("seg-1", "r1"), ("seg-0", "r0")):
            conn.execute(insert(g.network_segments).values(id=seg, network_id="net-1", network_type="flat",
                                                           physical_network=f"phys-{rack}", created_at=now,
                                                           updated_at=now))
            conn.execute(insert(g.segment_racks).values(network_id="net-1", datacenter="dc1", rack=rack,
                                                        segment_id=seg))
        conn.execute(insert(g.subnets).values(  # only seg-1 (rack r1) has a subnet
            id="sub-r1", network_id="net-1", project_id="p", ip_version=4, cidr="192.0.2.0/29", segment_id="seg-1",
            allocation_pools=[{"start": "192.0.2.2", "end": "192.0.2.6"}], created_at=now, updated_at=now))

    await fleet.write(add_network)
    s = scheduler(fleet)
    hosts = {(await s.select_host(ask(network_ids=["net-1"]))).host for _ in range(6)}
    assert hosts <= {"hv-01", "hv-03"}  # the hosts on rack r1
    out = await s.explain(ask(network_ids=["net-2-without-subnets"]))  # no subnet: no address needed
    assert [f["removed"] for f in out["filters"] if f["filter"] == "network"] == [0]
    assert await s.lookups.racks(["net-1"]) == (frozenset({"dc1/r1"}),)


async def test_the_audit_rides_on_refresh(fleet: Database) -> None:
    s = scheduler(fleet, audit_interval_s=0.0)
    await fleet.write(lambda conn: conn.execute(update(c.hosts).where(c.hosts.c.name == "hv-04").values(
        vcpus_used=3)))
    s._due["audit"] = float("-inf")
    s.cfg.audit_interval_s = 1.0
    await s.refresh(force=True)
    assert s.stats["audit_repairs"] == 1 and (await used(fleet))["hv-04"] == 0
