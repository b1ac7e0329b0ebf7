"""Read replicas for real: a throwaway MariaDB primary + replica (GTID) and PostgreSQL primary + hot
standby (pg_basebackup -R), each started by this module on ports of its own and stopped by PID.

What is proved on both: reads land on the replica; reader_fresh sees the write it follows (waiting
for the replica to apply it, or reading the primary when that takes too long); a lagging or stopped
replica leaves the rotation while requests still succeed, and comes back once healthy; a whole
cloud boots a server with most of its reads on the replica.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text

from canopy.db.engine import Database
from tests.integration.replication import MariaDBPair, PostgresPair

meta = MetaData()
notes = Table("replica_notes", meta, Column("id", Integer, primary_key=True), Column("body", String(64)))


@pytest.fixture(scope="session")
def mariadb_pair() -> Iterator[MariaDBPair]:
    """A MariaDB primary and replica for this session (two mariadbd processes, own data folders)."""
    with MariaDBPair.start(Path(tempfile.mkdtemp(prefix="canopy-maria-"))) as pair:
        yield pair


@pytest.fixture(scope="session")
def postgres_pair() -> Iterator[PostgresPair]:
    """A PostgreSQL primary and hot standby for this session."""
    with PostgresPair.start() as pair:
        yield pair


@pytest.fixture(params=["mariadb", "postgres"])
def pair(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_pair")


@pytest.fixture
def db(pair: Any) -> Iterator[Database]:
    """A Database on the pair with its replica; health is checked only when a test says so."""
    database = Database(pair.primary_url, replica_urls=[pair.replica_url], replica_max_lag_s=1.0,
                        fresh_wait_s=3.0, replica_check_s=3600)
    meta.create_all(database.primary)
    pair.wait_caught_up()
    database.check_replicas()
    try:
        yield database
    finally:
        pair.resume()
        meta.drop_all(database.primary)
        database.dispose()


def served_by(conn: Any) -> str:
    """Which side answered: the replica is the one in recovery / read-only."""
    if conn.dialect.name == "postgresql":
        return "replica" if conn.execute(text("SELECT pg_is_in_recovery()")).scalar() else "primary"
    return "replica" if conn.execute(text("SELECT @@read_only")).scalar() else "primary"


def find(conn: Any, body: str) -> tuple[str, bool]:
    found = conn.execute(select(notes.c.id).where(notes.c.body == body)).first() is not None
    return served_by(conn), found


def add(conn: Any, body: str) -> None:
    conn.execute(insert(notes).values(body=body))


async def in_fresh_request(coro: Any) -> Any:
    """Run a coroutine as its own request: its write positions are its own, as in a real request."""
    return await asyncio.create_task(coro)


async def test_reads_go_to_the_replica_and_writes_to_the_primary(db: Database, pair: Any) -> None:
    await db.write(add, "one")
    pair.wait_caught_up()
    where = [await db.read(find, "one") for _ in range(5)]
    assert where == [("replica", True)] * 5
    assert db.routed["reader:replica"] == 5 and db.routed["reader:primary"] == 0
    with db.writer() as conn:
        assert served_by(conn) == "primary"


async def test_reader_fresh_waits_for_the_replica_to_apply_the_write_it_follows(db: Database, pair: Any) -> None:
    async def request() -> tuple[tuple[str, bool], float]:
        pair.pause()  # the replica answers but applies nothing until resumed
        await db.write(add, "fresh")
        assert db.write_position() is not None
        assert await db.read(find, "fresh") == ("replica", False)  # a plain read may be behind
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, pair.resume)
        started = time.monotonic()
        got = await db.read_fresh(find, "fresh")
        return got, time.monotonic() - started

    got, waited = await in_fresh_request(request())
    assert got == ("replica", True)
    assert waited >= 0.25  # it really waited for the replica to catch up
    assert db.routed["fresh:replica"] == 1 and db.routed["fresh:fallback"] == 0


async def test_reader_fresh_reads_the_primary_when_the_replica_is_too_slow(db: Database, pair: Any) -> None:
    db.replica_set.fresh_wait_s = 0.2  # type: ignore[union-attr]

    async def request() -> tuple[str, bool]:
        pair.pause()
        await db.write(add, "slow")
        return await db.read_fresh(find, "slow")  # type: ignore[no-any-return]

    started = time.monotonic()
    assert await in_fresh_request(request()) == ("primary", True)
    assert 0.15 < time.monotonic() - started < 2.5
    assert db.routed["fresh:fallback"] == 1


async def test_reader_fresh_without_an_earlier_write_reads_the_primary(db: Database) -> None:
    async def request() -> tuple[str, bool]:
        return await db.read_fresh(find, "nothing")  # type: ignore[no-any-return]

    assert await in_fresh_request(request()) == ("primary", False)


async def test_a_lagging_replica_leaves_the_rotation_and_comes_back(db: Database, pair: Any) -> None:
    await db.write(add, "before")
    pair.wait_caught_up()
    pair.pause()
    await db.write(add, "during")
    await asyncio.sleep(1.6)  # past the 1 s lag limit
    if isinstance(pair, MariaDBPair):
        await db.write(add, "during-2")  # Seconds_Behind_Master counts from the oldest unapplied event
    db.check_replicas()
    [status] = db.replica_status()
    assert status["healthy"] is False and status["reason"], status
    assert await db.read(find, "during") == ("primary", True)  # the request still succeeds, on the primary

    pair.resume()
    pair.wait_caught_up()
    db.check_replicas()
    assert db.replica_status()[0]["healthy"] is True
    assert await db.read(find, "during") == ("replica", True)


async def test_mariadb_replica_lag_in_seconds_is_measured(mariadb_pair: MariaDBPair) -> None:
    """A delayed MariaDB replica (MASTER_DELAY) still replicates; its lag in seconds takes it out."""
    database = Database(mariadb_pair.primary_url, replica_urls=[mariadb_pair.replica_url], replica_max_lag_s=1.0,
                        replica_check_s=3600)
    meta.create_all(database.primary)
    r = mariadb_pair
    try:
        r.wait_caught_up()
        r.sql("r", "STOP SLAVE")
        r.sql("r", "CHANGE MASTER TO MASTER_DELAY=30")
        r.sql("r", "START SLAVE")
        await database.write(add, "delayed")
        await asyncio.sleep(2.2)
        database.check_replicas()
        [status] = database.replica_status()
        assert status["healthy"] is False and status["lag_s"] is not None and status["lag_s"] >= 1.0, status
        assert "lagging" in status["reason"]
        assert await database.read(find, "delayed") == ("primary", True)
    finally:
        r.sql("r", "STOP SLAVE")
        r.sql("r", "CHANGE MASTER TO MASTER_DELAY=0")
        r.sql("r", "START SLAVE")
        r.wait_caught_up()
        meta.drop_all(database.primary)
        database.dispose()


async def test_a_stopped_replica_is_taken_out_and_put_back(db: Database, pair: Any) -> None:
    await db.write(add, "kept")
    pair.wait_caught_up()
    assert await db.read(find, "kept") == ("replica", True)
    pair.stop_replica()
    try:
        started = time.monotonic()
        assert await db.read(find, "kept") == ("primary", True)  # the read fails over, the request succeeds
        assert time.monotonic() - started < 3.0
        assert db.replica_status()[0]["healthy"] is False
        assert await db.read(find, "kept") == ("primary", True)  # and it stays out, no retry per read
        db.check_replicas()
        assert db.replica_status()[0]["reason"].startswith("unreachable")
    finally:
        pair.start_replica()
    pair.wait_caught_up()
    db.check_replicas()
    assert db.replica_status()[0]["healthy"] is True
    assert await db.read(find, "kept") == ("replica", True)


async def test_with_no_replica_everything_goes_to_the_primary(pair: Any) -> None:
    database = Database(pair.primary_url)
    meta.create_all(database.primary)
    try:
        await database.write(add, "solo")
        assert await database.read(find, "solo") == ("primary", True)
        assert await database.read_fresh(find, "solo") == ("primary", True)
        assert database.write_position() is None and database.replica_status() == []
    finally:
        meta.drop_all(database.primary)
        database.dispose()


async def test_a_cloud_on_a_primary_and_replica_boots_with_reads_on_the_replica(pair: Any, tmp_path: Path) -> None:
    from canopy.allinone import AllInOne
    from canopy.api.app import build_app
    from tests.clouds import ApiClient, V, make_settings, server_body, wait_for_server

    name = f"cloud_{uuid.uuid4().hex[:8]}"
    primary = pair.create_database(name)
    settings = make_settings(tmp_path)
    settings.database.global_url = settings.database.cell_url = primary
    settings.database.replica_urls = [pair.url("r", name)]
    settings.fake.spawn_delay_s = settings.fake.op_delay_s = 0.0
    settings.conductor.stop_timeout_s = 0.5
    aio = AllInOne(settings, hosts=2, serve_http=False)
    await aio.start()
    api = ApiClient(build_app(aio.cloud))
    try:
        pair.wait_caught_up()
        # The replica left the rotation if the cloud's first check ran before the new database reached it
        # (PostgreSQL replays the CREATE DATABASE a little later): check again now that it has caught up.
        aio.cloud.dbs.global_db.check_replicas()  # type: ignore[union-attr]
        assert aio.cloud.dbs.global_db.replica_status()[0]["healthy"] is True  # type: ignore[union-attr]
        resp = await api.post("/compute/v2.1/servers", json=server_body(name="on-replicas"), headers=V)
        assert resp.status_code == 202, resp.text
        sid = resp.json()["server"]["id"]
        server = await wait_for_server(api, sid, {"ACTIVE", "ERROR"}, timeout=30)
        assert server["status"] == "ACTIVE", server
        pair.wait_caught_up()  # a list is a plain read: it may be a few milliseconds behind
        listed = (await api.get("/compute/v2.1/servers")).json()["servers"]
        assert sid in {s["id"] for s in listed}
        db = aio.cloud.dbs.global_db  # type: ignore[union-attr]
        assert db.replicas and db.routed["reader:replica"] > 0, db.routed
        assert db.replica_status()[0]["healthy"] is True
    finally:
        await api.http.aclose()
        await aio.stop()
        pair.sql("p", f"DROP DATABASE {name}")
