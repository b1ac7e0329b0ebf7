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
from typing import Any, Literal, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from canopy.context import statement_origin

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


def make_engine(url: str, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine with the settings each backend needs (SQLite: WAL, a busy timeout, foreign keys)."""
    url = normalize_url(url)
    json_args = {"json_serializer": _json_serializer, "json_deserializer": orjson.loads}
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
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
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")


Mode = Literal["writer", "reader", "reader_fresh"]


class Database:
    """One logical database (the global one, or one cell's): a primary and optional replicas."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        execution: Literal["auto", "inline", "thread"] = "auto",
        echo: bool = False,
    ) -> None:
        self.url = normalize_url(url)
        self.primary = make_engine(self.url, pool_size=pool_size, echo=echo)
        self.replicas: list[Engine] = []
        self.counter = StatementCounter()
        event.listen(self.primary, "before_cursor_execute", self.counter)
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
        # No replica yet: every mode reads the primary, which is always fresh.
        return self.primary

    @contextmanager
    def writer(self) -> Iterator[Connection]:
        """A read-write transaction on the primary, committed when the block ends without error."""
        with self.primary.connect() as conn:
            conn.info["write"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info["write"] = False

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        """A read-only transaction that may be served by a replica a little behind the primary."""
        with self._engine_for("reader").connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def reader_fresh(self) -> Iterator[Connection]:
        """A read-only transaction that sees every write this process committed before it."""
        with self._engine_for("reader_fresh").connect() as conn, conn.begin():
            yield conn

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args)` in a writer transaction."""
        return await self._run(self.writer, fn, args, kwargs)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args)` in a reader transaction."""
        return await self._run(self.reader, fn, args, kwargs)

    async def read_fresh(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args)` in a reader_fresh transaction."""
        return await self._run(self.reader_fresh, fn, args, kwargs)

    async def _run(self, context: Callable[[], Any], fn: Callable[..., T], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> T:
        def unit() -> T:
            with context() as conn:
                return fn(conn, *args, **kwargs)

        if self.inline:
            return unit()
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(ctx.run, unit))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.primary.dispose()
        for engine in self.replicas:
            engine.dispose()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class Databases:
    """The global database and the cells' databases (one object per distinct URL)."""

    def __init__(self, global_db: Database, cells: dict[str, Database]) -> None:
        self.global_db = global_db
        self.cells = cells

    @classmethod
    def from_urls(
        cls, global_url: str, cell_urls: dict[str, str], **kwargs: Any
    ) -> Databases:
        by_url: dict[str, Database] = {}

        def get(url: str) -> Database:
            key = normalize_url(url)
            if key not in by_url:
                by_url[key] = Database(key, **kwargs)
            return by_url[key]

        return cls(get(global_url), {name: get(url) for name, url in cell_urls.items()})

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
