"""Several OS processes allocating addresses from one small subnet at once, on MariaDB and PostgreSQL:
every address of the pool is given out exactly once, and nothing outside the pool is. These need the
database servers; without them they fail."""

from __future__ import annotations

import ipaddress
import multiprocessing as mp
import random
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from canopy.clock import Clock
from canopy.db import tables_cell as c
from canopy.db.engine import Databases
from canopy.db.migrate import upgrade_all
from canopy.network import ipam
from canopy.network import networks as nets
from canopy.network import ports as pt
from canopy.network import subnets as sn
from canopy.network.errors import IpAddressGenerationFailure

WORKERS = 4
CIDR = "10.77.0.0/26"  # gateway .1, pool .2-.62: 61 addresses


def make_subnet(url: str) -> tuple[str, str]:
    """Migrate the database and add a network with one /26 subnet; (network id, subnet id)."""
    dbs = Databases.from_urls(url, {"cell1": url})
    try:
        upgrade_all(dbs)
        now = Clock().now()
        with dbs.global_db.writer() as conn:
            network = nets.insert_network(conn, {"name": f"race-{uuid.uuid4().hex[:6]}", "project_id": "p"}, now)
            subnet = sn.insert_subnet(conn, {"network_id": network["id"], "project_id": "p",
                                             **sn.addressing(4, CIDR)}, now)
        return network["id"], subnet["id"]
    finally:
        dbs.dispose()


def allocate_until_exhausted(url: str, network_id: str, same_start: bool, barrier: Any, out: Any) -> None:
    """One worker process: create ports as fast as possible until the pool is exhausted."""
    if same_start:  # every process's cursor starts at the same place: the worst case for collisions
        ipam.CURSORS = ipam.CursorRegistry(random.Random(0))
    dbs = Databases.from_urls(url, {"cell1": url}, execution="inline")
    got: list[tuple[str, str]] = []
    retries = 0
    try:
        with dbs.global_db.reader() as conn:
            loaded = nets.load_network(conn, network_id)
        assert loaded is not None
        network, subnets = loaded
        barrier.wait(timeout=60)
        while True:
            try:
                with dbs.cell("cell1").writer() as conn:
                    port = pt.create_port(conn, network=network, subnets=subnets, project_id="p",
                                          device_id=f"race-{uuid.uuid4()}", device_owner="compute:nova",
                                          now=Clock().now())
            except IpAddressGenerationFailure:
                break
            except OperationalError:  # a deadlock victim: the transaction is simply run again
                retries += 1
                if retries > 50:
                    raise
                continue
            got.extend((port.id, f["ip_address"]) for f in port.fixed_ips)
        out.put(("ok", got, (retries, dbs.cell("cell1").counter.total)))
    except BaseException as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc), (retries, 0)))
    finally:
        dbs.dispose()


def run_race(url: str, same_start: bool) -> None:
    network_id, subnet_id = make_subnet(url)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=allocate_until_exhausted, args=(url, network_id, same_start, barrier, out))
             for _ in range(WORKERS)]
    started = time.monotonic()
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors
    given = [ip for _, got, _ in results for _, ip in got]
    net = ipaddress.ip_network(CIDR)
    pool = {str(net.network_address + i) for i in range(2, 63)}
    assert len(given) == len(set(given)), "an address was given twice"
    assert set(given) == pool, "every pool address is given exactly once"
    dbs = Databases.from_urls(url, {"cell1": url})
    try:
        with dbs.cell("cell1").reader() as conn:
            rows = conn.execute(select(c.ip_allocations.c.ip_address, c.ip_allocations.c.port_id)
                                .where(c.ip_allocations.c.subnet_id == subnet_id)).all()
    finally:
        dbs.dispose()
    assert sorted(r.ip_address for r in rows) == sorted(given)
    assert {(r.port_id, r.ip_address) for r in rows} == {pair for _, got, _ in results for pair in got}
    print(f"{len(given)} addresses by {WORKERS} processes in {time.monotonic() - started:.1f}s, "
          f"per process {[len(got) for _, got, _ in results]}, "
          f"(deadlock retries, statements) {[r[2] for r in results]}")


@pytest.mark.parametrize("same_start", [False, True], ids=["random-start", "same-start"])
def test_mariadb_concurrent_allocation(mariadb_url: str, same_start: bool) -> None:
    run_race(mariadb_url, same_start)


@pytest.mark.parametrize("same_start", [False, True], ids=["random-start", "same-start"])
def test_postgres_concurrent_allocation(postgres_url: str, same_start: bool) -> None:
    run_race(postgres_url, same_start)
