"""Throwaway database primaries with one streaming replica each, for tests and bench/db.py.

    with MariaDBPair.start(tmp) as pair:        # two mariadbd processes, GTID replication
        pair.primary_url, pair.replica_url
        pair.pause(); pair.resume()              # the replica stops applying (lags), then catches up
        pair.stop_replica(); pair.start_replica()
    with PostgresPair.start() as pair:          # initdb + pg_basebackup -R, run as the postgres user

Each pair lives in its own folder, on free loopback ports, and is stopped by the PIDs it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

REPL_PASSWORD = "repl-secret"


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on :{port} exited: {log.read_text()[-2000:] if log.exists() else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server on :{port} did not listen within {timeout}s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class MariaDBPair:
    """A MariaDB primary and a replica following it by GTID, each its own `mariadbd`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {"p": free_port(), "r": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes] | None] = {"p": None, "r": None}
        self.database = "canopy"

    @classmethod
    def start(cls, root: Path, database: str = "canopy") -> MariaDBPair:
        """Initialize both data folders, start both servers, create `database` and start replication."""
        pair = cls(root)
        pair.database = database
        try:
            pair._init()
        except BaseException:
            pair.close()
            raise
        return pair

    def _init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.root / 'p'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)
        shutil.copytree(self.root / "p", self.root / "r")
        self._run("p")
        self._run("r")
        self.sql("p", f"CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '{REPL_PASSWORD}'")
        self.sql("p", "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
        self.sql("r", f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.ports['p']}, "
                      f"MASTER_USER='repl', MASTER_PASSWORD='{REPL_PASSWORD}', MASTER_USE_GTID=slave_pos, "
                      "MASTER_CONNECT_RETRY=1")
        self.sql("r", "START SLAVE")
        self.sql("p", f"CREATE DATABASE {self.database}")
        self.wait_caught_up()

    def _run(self, role: str) -> None:
        d = self.root
        args = ["mariadbd", "--no-defaults", "--user=root", f"--datadir={d / role}", f"--port={self.ports[role]}",
                "--bind-address=127.0.0.1", f"--socket={d / role}.sock", f"--pid-file={d / role}.pid",
                f"--server-id={1 if role == 'p' else 2}", "--log-bin=mysql-bin", "--binlog-format=ROW",
                "--skip-name-resolve", f"--log-error={d / role}.err", "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0",
                "--log-slave-updates=1"]
        if role == "r":
            args += ["--read-only=1", "--skip-slave-start=0"]
        self.procs[role] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.ports[role], self.procs[role], d / f"{role}.err")  # type: ignore[arg-type]

    def url(self, role: str, database: str | None = None) -> str:
        """A SQLAlchemy URL for one side (`p` or `r`)."""
        return f"mysql+pymysql://root@127.0.0.1:{self.ports[role]}/{database or self.database}"

    @property
    def primary_url(self) -> str:
        return self.url("p")

    @property
    def replica_url(self) -> str:
        return self.url("r")

    def sql(self, role: str, statement: str) -> list[dict[str, Any]]:
        """Run one statement as root on one side and return its rows."""
        conn = pymysql.connect(host="127.0.0.1", port=self.ports[role], user="root", autocommit=True,
                               cursorclass=pymysql.cursors.DictCursor, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """Another database on the pair (replicated like everything); returns its primary URL."""
        self.sql("p", f"CREATE DATABASE {name}")
        return self.url("p", name)

    def wait_caught_up(self, timeout: float = 20.0) -> None:
        """Block until the replica has applied everything the primary committed."""
        gtid = self.sql("p", "SELECT @@gtid_binlog_pos AS g")[0]["g"]
        if gtid:
            got = self.sql("r", f"SELECT MASTER_GTID_WAIT('{gtid}', {timeout}) AS w")[0]["w"]
            if got != 0:
                raise RuntimeError(f"replica did not reach {gtid} in {timeout}s")

    def pause(self) -> None:
        """Stop applying changes on the replica (it still answers, and falls behind)."""
        self.sql("r", "STOP SLAVE SQL_THREAD")

    def resume(self) -> None:
        self.sql("r", "START SLAVE SQL_THREAD")

    def stop_replica(self) -> None:
        """Stop the replica server (connections to it are refused)."""
        _stop(self.procs["r"])
        self.procs["r"] = None

    def start_replica(self) -> None:
        """Start the replica server again; replication resumes where it stopped."""
        self._run("r")
        self.sql("r", "START SLAVE")

    def close(self) -> None:
        """Stop both servers and remove their folders."""
        for role in ("r", "p"):
            _stop(self.procs[role])
            self.procs[role] = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> MariaDBPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PostgresPair:
    """A PostgreSQL primary and a hot-standby replica made by `pg_basebackup -R`."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {"p": free_port(), "r": free_port()}
        self.started: dict[str, bool] = {"p": False, "r": False}
        self.database = "canopy"

    @classmethod
    def start(cls, database: str = "canopy") -> PostgresPair:
        """initdb, start the primary, clone the replica with pg_basebackup -R, start it, create `database`.

        Its folder is a new one directly under /tmp: the postgres user must reach it, and pytest's own
        temp folders are private to root."""
        pair = cls(Path(tempfile.mkdtemp(prefix="canopy-pg-", dir="/tmp")))
        pair.database = database
        try:
            pair._init()
        except BaseException:
            pair.close()
            raise
        return pair

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check, capture_output=True)

    def _bin(self, name: str) -> str:
        found = self.BIN / name
        return str(found) if found.exists() else name

    def _init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        p = self.root / "p"
        self._as_postgres(self._bin("initdb"), "--auth=trust", "--no-sync", "-U", "postgres", "-D", str(p))
        with (p / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.ports['p']}\nlisten_addresses = '127.0.0.1'\nwal_level = replica\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "shared_buffers = 64MB\nmax_wal_senders = 4\nhot_standby_feedback = on\n")
        with (p / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        self._ctl("p", "start")
        self._as_postgres(self._bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.ports["p"]), "-U", "postgres",
                          "-D", str(self.root / "r"), "-R", "-X", "stream", "-c", "fast")
        with (self.root / "r" / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.ports['r']}\nwal_receiver_status_interval = 1s\n")
        self._ctl("r", "start")
        self.sql("p", f"CREATE DATABASE {self.database}")
        self.wait_caught_up()

    def _ctl(self, role: str, action: str) -> None:
        args = [self._bin("pg_ctl"), "-D", str(self.root / role), "-l", str(self.root / f"{role}.log"),
                "-w", "-t", "30"]
        if action == "stop":
            args += ["-m", "fast"]
        self._as_postgres(*args, action)
        self.started[role] = action == "start"

    def url(self, role: str, database: str | None = None) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.ports[role]}/{database or self.database}"

    @property
    def primary_url(self) -> str:
        return self.url("p")

    @property
    def replica_url(self) -> str:
        return self.url("r")

    def sql(self, role: str, statement: str, database: str = "postgres") -> list[dict[str, Any]]:
        """Run one statement on one side (autocommit) and return its rows."""
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(host="127.0.0.1", port=self.ports[role], user="postgres", dbname=database,
                             autocommit=True, connect_timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(statement)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str) -> str:
        self.sql("p", f"CREATE DATABASE {name}")
        return self.url("p", name)

    def wait_caught_up(self, timeout: float = 20.0) -> None:
        lsn = self.sql("p", "SELECT pg_current_wal_insert_lsn()::text AS l")[0]["l"]
        deadline = time.monotonic() + timeout
        while not self.sql("r", f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn AS ok")[0]["ok"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica did not reach {lsn} in {timeout}s")
            time.sleep(0.02)

    def pause(self) -> None:
        """Pause WAL replay on the replica (it still answers, and falls behind)."""
        self.sql("r", "SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self.sql("r", "SELECT pg_wal_replay_resume()")

    def stop_replica(self) -> None:
        self._ctl("r", "stop")

    def start_replica(self) -> None:
        self._ctl("r", "start")

    def close(self) -> None:
        for role in ("r", "p"):
            if self.started[role]:
                with contextlib.suppress(subprocess.CalledProcessError):
                    self._ctl(role, "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
