"""Engines and the three ways to reach the database: `writer`, `reader` and `reader_fresh`.

Every access declares what it needs. Today all three may point at one engine; a deployment with
replicas routes `reader` to them without touching a caller. Transactions are plain synchronous
functions of a `Connection`: `await db.write(fn)` runs one on the event loop (SQLite, where a
statement costs microseconds) or in a thread pool (a networked server), as configured.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from canopy.context import statement_origin
from canopy.db.replicas import Replica, ReplicaSet, read_position, wait_for_position
from canopy.private_files import touch_private

T = TypeVar("T")


class StatementCounter:
    """Counts the SQL statements an engine runs, by origin."""

    def __init__(self) -> None:
        self.by_origin: Counter[str] = Counter()

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.by_origin[statement_origin.get()] += 1

    @property
    def total(self) -> int:
        return sum(self.by_origin.values())


def normalize_url(url: str) -> str:
    """Pick the drivers Canopy ships with for the plain `mysql://`/`postgresql://` schemes."""
    parsed = make_url(url)
    driver = {"mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql", "postgresql": "postgresql+psycopg"}
    if parsed.drivername in driver:
        parsed = parsed.set(drivername=driver[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, pool_size: int = 10, echo: bool = False, connect_timeout: int | None = None) -> Engine:
    """An engine with the settings each backend needs (SQLite: WAL, a busy timeout, foreign keys)."""
    url = normalize_url(url)
    json_args = {"json_serializer": _json_serializer, "json_deserializer": orjson.loads}
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        database = make_url(url).database
        if not memory and database and not database.startswith("file:"):
            touch_private(Path(database))  # password hashes, user_data, key pairs: 0600 from the first byte
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=None if not memory else NullPool,
            **json_args,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": True}
    if connect_timeout is not None:  # replicas: a dead one must cost a read seconds at most, then the primary
        kwargs["connect_args"] = {"connect_timeout": connect_timeout}
    if url.startswith(("mysql", "mariadb")):
        kwargs["isolation_level"] = "READ COMMITTED"
        kwargs["pool_recycle"] = 3600
    return create_engine(url, echo=echo, **kwargs, **json_args)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy issue BEGIN itself, so a transaction starts where the code says it does.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front: two writers never deadlock upgrading a read lock.
    # Sent on the driver connection so that it is not counted as one of the caller's statements.
    driver = conn.connection.driver_connection
    assert driver is not None, "a connection that begins a transaction is open"
    driver.execute("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")


Mode = Literal["writer", "reader", "reader_fresh"]

# This request's position on each primary (by URL) after its last write there, set by `writer`: what
# a later `reader_fresh` of the same request must see. A new dict on each write, so tasks never share one.
_write_positions: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "db_write_positions", default=None)
# What a replica read that fails with these gets: the primary, and the replica leaves the rotation.
_REPLICA_FAILURES = (sa_exc.OperationalError, sa_exc.InterfaceError)


class Database:
    """One logical database (the global one, or one cell's): a primary and optional replicas."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        execution: Literal["auto", "inline", "thread"] = "auto",
        echo: bool = False,
        replica_urls: list[str] | tuple[str, ...] = (),
        replica_max_lag_s: float = 5.0,
        fresh_wait_s: float = 0.5,
        replica_check_s: float = 2.0,
    ) -> None:
        self.url = normalize_url(url)
        self.primary = make_engine(self.url, pool_size=pool_size, echo=echo)
        self.counter = StatementCounter()  # every statement, wherever it ran
        self.primary_counter = StatementCounter()  # those the primary ran
        self.routed: Counter[str] = Counter()  # transactions by mode and the engine that served them
        event.listen(self.primary, "before_cursor_execute", self.counter)
        event.listen(self.primary, "before_cursor_execute", self.primary_counter)
        self.replica_set: ReplicaSet | None = None
        if replica_urls:
            self.replica_set = ReplicaSet.from_urls(
                [normalize_url(u) for u in replica_urls],
                lambda u: make_engine(u, pool_size=pool_size, echo=echo, connect_timeout=2),
                max_lag_s=replica_max_lag_s, fresh_wait_s=fresh_wait_s, check_s=replica_check_s)
            for replica in self.replica_set.replicas:
                event.listen(replica.engine, "before_cursor_execute", self.counter)
        self.replicas: list[Engine] = [r.engine for r in self.replica_set.replicas] if self.replica_set else []
        if execution == "auto":
            execution = "inline" if self.is_sqlite else "thread"
        self.inline = execution == "inline"
        self._pool = None if self.inline else ThreadPoolExecutor(pool_size, thread_name_prefix="db")

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def dialect(self) -> str:
        return self.primary.dialect.name

    def _engine_for(self, mode: Mode) -> Engine:
        """The engine a transaction of this mode would use now (the primary when no replica fits)."""
        if mode == "writer" or self.replica_set is None:
            return self.primary
        replica = self.replica_set.pick()
        return replica.engine if replica is not None else self.primary

    @contextmanager
    def writer(self) -> Iterator[Connection]:
        """A read-write transaction on the primary, committed when the block ends without error."""
        self.routed["writer"] += 1
        with self.primary.connect() as conn:
            conn.info["write"] = True
            try:
                with conn.begin():
                    yield conn
                if self.replica_set is not None:  # after COMMIT: the position that includes this write
                    self._remember(read_position(conn, self.dialect))
            finally:
                conn.info["write"] = False

    def _remember(self, position: str | None) -> None:
        if position:
            _write_positions.set({**(_write_positions.get() or {}), self.url: position})

    def write_position(self) -> str | None:
        """This request's position on the primary after its last write (None: it wrote nothing here)."""
        return (_write_positions.get() or {}).get(self.url)

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        """A read-only transaction that may be served by a replica a little behind the primary."""
        with self._read(fresh=False, used=[]) as conn:
            yield conn

    @contextmanager
    def reader_fresh(self) -> Iterator[Connection]:
        """A read-only transaction that sees this request's earlier writes (and, with no replica, all)."""
        with self._read(fresh=True, used=[]) as conn:
            yield conn

    @contextmanager
    def _read(self, fresh: bool, used: list[Replica]) -> Iterator[Connection]:
        """A read on a replica when one fits (appended to `used`), else on the primary."""
        kind = "fresh" if fresh else "reader"
        conn = self._replica_connection(fresh, used) if self.replica_set is not None else None
        if conn is None:
            self.routed[f"{kind}:primary"] += 1
            with self.primary.connect() as conn, conn.begin():
                yield conn
            return
        self.routed[f"{kind}:replica"] += 1
        used[0].reads += 1
        with conn, conn.begin():
            yield conn

    def _replica_connection(self, fresh: bool, used: list[Replica]) -> Connection | None:
        assert self.replica_set is not None
        position = self.write_position() if fresh else None
        if fresh and position is None:
            return None  # nothing known to wait for: only the primary is sure to hold what came before
        replica = self.replica_set.pick()
        if replica is None:
            return None
        try:
            conn = replica.engine.connect()
        except _REPLICA_FAILURES as exc:
            self.replica_set.mark_down(replica, f"connect failed: {type(exc.orig).__name__}")
            return None
        try:
            if position is not None and not wait_for_position(conn, self.dialect, position,
                                                              self.replica_set.fresh_wait_s):
                conn.close()
                self.routed["fresh:fallback"] += 1
                return None
        except _REPLICA_FAILURES as exc:
            conn.close()
            self.replica_set.mark_down(replica, f"wait failed: {type(exc.orig).__name__}")
            return None
        used.append(replica)
        return conn

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args)` in a writer transaction."""

        def unit() -> T:
            with self.writer() as conn:
                return fn(conn, *args, **kwargs)

        return await self._run(unit)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args)` in a reader transaction."""
        return await self._run(functools.partial(self._read_retrying, False, fn, args, kwargs))

    async def read_fresh(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args)` in a reader_fresh transaction."""
        return await self._run(functools.partial(self._read_retrying, True, fn, args, kwargs))

    def _read_retrying(self, fresh: bool, fn: Callable[..., T], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> T:
        """A read; if the replica serving it fails mid-way, the replica leaves and the primary answers."""
        used: list[Replica] = []
        try:
            with self._read(fresh, used) as conn:
                return fn(conn, *args, **kwargs)
        except _REPLICA_FAILURES as exc:
            if not used or self.replica_set is None:
                raise
            self.replica_set.mark_down(used[0], f"read failed: {type(exc.orig).__name__}")
        self.routed["fresh:primary" if fresh else "reader:primary"] += 1
        with self.primary.connect() as conn, conn.begin():
            return fn(conn, *args, **kwargs)

    async def _run(self, unit: Callable[[], T]) -> T:
        if self.inline:
            return unit()
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, functools.partial(ctx.run, unit))
        if self.replica_set is not None and ctx.get(_write_positions) is not _write_positions.get():
            _write_positions.set(ctx.get(_write_positions))  # the write ran in a copy of our context
        return result

    def replica_status(self) -> list[dict[str, Any]]:
        """Each replica's state (healthy, lag, why it is out); empty with no replica."""
        return self.replica_set.status() if self.replica_set is not None else []

    def check_replicas(self) -> None:
        """Measure every replica's lag now and update the rotation (normally done every few seconds)."""
        if self.replica_set is not None:
            self.replica_set.check_all()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.primary.dispose()
        if self.replica_set is not None:
            self.replica_set.dispose()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class Databases:
    """The global database and the cells' databases (one object per distinct URL)."""

    def __init__(self, global_db: Database, cells: dict[str, Database], **options: Any) -> None:
        self.global_db = global_db
        self.cells = cells
        self.options = options  # how each Database was made: a cell registered later is made alike

    def add_cell(self, name: str, url: str, replica_urls: list[str] | tuple[str, ...] = ()) -> Database:
        """Reach one more cell's database (a cell registered with `canopy cell create`); the same URL as
        a known database shares its object."""
        if name in self.cells:
            return self.cells[name]
        key = normalize_url(url)
        same = next((db for db in self.all() if db.url == key), None)
        self.cells[name] = same or Database(key, replica_urls=replica_urls, **self.options)
        return self.cells[name]

    @classmethod
    def from_urls(
        cls, global_url: str, cell_urls: dict[str, str], *, replicas: dict[str, list[str]] | None = None,
        **kwargs: Any
    ) -> Databases:
        """One Database per distinct URL; `replicas` maps a primary's URL to its replicas' URLs."""
        by_url: dict[str, Database] = {}
        replicas_of = {normalize_url(k): v for k, v in (replicas or {}).items()}

        def get(url: str) -> Database:
            key = normalize_url(url)
            if key not in by_url:
                by_url[key] = Database(key, replica_urls=replicas_of.get(key, ()), **kwargs)
            return by_url[key]

        return cls(get(global_url), {name: get(url) for name, url in cell_urls.items()}, **kwargs)

    def cell(self, name: str) -> Database:
        return self.cells[name]

    @property
    def default_cell(self) -> Database:
        return next(iter(self.cells.values()))

    def all(self) -> list[Database]:
        seen: dict[int, Database] = {id(self.global_db): self.global_db}
        for db in self.cells.values():
            seen.setdefault(id(db), db)
        return list(seen.values())

    def statement_counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for db in self.all():
            total.update(db.counter.by_origin)
        return total

    def dispose(self) -> None:
        for db in self.all():
            db.dispose()
