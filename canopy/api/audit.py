"""The audit trail: one record per mutating API call, written in batches off the request path.

The middleware hands each POST/PUT/PATCH/DELETE's facts to `AuditWriter.submit` after the answer is
sent: a bounded queue, flushed into `audit_records` (global database) by one task every
`[api.audit] flush_interval_s` or once `batch` records wait. A full queue (the database is down or slow)
drops the record, counts it in `dropped` and logs (the first drop, then every 1,000th) rather than
making requests wait: the trail is best effort under overload, the API is not. User names, the user's
domain and a created resource's id (from the response body) are filled in at flush time, off the path.

`to_cadf` renders a record as a CADF event (DMTF DSP0262, as Keystone's and pycadf's audit middleware
emit them) for `canopy audit export`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select

from canopy.clock import Clock, isotime
from canopy.context import statement_origin
from canopy.db import tables_global as g
from canopy.db.engine import Database
from canopy.observability.metrics import AUDIT_DROPPED

log = logging.getLogger("canopy.audit")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_KEEP = 64 * 1024  # enough of a create's answer to find its id; larger answers name none


@dataclass(frozen=True)
class AuditRecord:
    """The facts of one mutating call."""

    id: str
    at: dt.datetime
    request_id: str
    user_id: str | None
    user_name: str | None
    project_id: str | None
    domain_id: str | None
    service: str
    method: str
    route: str
    path: str
    target_id: str | None
    source: str
    status: int


def target_from_path(params: Mapping[str, Any]) -> str | None:
    """The resource a path names: its last `*id` parameter, else its last parameter."""
    ids = [str(v) for k, v in params.items() if k == "id" or k.endswith("_id")]
    if ids:
        return ids[-1]
    return str(list(params.values())[-1]) if params else None


def created_id(body: bytes) -> str | None:
    """The id of what a create answered with: `{"server": {"id": …}}` (one root) or `{"id": …}`; a key pair,
    which has no id, by its name."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("id"), str):
        return str(data["id"])
    roots = [v for v in data.values() if isinstance(v, dict)]
    if len(data) != 1 or not roots:
        return None
    for key in ("id", "name"):
        if isinstance(roots[0].get(key), str):
            return str(roots[0][key])
    return None


class AuditWriter:
    """A bounded queue of records and the task that writes them in batches."""

    def __init__(self, db: Database, clock: Clock, *, queue_size: int = 10_000, batch: int = 500,
                 flush_interval_s: float = 1.0) -> None:
        self.db = db
        self.clock = clock
        self.queue_size = queue_size
        self.batch = batch
        self.flush_interval_s = flush_interval_s
        self.dropped = 0
        self.written = 0
        self._queue: deque[tuple[AuditRecord, bytes | None]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, record: AuditRecord, body: bytes | None = None) -> None:
        """Queue a record (with a create's answer, to read its id from); drop it when the queue is full."""
        if len(self._queue) >= self.queue_size:
            self.dropped += 1
            AUDIT_DROPPED.inc()
            if self.dropped % 1000 == 1:
                log.warning("audit queue full (%d records): dropped %d records so far, last %s %s",
                            self.queue_size, self.dropped, record.method, record.path)
            return
        self._queue.append((record, body))
        if len(self._queue) >= self.batch:
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def pending(self) -> int:
        """Records waiting to be written."""
        return len(self._queue)

    async def _run(self) -> None:
        # Runs while records wait (submit starts it again): an idle api holds no task. A failing database
        # is retried with backoff (up to 64 intervals), logged at the first failure and every tenth.
        failures = 0
        while self._queue:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s * 2 ** min(failures, 6))
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
            except Exception:  # the database is away: the queue keeps them (bounded) until it is back
                failures += 1
                if failures % 10 == 1:
                    log.exception("writing audit records failed (%d times); %d waiting", failures, len(self._queue))

    async def flush(self) -> None:
        """Write every queued record now, in batches (its statements counted as the audit's, not a route's)."""
        origin = statement_origin.set("audit:flush")
        try:
            await self._flush()
        finally:
            statement_origin.reset(origin)

    async def _flush(self) -> None:
        while self._queue:
            taken = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            try:
                await self.db.write(_insert, [_complete(r, body) for r, body in taken])
            except Exception:
                self._queue.extendleft(reversed(taken))
                raise
            self.written += len(taken)

    async def close(self) -> None:
        """Write what is queued and stop the task."""
        if self._task is not None:
            self._task.cancel()
        await self.flush()


def _complete(record: AuditRecord, body: bytes | None) -> AuditRecord:
    if record.target_id is None and body:
        return replace(record, target_id=created_id(body))
    return record


def _insert(conn: Connection, records: list[AuditRecord]) -> None:
    users = {r.user_id for r in records if r.user_id}
    found = {row.id: row for row in conn.execute(
        select(g.users.c.id, g.users.c.name, g.users.c.domain_id).where(g.users.c.id.in_(users)))} if users else {}
    rows = []
    for r in records:
        user = found.get(r.user_id or "")
        rows.append({**asdict(r), "user_name": user.name if user else r.user_name,
                     "domain_id": r.domain_id or (user.domain_id if user else None)})
    conn.execute(insert(g.audit_records), rows)


def new_record(**fields: Any) -> AuditRecord:
    """A record with a fresh id."""
    return AuditRecord(id=str(uuid.uuid4()), **fields)


def list_records(conn: Connection, *, since: dt.datetime | None = None, project_id: str | None = None,
                 limit: int = 100, marker: str | None = None) -> list[AuditRecord]:
    """Records in time order from `since`, of one project or all, after `marker` (a record id)."""
    t = g.audit_records
    query = select(t).order_by(t.c.at, t.c.id).limit(limit)
    if since is not None:
        query = query.where(t.c.at >= since)
    if project_id is not None:
        query = query.where(t.c.project_id == project_id)
    if marker is not None:
        at = conn.execute(select(t.c.at).where(t.c.id == marker)).scalar()
        if at is None:
            raise LookupError(marker)
        query = query.where(or_(t.c.at > at, and_(t.c.at == at, t.c.id > marker)))
    return [AuditRecord(**row._mapping) for row in conn.execute(query)]


def to_dict(record: AuditRecord) -> dict[str, Any]:
    """A record as the API shows it."""
    return {**asdict(record), "at": isotime(record.at)}


def to_cadf(record: AuditRecord, observer: str = "canopy-api") -> dict[str, Any]:
    """A record as a CADF activity event."""
    ok = record.status < 400
    return {
        "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event",
        "id": record.id,
        "eventType": "activity",
        "eventTime": record.at.strftime("%Y-%m-%dT%H:%M:%S.%f+0000"),
        "action": _ACTIONS.get(record.method, "update"),
        "outcome": "success" if ok else "failure",
        "reason": {"reasonType": "HTTP", "reasonCode": str(record.status)},
        "initiator": {"typeURI": "service/security/account/user", "id": record.user_id or "unknown",
                      "name": record.user_name, "project_id": record.project_id, "domain_id": record.domain_id,
                      "host": {"address": record.source}},
        "target": {"typeURI": f"service/{record.service}/{record.route}", "id": record.target_id or "unknown"},
        "observer": {"typeURI": "service/compute" if record.service == "compute" else f"service/{record.service}",
                     "id": observer, "name": record.service},
        "requestPath": record.path,
        "requestId": record.request_id,
        "name": record.route,
    }


_ACTIONS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
