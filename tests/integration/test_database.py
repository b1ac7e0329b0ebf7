"""Migrations and the database contexts on SQLite, MariaDB and PostgreSQL (the last two must be running)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select

from canopy.db import tables_cell, tables_global
from canopy.db.engine import Database, Databases
from canopy.db.migrate import current_revision, head_revision, upgrade_all
from tests.databases import MARIADB_SERVER, POSTGRES_SERVER, fresh_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server, admin = (MARIADB_SERVER, "test") if request.param == "mariadb" else (POSTGRES_SERVER, "test")
    yield from fresh_database(server, admin)


def test_migrations_apply_from_empty_and_twice(empty_url: str) -> None:
    dbs = Databases.from_urls(empty_url, {"cell1": empty_url})
    try:
        upgrade_all(dbs)
        upgrade_all(dbs)
        engine = dbs.global_db.primary
        assert current_revision(engine, "global") == head_revision("global")
        assert current_revision(engine, "cell") == head_revision("cell")
        tables = set(inspect(engine).get_table_names())
        assert set(tables_global.metadata.tables) <= tables
        assert set(tables_cell.metadata.tables) <= tables
    finally:
        dbs.dispose()


def test_canopy_db_upgrade_command_is_idempotent(empty_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "CANOPY_DATABASE__GLOBAL_URL": empty_url, "CANOPY_DATABASE__CELL_URL": empty_url}
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "canopy.cli", "db", "upgrade", "--data-dir", str(tmp_path)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert head_revision("global") in proc.stdout and head_revision("cell") in proc.stdout


def test_global_and_cell_tables_can_live_in_different_databases(tmp_path: Path) -> None:
    g_url, c_url = f"sqlite:///{tmp_path / 'global.db'}", f"sqlite:///{tmp_path / 'cell.db'}"
    dbs = Databases.from_urls(g_url, {"cell1": c_url})
    try:
        upgrade_all(dbs)
        assert "instances" not in inspect(dbs.global_db.primary).get_table_names()
        assert "projects" not in inspect(dbs.cell("cell1").primary).get_table_names()
    finally:
        dbs.dispose()


async def test_writer_commits_and_rolls_back(empty_url: str) -> None:
    dbs = Databases.from_urls(empty_url, {"cell1": empty_url})
    upgrade_all(dbs)
    db: Database = dbs.global_db
    roles = tables_global.roles
    try:
        await db.write(lambda conn: conn.execute(roles.insert().values(id="r1", name="one")))
        with pytest.raises(RuntimeError):
            def fail(conn: Any) -> None:
                conn.execute(roles.insert().values(id="r2", name="two"))
                raise RuntimeError("boom")
            await db.write(fail)
        names = await db.read_fresh(lambda conn: sorted(conn.execute(select(roles.c.name)).scalars()))
        assert names == ["one"]
        assert await db.read(lambda conn: conn.execute(select(roles.c.id)).scalar()) == "r1"
    finally:
        dbs.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    with db.reader() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.dispose()
