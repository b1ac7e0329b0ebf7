"""/healthcheck against a real database server that the test starts, stops and starts again: a private
MariaDB and a private PostgreSQL (each in a temp folder, on a port of its own, stopped by its PID)."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.clouds import ApiClient, free_port, make_settings


class MariaDB:
    """A throwaway mariadbd: install-db once, then start/stop as often as the test wants."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={folder / 'data'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/canopy"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--user=root", f"--datadir={self.folder / 'data'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.folder / 'm.sock'}", "--skip-name-resolve",
             f"--log-error={self.folder / 'error.log'}", "--innodb-buffer-pool-size=32M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_connectable(f"mysql+pymysql://root@127.0.0.1:{self.port}/mysql", self.proc, self.folder / "error.log")
        engine = create_engine(f"mysql+pymysql://root@127.0.0.1:{self.port}/mysql", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE IF NOT EXISTS canopy"))
        engine.dispose()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        self.proc = None


class PostgreSQL:
    """A throwaway PostgreSQL cluster run as the postgres user (it refuses root), stopped by its PID; with
    `standby_of`, a streaming replica of that one (pg_basebackup -R)."""

    def __init__(self, folder: Path, standby_of: PostgreSQL | None = None) -> None:
        self.folder, self.port = folder, free_port()
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.proc: subprocess.Popen[bytes] | None = None
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        if standby_of is None:
            self._as_postgres(f"{self.bin}/initdb", "-D", str(folder / "data"), "--auth=trust", "--no-sync",
                              "-U", "postgres")
        else:
            self._as_postgres(f"{self.bin}/pg_basebackup", "-h", "127.0.0.1", "-p", str(standby_of.port), "-U",
                              "postgres", "-D", str(folder / "data"), "-R", "-X", "stream", "-c", "fast")

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        with (self.folder / "pg.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["runuser", "-u", "postgres", "--", f"{self.bin}/postgres", "-D", str(self.folder / "data"),
                 "-p", str(self.port), "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=subprocess.DEVNULL, stderr=log)
        _wait_connectable(self.url, self.proc, self.folder / "pg.log")

    def stop(self) -> None:
        if self.proc is None:
            return
        pidfile = self.folder / "data" / "postmaster.pid"
        if pidfile.exists():  # the postmaster (runuser's child): fast shutdown by its PID
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
        self.proc.wait(60)
        self.proc = None


def _wait_connectable(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"database server did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.1)
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=["mariadb", "postgresql"])
async def server_and_cloud(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    """A private database server, and a whole cloud (one fake agent) migrated and seeded on it."""
    from canopy.allinone import AllInOne
    from canopy.api.app import build_app

    folder = Path(tempfile.mkdtemp(prefix="canopy-hc-", dir="/tmp"))
    folder.chmod(0o755)
    (folder / "db").mkdir()
    server = (MariaDB if request.param == "mariadb" else PostgreSQL)(folder / "db")
    aio = None
    try:
        server.start()
        settings = make_settings(folder / "data")
        settings.database.global_url = settings.database.cell_url = server.url
        settings.fake.spawn_delay_s = settings.fake.op_delay_s = 0.0
        aio = AllInOne(settings, hosts=1, serve_http=False)
        await aio.start()
        aio.api = ApiClient(build_app(aio.cloud))  # type: ignore[attr-defined]
        yield server, aio
    finally:
        if aio is not None and aio.cloud is not None:
            if server.proc is None:
                server.start()  # the cloud's last heartbeat flush needs its database
            await aio.api.http.aclose()  # type: ignore[attr-defined]
            await aio.stop()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("server_and_cloud", ["postgresql"], indirect=True)  # a replica in two seconds
async def test_replicas_are_reported_with_their_lag_and_do_not_fail_the_check(
        server_and_cloud: tuple[Any, Any]) -> None:
    server, aio = server_and_cloud
    (server.folder.parent / "replica").mkdir()
    replica = PostgreSQL(server.folder.parent / "replica", standby_of=server)
    engine = create_engine(replica.url)
    db = aio.cloud.dbs.default_cell
    db.replicas.append(engine)
    try:
        replica.start()
        detail = (await aio.api.get("/healthcheck?detail")).json()
        found = [r for r in detail["reasons"] if r["class"] == "DatabaseReplicaCheck"]
        assert len(found) == 1 and found[0]["reason"] == "OK" and found[0]["lag_s"] is not None, found
        assert found[0]["required"] is False and "behind" in found[0]["details"]
        replica.stop()
        resp = await aio.api.get("/healthcheck?detail")
        assert resp.status_code == 200, "a replica down is reported, not fatal: reads go to the primary"
        found = [r for r in resp.json()["reasons"] if r["class"] == "DatabaseReplicaCheck"]
        assert found[0]["reason"] == "FAILED" and "replica unreachable" in found[0]["details"], found
    finally:
        db.replicas.remove(engine)
        engine.dispose()
        replica.stop()


async def _poll(api: ApiClient, status: int, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        resp = await api.http.get("/healthcheck")
        if resp.status_code == status or time.monotonic() > deadline:
            return resp
        await asyncio.sleep(0.2)


async def test_healthcheck_is_503_while_the_database_server_is_stopped(server_and_cloud: tuple[Any, Any]) -> None:
    server, aio = server_and_cloud
    api = aio.api
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(aio.cloud.dbs.default_cell.primary)
               .get_indexes("instances")}
    assert indexes["ix_instances_task_state"] == ["task_state", "updated_at"], "the sweeper's index is migrated"
    assert (await _poll(api, 200, 10)).text == "OK"

    server.stop()
    down = await _poll(api, 503, 10)
    assert down.status_code == 503, down.text
    assert down.text.startswith("database:global+cell:cell1: primary unreachable: "), down.text
    assert (await api.http.head("/healthcheck")).status_code == 503

    server.start()
    back = await _poll(api, 200, 30)
    assert back.status_code == 200 and back.text == "OK", back.text
    # and the api's own pooled connections recover too
    assert (await api.get("/compute/v2.1/servers")).status_code == 200
