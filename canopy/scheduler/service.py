"""The scheduler service: answers SelectHost by filtering and weighing the in-memory index, then
claims in the database; on a lost race it takes the next candidate."""

from __future__ import annotations

import logging
import random

import numpy as np

from canopy.clock import Clock
from canopy.db.engine import Database
from canopy.rpc.base import Target, Transport
from canopy.rpc.calls import HostSelected, SelectHost
from canopy.rpc.messages import Message
from canopy.scheduler import claims
from canopy.scheduler.filters import Request, default_filters, run_filters, weigh
from canopy.scheduler.hoststate import HostIndex

log = logging.getLogger("canopy.scheduler")
MAX_CLAIM_TRIES = 8


class NoValidHost(Exception):
    """No host can take the instance; the message says how many each filter removed."""


class Scheduler:
    """Places instances on hosts."""

    def __init__(self, db: Database, bus: Transport, *, clock: Clock | None = None, refresh_s: float = 1.0,
                 strategy: str = "spread", top_k: int = 3, service_down_s: float = 60.0,
                 rng: random.Random | None = None) -> None:
        self.db = db
        self.bus = bus
        self.clock = clock or Clock()
        self.refresh_s = refresh_s
        self.strategy = strategy
        self.top_k = top_k
        self.filters = default_filters(service_down_s)
        self.rng = rng or random.Random()
        self.index = HostIndex()
        self._refreshed_at = float("-inf")

    async def start(self) -> None:
        await self.refresh(force=True)
        self.bus.serve(Target("scheduler"), self.handle)

    async def refresh(self, force: bool = False) -> None:
        """Bring the index up to date with the database's change feed, at most once per refresh_s."""
        now = self.clock.monotonic()
        if force or now - self._refreshed_at >= self.refresh_s:
            self._refreshed_at = now
            await self.db.read_fresh(self.index.refresh)

    async def handle(self, msg: Message) -> Message:
        if not isinstance(msg, SelectHost):
            raise ValueError(f"scheduler does not handle {msg.kind}")
        return await self.select_host(msg)

    async def select_host(self, msg: SelectHost) -> HostSelected:
        """Choose and claim a host for one instance."""
        await self.refresh()
        req = Request(msg.vcpus, msg.memory_mb, msg.disk_gb, msg.availability_zone, msg.force_host,
                      tuple(msg.exclude_hosts))
        for _ in range(MAX_CLAIM_TRIES):
            now_ts = _epoch(self.clock)
            outcome = run_filters(self.index, req, self.filters, now_ts)
            candidates = np.flatnonzero(outcome.mask)
            if candidates.size == 0 and self.clock.monotonic() - self._refreshed_at > 0.05:
                # The index may predate a host that just registered or freed room: look again first.
                await self.refresh(force=True)
                continue
            if candidates.size == 0:
                raise NoValidHost(f"No valid host was found. {outcome.explain()}")
            i = self._pick(weigh(self.index, outcome.mask, self.strategy), candidates)
            host_id = int(self.index.view("id")[i])
            won = await self.db.write(claims.claim, host_id, req.vcpus, req.memory_mb, req.disk_gb, self.clock.now())
            if won:
                self.index.add_usage(i, req.vcpus, req.memory_mb, req.disk_gb)
                return HostSelected(host=self.index.names[i], availability_zone=self.index.zones[i])
            # Another scheduler took the room first: reload what changed and choose again.
            log.info("claim on %s lost a race; choosing again", self.index.names[i])
            await self.refresh(force=True)
        raise NoValidHost("No valid host was found. Every candidate was taken by concurrent claims.")

    def _pick(self, scores: np.ndarray, candidates: np.ndarray) -> int:  # type: ignore[type-arg]
        k = min(self.top_k, candidates.size)
        if k == candidates.size:
            top = candidates
        else:
            top = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        return int(top[self.rng.randrange(top.size)])


def _epoch(clock: Clock) -> float:
    import datetime as dt

    return clock.now().replace(tzinfo=dt.UTC).timestamp()
