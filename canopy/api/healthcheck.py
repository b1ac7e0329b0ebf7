"""`/healthcheck` in the oslo.middleware shape, and `/healthcheck/fleet` (admin).

    HEAD /healthcheck                         204, or 503
    GET  /healthcheck                         200 "OK", or 503 with the failing checks, one a line
    GET  /healthcheck  (Accept: JSON)         {"detailed": false, "reasons": [...]}
    GET  /healthcheck?detail  (admin token)   {"detailed": true, "reasons": [{"class", "reason", "details", ...}]}
    GET  /healthcheck/fleet  (admin token)    hosts up/down/disabled per data center, which are down, and
                                              which are up but fail health checks (hosts per check)

The checks: every database's primary answers a real read on a fresh connection (a pooled one can
hide an outage), its replicas answer and how far behind they are (informational: a lagging replica
is taken out of rotation, the api still works), and a conductor answers a ping over the bus.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import platform
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from starlette.requests import Request
from starlette.responses import Response

from canopy import __version__
from canopy.auth.tokens import InvalidToken
from canopy.db.engine import Database
from canopy.rpc.base import Target
from canopy.rpc.calls import Ping, Pong
from canopy.runtime import Cloud


@dataclass
class Check:
    """One check's result: `required` checks decide between 200 and 503."""

    name: str
    kind: str
    ok: bool
    details: str
    required: bool = True
    data: dict[str, Any] = field(default_factory=dict)

    def reason(self) -> dict[str, Any]:
        return {"class": self.kind, "name": self.name, "reason": "OK" if self.ok else "FAILED",
                "details": self.details, "required": self.required, **self.data}


# -- databases -------------------------------------------------------------------------------------

_PROBES: dict[str, Engine] = {}


def probe_engine(url: str, timeout: float) -> Engine:
    """An engine that opens a new connection per check (SQLite: read-write, never creating the file)."""
    engine = _PROBES.get(url)
    if engine is None:
        parsed = make_url(url)
        args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                url = f"sqlite:///file:{parsed.database}?mode=rw&uri=true"
            args = {"timeout": timeout}
        elif parsed.get_backend_name() in ("mysql", "mariadb"):
            args = {"connect_timeout": max(1, int(timeout)), "read_timeout": max(1, int(timeout))}
        elif parsed.get_backend_name() == "postgresql":
            args = {"connect_timeout": max(1, int(timeout))}
        engine = _PROBES[url] = create_engine(url, poolclass=NullPool, connect_args=args)
    return engine


def _read_versions(engine: Engine, tables: list[str]) -> float:
    t0 = time.perf_counter()
    with engine.connect() as conn:
        for table in tables:  # a real read: the file or server, and the schema, are there
            conn.execute(text(f"SELECT version_num FROM {table}")).all()
    return (time.perf_counter() - t0) * 1000


def _replica_lag(engine: Engine) -> float | None:
    """Seconds the replica is behind its primary, when the server says (None: unknown)."""
    with engine.connect() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            row = conn.exec_driver_sql("SHOW SLAVE STATUS").mappings().first()
            running = row is not None and row.get("Slave_SQL_Running") == "Yes"
            value = row.get("Seconds_Behind_Master") if row is not None and running else None
        elif engine.dialect.name == "postgresql":
            # caught up (all WAL received is replayed) is 0 however old the last transaction is
            value = conn.exec_driver_sql(
                "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT "
                "FROM pg_last_wal_replay_lsn() THEN 0 ELSE COALESCE(EXTRACT(EPOCH FROM now() - "
                "pg_last_xact_replay_timestamp()), 0) END").scalar()
        else:
            conn.exec_driver_sql("SELECT 1")
            value = 0.0
    return None if value is None else float(value)


async def _within(timeout: float, fn: Any, *args: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


async def check_database(name: str, db: Database, tables: list[str], timeout: float,
                         max_lag: float) -> list[Check]:
    """The primary (required) and each replica (informational, with its lag)."""
    checks = []
    try:
        ms = await _within(timeout, _read_versions, probe_engine(db.url, timeout), tables)
        checks.append(Check(name, "DatabaseCheck", True, f"primary answered in {ms:.1f} ms",
                            data={"latency_ms": round(ms, 2)}))
    except Exception as exc:
        checks.append(Check(name, "DatabaseCheck", False, f"primary unreachable: {_why(exc)}"))
    replica_set = getattr(db, "replica_set", None)  # the read router's own view: in rotation or not
    rotation = replica_set.status() if replica_set is not None else []
    for n, replica in enumerate(getattr(db, "replicas", [])):
        rname = f"{name}:replica-{n}"
        data: dict[str, Any] = {"in_rotation": rotation[n]["healthy"]} if n < len(rotation) else {}
        try:
            lag = await _within(timeout, _replica_lag, replica)
            ok = lag is not None and lag <= max_lag
            detail = f"replica is {lag:.1f}s behind" if lag is not None else "replica is not replaying"
            checks.append(Check(rname, "DatabaseReplicaCheck", ok, detail, False, {"lag_s": lag, **data}))
        except Exception as exc:
            checks.append(Check(rname, "DatabaseReplicaCheck", False, f"replica unreachable: {_why(exc)}", False,
                                data))
    return checks


def databases_to_check(cloud: Cloud) -> list[tuple[str, Database, list[str]]]:
    """Each distinct database with the version tables it must hold (one entry when all share one)."""
    parts: dict[int, tuple[str, Database, list[str]]] = {}
    entries = [("global", cloud.dbs.global_db, "alembic_version_global")]
    entries += [(f"cell:{n}", db, "alembic_version_cell") for n, db in cloud.dbs.cells.items()]
    for label, db, table in entries:
        if id(db) in parts:
            old = parts[id(db)]
            parts[id(db)] = (f"{old[0]}+{label}", db, [*old[2], table])
        else:
            parts[id(db)] = (label, db, [table])
    return [(f"database:{label}", db, tables) for label, db, tables in parts.values()]


# -- the bus ---------------------------------------------------------------------------------------

async def check_bus(cloud: Cloud, timeout: float) -> Check:
    """A conductor answers a ping: the bus carries work to where it is done."""
    t0 = time.perf_counter()
    try:
        reply = await cloud.bus.call(Target("conductor"), Ping(), timeout=timeout)
    except Exception as exc:
        return Check("bus", "BusCheck", False, f"no conductor answered: {_why(exc)}")
    ms = (time.perf_counter() - t0) * 1000
    who = f"{reply.host} ({reply.service_version})" if isinstance(reply, Pong) else "a conductor"
    return Check("bus", "BusCheck", True, f"{who} answered in {ms:.1f} ms", data={"latency_ms": round(ms, 2)})


async def run_checks(cloud: Cloud) -> list[Check]:
    """Every check, concurrently, each bounded by the health timeout."""
    obs = cloud.settings.observability
    # a replica counts as lagging past the read router's own limit (database.replica_max_lag_s)
    max_lag = float(getattr(cloud.settings.database, "replica_max_lag_s", 5.0))
    jobs = [check_database(name, db, tables, obs.health_timeout_s, max_lag)
            for name, db, tables in databases_to_check(cloud)]
    databases, bus = await asyncio.gather(asyncio.gather(*jobs), check_bus(cloud, obs.health_timeout_s))
    return [check for group in databases for check in group] + [bus]


def healthy(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)


# -- HTTP ------------------------------------------------------------------------------------------

def _json(body: Any, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _roles(cloud: Cloud, request: Request) -> tuple[str, ...] | None:
    """The caller's roles from X-Auth-Token; None without a valid token."""
    token = request.headers.get("x-auth-token")
    if not token or cloud.tokens is None:
        return None
    try:
        return tuple(cloud.tokens.validate(token).roles)
    except InvalidToken:
        return None


def render(checks: list[Check], request: Request, is_admin: bool) -> Response:
    """The oslo.middleware answer for the request's method, Accept header and rights."""
    ok = healthy(checks)
    status = 200 if ok else 503
    if request.method == "HEAD":
        return Response(b"", status_code=204 if ok else status)
    failing = [c for c in checks if c.required and not c.ok]
    wants_json = "application/json" in request.headers.get("accept", "")
    wants_detail = any(k in request.query_params for k in ("detail", "detailed"))
    if is_admin and (wants_detail or wants_json):
        return _json({"detailed": True, "now": dt.datetime.now(dt.UTC).isoformat(), "version": __version__,
                      "platform": platform.platform(), "python_version": platform.python_version(),
                      "reasons": [c.reason() for c in checks]}, status)
    reasons = ["OK"] if ok else [f"{c.name}: {c.details}" for c in failing]
    if wants_json:
        return _json({"detailed": False, "reasons": reasons}, status)
    return Response("\n".join(reasons).encode(), status_code=status, media_type="text/plain")


async def healthcheck(cloud: Cloud, request: Request) -> Response:
    """GET/HEAD /healthcheck."""
    checks = await run_checks(cloud)
    return render(checks, request, "admin" in (_roles(cloud, request) or ()))


async def fleet(cloud: Cloud, request: Request) -> Response:
    """GET /healthcheck/fleet (admin): hosts up, down and disabled per data center, the down ones, and the
    unhealthy ones with their failing checks (as their agents' last heartbeats reported them)."""
    from canopy.observability.fleet import snapshot

    roles = _roles(cloud, request)
    if roles is None:
        return _json({"error": {"code": 401, "message": "The request you have made requires authentication.",
                                "title": "Unauthorized"}}, 401)
    if "admin" not in roles:
        return _json({"error": {"code": 403, "message": "Only admins may see the fleet view.",
                                "title": "Forbidden"}}, 403)
    try:
        return _json({"fleet": await snapshot(cloud)}, 200)
    except Exception as exc:
        return _json({"error": {"code": 503, "message": f"The fleet view is unavailable: {_why(exc)}",
                                "title": "Service Unavailable"}}, 503)


async def app(cloud: Cloud, scope: Any, receive: Any, send: Any) -> None:
    """The ASGI entry for both paths (the api's root dispatches here)."""
    request = Request(scope, receive)
    if request.method not in ("GET", "HEAD"):
        response = Response(b"", status_code=405, headers={"Allow": "GET, HEAD"})
    elif scope["path"].rstrip("/") == "/healthcheck/fleet":
        response = await fleet(cloud, request)
    else:
        response = await healthcheck(cloud, request)
    await response(scope, receive, send)
