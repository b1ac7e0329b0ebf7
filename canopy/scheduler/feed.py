"""The change feed that keeps a HostIndex current: rows changed since the last read, never a full
reload per request.

Every write to `hosts` (claims, releases, agent registration, enable/disable) and to `services` and
`aggregates` sets `updated_at`, which is indexed. Each read asks for rows with `updated_at` at or after
the newest one seen, minus an overlap: a transaction that stamped its rows earlier but committed later
than a read would otherwise be missed for good. The overlap must cover the longest write transaction
plus the clock skew between writers; a periodic full resync catches anything else (hosts deleted).

Reading and applying are separate steps: the read may run in a database thread, while the index is
only ever changed on the event loop, between two decisions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.scheduler.aggregates import Aggregate
from canopy.scheduler.hoststate import AGENT_BINARY, HostIndex

_s, _a, _ah = c.services.c, g.aggregates.c, g.aggregate_hosts.c


# Hosts do not report their architecture yet; when the column appears, the feed passes it on.
_HAS_ARCH = "architecture" in c.hosts.c


@dataclass
class Changes:
    """Rows read from the database, waiting to be applied to the index."""

    started: dt.datetime | None = None  # the scheduler's clock when the read began
    hosts: list[Any] = field(default_factory=list)
    services: list[Any] = field(default_factory=list)
    not_ok: set[str] | None = None  # agents disabled, forced down or unseen (None: not read this time)
    aggregates: list[Aggregate] = field(default_factory=list)
    deleted_aggregates: list[int] = field(default_factory=list)
    full_hosts: bool = False
    full_aggregates: bool = False


@dataclass
class ChangeFeed:
    """Watermarks of what this index has read, per table."""

    overlap_s: float = 2.0
    hosts_mark: dt.datetime | None = None
    services_mark: dt.datetime | None = None
    aggregates_mark: dt.datetime | None = None

    def _since(self, mark: dt.datetime | None, full: bool) -> dt.datetime | None:
        return None if full or mark is None else mark - dt.timedelta(seconds=self.overlap_s)

    def fetch_cell(self, conn: Connection, out: Changes, *, services: bool = True, full: bool = False,
                   down_since: dt.datetime | None = None) -> Changes:
        """Read changed `hosts` rows and, when asked, agent liveness.

        Liveness in full reads every agent's row; otherwise it asks only for the agents that are not OK
        (disabled, forced down, or not seen since `down_since`) — a few rows, however many heartbeats
        were written — plus agents registered since the last read."""
        q = select(c.hosts)
        since = self._since(self.hosts_mark, full)
        if since is not None:
            q = q.where(c.hosts.c.updated_at >= since)
        out.hosts, out.full_hosts = list(conn.execute(q).all()), full
        if not services:
            return out
        cols = (_s.host, _s.last_seen_at, _s.disabled, _s.forced_down, _s.updated_at)
        since = self._since(self.services_mark, full)
        sq = select(*cols).where(_s.binary == AGENT_BINARY)
        if since is None:
            out.services = list(conn.execute(sq).all())
            return out
        out.services = list(conn.execute(sq.where(_s.created_at >= since)).all())
        if down_since is not None:
            stale = (_s.last_seen_at.is_(None) | (_s.last_seen_at < down_since) | _s.disabled.is_(True)
                     | _s.forced_down.is_(True))
            out.not_ok = set(conn.execute(select(_s.host).where(_s.binary == AGENT_BINARY, stale)).scalars())
        return out

    def fetch_aggregates(self, conn: Connection, out: Changes, *, full: bool = False) -> Changes:
        """Read changed aggregates (a membership or metadata change stamps the aggregate) with their hosts."""
        q = select(_a.id, _a.name, _a.metadata, _a.deleted, _a.updated_at)
        since = self._since(self.aggregates_mark, full)
        if since is not None:
            q = q.where(_a.updated_at >= since)
        rows = conn.execute(q).all()
        live = [r.id for r in rows if not r.deleted]
        hosts: dict[int, set[str]] = {agg_id: set() for agg_id in live}
        if live:
            for agg_id, host in conn.execute(select(_ah.aggregate_id, _ah.host).where(_ah.aggregate_id.in_(live))):
                hosts[agg_id].add(host)
        out.aggregates = [Aggregate(r.id, r.name, frozenset(hosts[r.id]),
                                    {k: str(v) for k, v in (r.metadata or {}).items()}) for r in rows if not r.deleted]
        out.deleted_aggregates = [r.id for r in rows if r.deleted]
        out.full_aggregates = full
        self.aggregates_mark = _newest(self.aggregates_mark, list(rows), out.started)
        return out

    def apply(self, index: HostIndex, ch: Changes) -> int:
        """Take what was read into the index; returns how many rows it held."""
        if ch.hosts:
            slots = [index.apply_host_row(row, row.architecture if _HAS_ARCH else None) for row in ch.hosts]
            index.rescore(np.array(slots, dtype=np.int64))
        self.hosts_mark = _newest(self.hosts_mark, ch.hosts, ch.started)
        if ch.full_hosts:
            seen = {row.name for row in ch.hosts}
            for name, i in index.by_name.items():
                if name not in seen and index.cols["present"][i]:
                    index.remove_host(i)
        for row in ch.services:
            index.apply_service_row(row)
        if ch.services or ch.not_ok is not None:
            self.services_mark = _newest(self.services_mark, ch.services, ch.started)
        self._apply_aggregates(index, ch)
        if index.aggregates.dirty:
            index.apply_aggregates()
        return len(ch.hosts) + len(ch.services) + len(ch.aggregates) + len(ch.deleted_aggregates)

    def _apply_aggregates(self, index: HostIndex, ch: Changes) -> None:
        view = index.aggregates
        if ch.full_aggregates:
            for gone in set(view.aggs) - {a.id for a in ch.aggregates}:
                view.drop(gone)
        for agg_id in ch.deleted_aggregates:
            view.drop(agg_id)
        for agg in ch.aggregates:
            if view.aggs.get(agg.id) != agg:
                view.upsert(agg)


def _newest(mark: dt.datetime | None, rows: list[Any], started: dt.datetime | None) -> dt.datetime | None:
    """The next watermark: the newest stamp seen, or when the read began if that is later.

    Every transaction stamped before (read start − overlap) had committed when the read began, so the
    next read may start there: rows stamped long ago are read once, not again after every load."""
    found = [row.updated_at for row in rows] + [t for t in (mark, started) if t is not None]
    return max(found) if found else None


def read_host(conn: Connection, host_id: int) -> Any | None:
    """One host's row, re-read after a lost race (None if it was deleted)."""
    return conn.execute(select(c.hosts).where(c.hosts.c.id == host_id)).first()
