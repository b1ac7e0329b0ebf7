"""Whether a genuine token still stands, on every api process: revocation events in the global database,
read through a short in-process cache.

Staleness bound: each process reloads the events it has not seen at most `auth.revocation_cache_s`
seconds (default 2, capped at 5) after its last load, so an event written by any process stops the
tokens it covers on every process within that bound; the writing process itself sees it at once.
Loads read the primary (a replica's lag would stretch the bound) and overlap the previous window by
`_OVERLAP_US`, so an event committed late with an earlier timestamp is still seen (merging is idempotent).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from sqlalchemy import Connection, delete, insert, select

from canopy.auth.revocation import RevocationEvent, RevocationIndex
from canopy.auth.tokens import InvalidToken, TokenData, TokenSigner
from canopy.context import statement_origin
from canopy.db import tables_global as g
from canopy.db.engine import Database

MAX_STALENESS_S = 5.0
_OVERLAP_US = 30_000_000   # re-read the last 30 s of events on every incremental load
_FULL_RELOAD_S = 300.0     # rebuild from scratch now and then, dropping expired events from memory
_US = 1_000_000


def _to_us(ts: float) -> int:
    return int(ts * _US)


def record_events(conn: Connection, events: Iterable[RevocationEvent], keep_s: float) -> None:
    """Write revocation events in the caller's transaction; prune rows no token can need any more."""
    now = time.time()
    rows = [{"audit_id": e.audit_id, "user_id": e.user_id, "project_id": e.project_id, "domain_id": e.domain_id,
             "app_cred_id": e.app_cred_id, "issued_before_us": _to_us(e.issued_before), "revoked_at_us": _to_us(now),
             "expires_at_us": _to_us(now + keep_s)} for e in events]
    if rows:
        conn.execute(insert(g.revocation_events), rows)
    conn.execute(delete(g.revocation_events).where(g.revocation_events.c.expires_at_us < _to_us(now)))


def load_events(conn: Connection, since_us: int) -> list[RevocationEvent]:
    """The events recorded at or after `since_us` that have not expired."""
    t = g.revocation_events.c
    rows = conn.execute(select(t.audit_id, t.user_id, t.project_id, t.domain_id, t.app_cred_id, t.issued_before_us)
                        .where(t.revoked_at_us >= since_us, t.expires_at_us >= _to_us(time.time())))
    return [RevocationEvent(r.issued_before_us / _US, r.audit_id, r.user_id, r.project_id, r.domain_id,
                            r.app_cred_id) for r in rows]


def user_event(user_id: str) -> RevocationEvent:
    """Every token of this user issued until now."""
    return RevocationEvent(time.time(), user_id=user_id)


def project_event(project_id: str, user_id: str | None = None) -> RevocationEvent:
    """Every token scoped to this project (of this user, when given) issued until now."""
    return RevocationEvent(time.time(), user_id=user_id, project_id=project_id)


def domain_event(domain_id: str) -> RevocationEvent:
    """Every token of a user or project of this domain, or scoped to it, issued until now."""
    return RevocationEvent(time.time(), domain_id=domain_id)


class TokenGuard:
    """Validates a token's signature and expiry, then its standing against the revocation events."""

    def __init__(self, signer: TokenSigner, db: Database, staleness_s: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.signer = signer
        self.db = db
        self.staleness_s = min(staleness_s, MAX_STALENESS_S)
        self._monotonic = monotonic
        self._index = RevocationIndex()
        self._loaded_at: float | None = None   # monotonic time of the last load
        self._full_at = float("-inf")
        self._since_us = 0
        self._lock = asyncio.Lock()

    async def check(self, token: str) -> TokenData:
        """What a token says, if it is genuine, unexpired and not revoked; else InvalidToken."""
        data = self.signer.validate(token)
        await self.refresh()
        if self._index.is_revoked(data):
            raise InvalidToken("The token has been revoked.")
        return data

    def is_revoked(self, data: TokenData) -> bool:
        """Whether the events loaded so far cover this token (call `refresh` first)."""
        return self._index.is_revoked(data)

    async def refresh(self) -> None:
        """Load the events written since the last load, if that was longer ago than the staleness bound."""
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():
                return
            now = self._monotonic()
            full = now - self._full_at > _FULL_RELOAD_S
            since = 0 if full else max(0, self._since_us - _OVERLAP_US)
            wall_us = _to_us(time.time())
            # The reload is this process's periodic cost (one per staleness period), not the request's that
            # happens to trigger it: its statements are counted under their own origin.
            origin = statement_origin.set("auth:revocations")
            try:
                events = await self.db.write(load_events, since)
            finally:
                statement_origin.reset(origin)
            if full:
                self._index, self._full_at = RevocationIndex(events), now
            else:
                self._index.add(events)
            self._since_us, self._loaded_at = wall_us, now

    def _fresh(self) -> bool:
        return self._loaded_at is not None and self._monotonic() - self._loaded_at < self.staleness_s

    def note(self, events: Iterable[RevocationEvent]) -> None:
        """Events this process just committed: effective here at once, before the next load."""
        self._index.add(events)

    async def revoke(self, events: list[RevocationEvent]) -> None:
        """Record events in their own transaction, effective here at once."""
        await self.db.write(record_events, events, self.signer.ttl_s + 60)
        self.note(events)
