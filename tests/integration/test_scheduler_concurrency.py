"""Four scheduler processes against one MariaDB or PostgreSQL database place 2,000 instances onto a fleet
with exactly enough room. Afterwards no host is overcommitted, every instance has a host or a "No valid
host" fault, and the hosts' counters agree with the instances they hold.

The processes drive the Scheduler class directly (no bus, no API): the claim path is the one a boot
takes. This file is also the worker: `python -m tests.integration.test_scheduler_concurrency URL I N`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from canopy.db import tables_cell as c
from canopy.db.engine import Database
from canopy.db.migrate import upgrade_part

ROOT = Path(__file__).resolve().parents[2]
PROCESSES, INSTANCES, HOSTS = 4, 2000, 200
PER_HOST = INSTANCES // HOSTS  # each host takes exactly this many: 1 vCPU and 1 GB each
SERVERS = {"mariadb": "mysql+pymysql://root@127.0.0.1:3306", "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432"}


@pytest.fixture(params=sorted(SERVERS))
def fleet_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database of its own on the machine's server, migrated and filled with the fleet."""
    from tests.databases import fresh_database

    admin_db = "test"
    for url in fresh_database(SERVERS[request.param], admin_db):
        db = Database(url)
        upgrade_part(db.primary, "global")
        upgrade_part(db.primary, "cell")
        with db.writer() as conn:
            _fill(conn)
        db.dispose()
        yield url


def _fill(conn: Any) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    conn.execute(insert(c.hosts), [dict(
        name=f"hv-{n:04d}", uuid=str(uuid.uuid4()), hypervisor_type="fake", hypervisor_version=1, vcpus=PER_HOST,
        memory_mb=PER_HOST * 1024, local_gb=PER_HOST * 10, vcpus_used=0, memory_mb_used=0, local_gb_used=0,
        running_vms=0, cpu_allocation_ratio=1.0, ram_allocation_ratio=1.0, disk_allocation_ratio=1.0,
        reserved_vcpus=0, reserved_memory_mb=0, reserved_disk_gb=0, availability_zone="nova", datacenter="dc1",
        rack=f"r{n % 10}", enabled=True, created_at=now, updated_at=now) for n in range(HOSTS)])
    conn.execute(insert(c.services), [dict(
        uuid=str(uuid.uuid4()), binary="canopy-agent", host=f"hv-{n:04d}", version="1", last_seen_at=now,
        disabled=False, forced_down=False, created_at=now, updated_at=now) for n in range(HOSTS)])
    conn.execute(insert(c.instances), [dict(
        uuid=str(uuid.uuid4()), project_id="p", user_id="u", name=f"vm-{n}", hostname=f"vm-{n}", flavor_id="1",
        flavor={"vcpus": 1, "ram": 1024, "disk": 10}, image_ref="", host=None, vm_state="building",
        task_state="scheduling", power_state=0, config_drive="", metadata={}, networks=[], addresses={},
        reservation_id="r", launch_index=n, locked=False, progress=0, created_at=now, updated_at=now,
        deleted=False) for n in range(INSTANCES)])


def test_four_schedulers_never_overcommit(fleet_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.test_scheduler_concurrency", fleet_url,
                               str(i), str(PROCESSES)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for i in range(PROCESSES)]
    try:
        for p in procs:  # each has loaded its index: start them together
            assert p.stdout is not None and p.stdout.readline().strip() == b"ready", p.stderr.read()  # type: ignore[union-attr]
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write(b"go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        stats = [json.loads(p.communicate(timeout=120)[0].decode().strip().splitlines()[-1]) for p in procs]
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [p.stderr.read() for p in procs if p.stderr]  # type: ignore[union-attr]
    placed = sum(s["placed"] for s in stats)
    print(f"\n{fleet_url.split(':')[0]}: {placed} placed in {elapsed:.1f} s by {PROCESSES} processes; "
          f"lost races {sum(s['lost_races'] for s in stats)}, no valid host {sum(s['no_valid_host'] for s in stats)}")
    _check(fleet_url, placed)


def _check(url: str, placed: int) -> None:
    from canopy.scheduler import audit

    db = Database(url)
    try:
        with db.reader() as conn:
            hosts = conn.execute(select(c.hosts)).all()
            by_host = dict(conn.execute(select(c.instances.c.host, func.count()).where(c.instances.c.host.is_not(None))
                                        .group_by(c.instances.c.host)).all())
            unplaced = conn.execute(select(c.instances.c.uuid).where(c.instances.c.host.is_(None))).scalars().all()
            faults = set(conn.execute(select(c.instance_faults.c.instance_uuid).where(
                c.instance_faults.c.message.like("No valid host%"))).scalars().all())
        for h in hosts:
            assert h.vcpus_used <= h.vcpus and h.memory_mb_used <= h.memory_mb and h.local_gb_used <= h.local_gb, h
            assert h.running_vms == by_host.get(h.name, 0) <= PER_HOST
        assert set(unplaced) == faults  # every instance: a host, or a fault that says why not
        assert sum(by_host.values()) == placed == INSTANCES - len(unplaced)
        assert placed >= INSTANCES * 0.99  # just enough room: a "no" must be rare (races at the very end)
        with db.writer() as conn:
            assert audit.audit_batch(conn, dt.datetime.now(), 0, limit=HOSTS, repair=False).drift == []
    finally:
        db.dispose()


# -- the worker process ------------------------------------------------------------------------------


async def _work(url: str, index: int, count: int) -> dict[str, int]:
    import random

    from canopy.conductor import records
    from canopy.config import SchedulerConfig
    from canopy.rpc.calls import SelectHost
    from canopy.scheduler.service import NoValidHost, Scheduler

    db = Database(url, pool_size=8)
    with db.reader() as conn:
        mine = conn.execute(select(c.instances.c.uuid).order_by(c.instances.c.id)).scalars().all()[index::count]
    sched = Scheduler(db, None, rng=random.Random(index), config=SchedulerConfig(
        refresh_s=0.2, feed_overlap_s=1.0, audit_interval_s=0, top_k=3))
    await sched.refresh(force=True)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    gate = asyncio.Semaphore(8)

    async def place(instance: str) -> None:
        async with gate:
            msg = SelectHost(instance_uuid=instance, project_id="p", vcpus=1, memory_mb=1024, disk_gb=10)
            try:
                await sched.select_host(msg)
            except NoValidHost as exc:  # what the conductor does with a "no": a fault naming the cause
                await db.write(records.add_fault, instance, message=str(exc), details="", host=None,
                               task_state="scheduling", request_id=None, now=sched.clock.now())

    await asyncio.gather(*(place(u) for u in mine))
    db.dispose()
    return sched.stats


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_work(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))), flush=True)
