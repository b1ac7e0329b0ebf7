"""Read replicas: which one serves a read, how far behind each is, and read-your-writes by position.

    replica set ── pick() ──► a healthy replica, round robin (None: read the primary)
        │  every check_s, on whichever thread reads first:
        └─ measure_lag() per replica → in rotation while lag ≤ max_lag_s; out when lagging or down

A write remembers the primary's position after its commit (MariaDB `@@last_gtid`, PostgreSQL
`pg_current_wal_lsn()`); a `reader_fresh` read first waits, on the replica it was given, until the
replica has applied that position (`MASTER_GTID_WAIT`, or `pg_last_wal_replay_lsn()` catching up),
and reads the primary instead when that takes longer than `fresh_wait_s`.

The helpers here run on the DBAPI connection underneath SQLAlchemy's, so the positions and waits
are not counted among the caller's statements (a query budget counts what the code asks for).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

log = logging.getLogger("canopy.db.replicas")


def _dbapi(conn: Connection) -> Any:
    """The DBAPI connection under a checked-out SQLAlchemy one (present while the connection is open)."""
    raw = conn.connection.dbapi_connection
    assert raw is not None, "an open connection has its DBAPI connection"
    return raw


def _scalar(conn: Connection, sql: str, *params: Any) -> Any:
    """One value from a statement run straight on the DBAPI connection (uncounted)."""
    cur = _dbapi(conn).cursor()
    try:
        cur.execute(sql, params or None)
        row = cur.fetchone()
        return None if row is None else (row[0] if not isinstance(row, dict) else next(iter(row.values())))
    finally:
        cur.close()


def read_position(conn: Connection, dialect: str) -> str | None:
    """The primary's replication position right after this connection's last commit."""
    if dialect in ("mysql", "mariadb"):
        gtid = _scalar(conn, "SELECT @@last_gtid")  # empty inside a transaction: read it after COMMIT
        return str(gtid) if gtid else None
    if dialect == "postgresql":
        # the insert position, not the write one: under synchronous_commit=off the commit may not be written yet
        return str(_scalar(conn, "SELECT pg_current_wal_insert_lsn()::text"))
    return None


def wait_for_position(conn: Connection, dialect: str, position: str, timeout_s: float) -> bool:
    """Wait on a replica's connection until it has applied `position`; False if `timeout_s` passed first."""
    if dialect in ("mysql", "mariadb"):
        return bool(_scalar(conn, "SELECT MASTER_GTID_WAIT(%s, %s)", position, timeout_s) == 0)  # -1: timed out
    if dialect == "postgresql":
        deadline = time.monotonic() + timeout_s
        pause = 0.0005
        while not _scalar(conn, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", position):
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.01)  # a replica a few ms behind answers within a poll or two
        return True
    return True


def measure_lag(conn: Connection, dialect: str) -> float | None:
    """Seconds the replica is behind its primary; None when it is not replicating at all."""
    if dialect in ("mysql", "mariadb"):
        cur = _dbapi(conn).cursor()
        try:
            cur.execute("SHOW SLAVE STATUS")
            row = cur.fetchone()
            if row is None:
                return None
            status = dict(zip([d[0] for d in cur.description], row, strict=False))
        finally:
            cur.close()
        lag = status.get("Seconds_Behind_Master")  # NULL while the SQL thread is stopped
        running = status.get("Slave_SQL_Running") == "Yes"
        return float(lag) if lag is not None and running else None
    if dialect == "postgresql":
        if not _scalar(conn, "SELECT pg_is_in_recovery()"):
            return None  # promoted, or never a standby: it no longer follows the primary
        # Caught up (all received WAL replayed) reads as 0 however old the last transaction is.
        return float(_scalar(
            conn,
            "SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0"
            " ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END",
        ))
    return 0.0


def next_health(healthy: bool, lag_s: float | None, max_lag_s: float) -> bool:
    """Whether a replica is in rotation after a check, from whether it was and its measured lag.

    Out past `max_lag_s` (or when not replicating); back only once under half of it, so a replica
    hovering near the threshold does not flap in and out on every check.
    """
    if lag_s is None:
        return False
    return lag_s <= max_lag_s if healthy else lag_s <= max_lag_s / 2


@dataclass(eq=False)
class Replica:
    """One replica: its engine and what the last check found."""

    name: str
    engine: Engine
    healthy: bool = True
    lag_s: float | None = 0.0
    reason: str = ""
    checked_at: float = 0.0
    reads: int = 0


@dataclass(eq=False)
class ReplicaSet:
    """The replicas of one primary, with the rotation of those fit to serve reads."""

    replicas: list[Replica]
    dialect: str
    max_lag_s: float = 5.0
    fresh_wait_s: float = 0.5
    check_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _rr: itertools.count[int] = field(default_factory=itertools.count)
    _checking: threading.Lock = field(default_factory=threading.Lock)
    _next_check: float = 0.0

    @classmethod
    def from_urls(cls, urls: list[str], make_engine: Callable[[str], Engine], **kwargs: Any) -> ReplicaSet:
        """A set over engines made from `urls` (all of one dialect, the primary's)."""
        engines = [make_engine(url) for url in urls]
        replicas = [Replica(make_url(url).render_as_string(hide_password=True), e) for url, e in zip(urls, engines,
                                                                                                      strict=True)]
        return cls(replicas, engines[0].dialect.name, **kwargs)

    def pick(self) -> Replica | None:
        """A replica in rotation (round robin), checking health first when a check is due."""
        self.maybe_check()
        live = [r for r in self.replicas if r.healthy]
        if not live:
            return None
        return live[next(self._rr) % len(live)]

    def maybe_check(self) -> None:
        """Check every replica if the interval has passed; a reader arriving mid-check does not wait."""
        if self.clock() < self._next_check or not self._checking.acquire(blocking=False):
            return
        try:
            if self.clock() >= self._next_check:
                self.check_all()
        finally:
            self._checking.release()

    def check_all(self) -> None:
        """Measure every replica's lag now and update the rotation."""
        for replica in self.replicas:
            self.check(replica)
        self._next_check = self.clock() + self.check_s

    def check(self, replica: Replica) -> None:
        """Measure one replica and take it out of rotation or put it back."""
        try:
            with replica.engine.connect() as conn:
                lag = measure_lag(conn, self.dialect)
            reason = "" if lag is not None else "not replicating"
        except Exception as exc:  # down, refusing connections, or not answering within connect_timeout
            lag, reason = None, f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        was = replica.healthy
        replica.lag_s, replica.checked_at = lag, self.clock()
        replica.healthy = next_health(was, lag, self.max_lag_s)
        if lag is not None and not replica.healthy:
            reason = f"lagging {lag:.1f}s (limit {self.max_lag_s}s)"
        replica.reason = reason
        if was != replica.healthy:
            log.warning("replica %s %s%s", replica.name, "back in rotation" if replica.healthy else "out of rotation",
                        f": {reason}" if reason else "")

    def mark_down(self, replica: Replica, reason: str) -> None:
        """Take a replica out now (a read on it failed); the next check may put it back."""
        if replica.healthy:
            log.warning("replica %s out of rotation: %s", replica.name, reason)
        replica.healthy, replica.lag_s, replica.reason = False, None, reason

    def status(self) -> list[dict[str, Any]]:
        """Each replica's state, for health checks and metrics."""
        return [{"name": r.name, "healthy": r.healthy, "lag_s": r.lag_s, "reason": r.reason, "reads": r.reads}
                for r in self.replicas]

    def dispose(self) -> None:
        for replica in self.replicas:
            replica.engine.dispose()
