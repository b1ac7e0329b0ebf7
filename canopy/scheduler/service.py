"""The scheduler service: answers SelectHost by filtering and weighing the in-memory index, then
claims in the database; on a lost race it re-reads that one host and chooses again.

    request → lookups (group members, hints, reachable racks) → refresh (change feed, if due)
            → filters (masks) → weighers (scores) → choose among the top few → claim (conditional UPDATE)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from canopy.clock import Clock
from canopy.config import SchedulerConfig
from canopy.db.engine import Database
from canopy.observability.metrics import scheduler_decision
from canopy.rpc.base import Target, Transport
from canopy.rpc.calls import ExplainPlacement, HostSelected, PlacementExplained, SelectHost
from canopy.rpc.messages import Message
from canopy.scheduler import audit, claims, feed
from canopy.scheduler.filters import FilterChain
from canopy.scheduler.hoststate import HostIndex, Weights
from canopy.scheduler.lookups import Lookups, build_request, group_claim
from canopy.scheduler.request import Request
from canopy.scheduler.weighers import choose, ranking

log = logging.getLogger("canopy.scheduler")


class NoValidHost(Exception):
    """No host can take the instance; the message says how many each filter removed."""


@dataclass
class _Batch:
    """Members of one multi-create waiting to be placed together."""

    size: int
    items: list[tuple[SelectHost, asyncio.Future[HostSelected]]] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    """Places instances on hosts."""

    def __init__(self, db: Database, bus: Transport | None, *, clock: Clock | None = None,
                 refresh_s: float | None = None, strategy: str | None = None, top_k: int | None = None,
                 service_down_s: float | None = None, rng: random.Random | None = None,
                 global_db: Database | None = None, config: SchedulerConfig | None = None) -> None:
        cfg = (config or SchedulerConfig()).model_copy()
        for key, value in (("refresh_s", refresh_s), ("weigher", strategy), ("top_k", top_k),
                           ("service_down_s", service_down_s)):
            if value is not None:
                setattr(cfg, key, value)
        self.cfg = cfg
        self.db, self.global_db, self.bus = db, global_db or db, bus
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        weights = Weights.for_strategy(cfg.weigher, cfg.ram_weight, cfg.cpu_weight, cfg.disk_weight)
        self.index = HostIndex(weights=weights, rng_seed=self.rng.randrange(2**31))
        self.index.aggregates.pin_tenants = cfg.pin_tenants
        self.chain = FilterChain()
        self.feed = feed.ChangeFeed(overlap_s=cfg.feed_overlap_s)
        self.lookups = Lookups(self.db, self.global_db, self.clock, cfg.reachability_ttl_s)
        self._due = {"refresh": float("-inf"), "liveness": float("-inf"), "full": float("-inf"),
                     "audit": self.clock.monotonic()}
        self._audit_after = 0
        self._batches: dict[str, _Batch] = {}
        self.stats = {"placed": 0, "lost_races": 0, "no_valid_host": 0, "refreshes": 0, "audit_repairs": 0}

    async def start(self, heartbeat_s: float = 10.0, name: str | None = None) -> None:
        await self.refresh(force=True)
        if self.bus is not None:
            self.bus.serve(Target("scheduler"), self.handle)
            import socket

            from canopy.heartbeat import ServiceHeartbeat

            self._heartbeat = ServiceHeartbeat(self.bus, "canopy-scheduler", name or socket.gethostname(),
                                               heartbeat_s, self.rng)
            self._heartbeat.start()

    async def stop(self) -> None:
        """Stop heartbeating (the bus belongs to the caller)."""
        beat = getattr(self, "_heartbeat", None)
        if beat is not None:
            await beat.stop()

    # -- keeping the index current -----------------------------------------------------------------

    async def refresh(self, force: bool = False) -> None:
        """Bring the index up to date from the change feed: at most once per refresh_s unless forced."""
        now, due = self.clock.monotonic(), self._due
        if not force and now - due["refresh"] < self.cfg.refresh_s:
            return
        due["refresh"] = now
        full = now - due["full"] >= self.cfg.full_resync_s
        services = full or force or now - due["liveness"] >= self.cfg.liveness_refresh_s
        if full:
            due["full"] = now
        if services:
            due["liveness"] = now
        started = self.clock.now()
        down_since = started - dt.timedelta(seconds=self.cfg.service_down_s)
        changes = await self.db.read_fresh(self.feed.fetch_cell, feed.Changes(started=started), services=services,
                                           full=full, down_since=down_since)
        await self.global_db.read_fresh(self.feed.fetch_aggregates, changes, full=full)
        self.feed.apply(self.index, changes)
        if changes.not_ok is not None:
            self.index.apply_not_ok(changes.not_ok, _epoch(self.clock))
        elif services:
            self.index.update_liveness(_epoch(self.clock), self.cfg.service_down_s)
        self.stats["refreshes"] += 1
        if now - due["audit"] >= self.cfg.audit_interval_s > 0:
            due["audit"] = now
            await self.audit_once()

    async def audit_once(self) -> audit.AuditReport:
        """Audit the next batch of hosts, repairing drift between claims and the instances recorded."""
        report = await self.db.write(audit.audit_batch, self.clock.now(), self._audit_after, self.cfg.audit_batch)
        self._audit_after = report.next_after_id or 0
        if report.next_after_id is None:
            await self.db.write(audit.prune_group_placements)
        for d in report.drift:
            log.warning("claim audit: %s counted %s, its instances hold %s", d.host, d.counted, d.expected)
        self.stats["audit_repairs"] += report.repaired
        return report

    # -- the bus -----------------------------------------------------------------------------------

    async def handle(self, msg: Message) -> Message:
        if isinstance(msg, SelectHost):
            with scheduler_decision(self.stats):
                if msg.batch_size > 1 and msg.reservation_id:
                    return await self._select_batched(msg)
                return await self.select_host(msg)
        if isinstance(msg, ExplainPlacement):
            return PlacementExplained(explanation=await self.explain(msg.request, msg.top))
        raise ValueError(f"scheduler does not handle {msg.kind}")

    async def select_host(self, msg: SelectHost) -> HostSelected:
        """Choose and claim a host for one instance."""
        req = await build_request(self.lookups, msg)
        await self.refresh()
        return await self._place(req, msg)

    async def explain(self, msg: SelectHost, top: int = 5) -> dict[str, Any]:
        """Where an instance would go and why the other hosts would not, without claiming anything."""
        req = await build_request(self.lookups, msg)
        await self.refresh(force=True)
        outcome = self.chain.explain(self.index, req)
        out = outcome.as_dict()
        best = ranking(self.index, outcome.mask, top, req.group, self.cfg.soft_affinity_weight)
        out["candidates"] = [{"host": h, "score": s} for h, s in best]
        return out

    # -- placing -----------------------------------------------------------------------------------

    async def _place(self, req: Request, msg: SelectHost) -> HostSelected:
        fresh = False
        for _ in range(self.cfg.max_claim_tries):
            i = choose(self.index, self.chain.select(self.index, req), self.rng, self.cfg.top_k, req.group,
                       self.cfg.soft_affinity_weight)
            if i is None:
                if not fresh:  # say "no" only on a fresh view: someone may have freed room since
                    fresh = True
                    await self._freshen(req)
                    continue
                self.stats["no_valid_host"] += 1
                raise NoValidHost(f"No valid host was found. {self.chain.explain(self.index, req).explain()}")
            try:
                if await self._claim(i, req, msg):
                    return self._selected(i)
            except claims.NotWaiting:
                return await self._placed_already(msg)
        raise NoValidHost("No valid host was found. Every candidate was taken by concurrent claims "
                          f"({self.cfg.max_claim_tries} tries).")

    async def _placed_already(self, msg: SelectHost) -> HostSelected:
        """The instance holds a claim already (a retry after a lost reply): answer with that placement, so
        that asking twice claims once; an instance that failed or went gets NotWaiting."""
        host = await self.db.read_fresh(claims.placed_host, msg.instance_uuid)
        i = self.index.by_name.get(host) if host else None
        if host is None or i is None:
            raise claims.NotWaiting(f"instance {msg.instance_uuid} no longer waits for a host")
        return self._selected(i)

    async def _freshen(self, req: Request) -> None:
        await self.refresh(force=True)
        if req.group is not None:
            req.group.members = await self.db.read_fresh(claims.live_members, req.group.uuid)

    async def _claim(self, i: int, req: Request, msg: SelectHost) -> bool:
        """Claim on host i; on a lost race take that host's current row into the index and say False."""
        ix, host = self.index, self.index.names[i]
        host_id = int(ix.cols["id"][i])
        group = group_claim(req.group)
        try:
            won, row = await self.db.write(_claim_or_reread, host_id, req, self.clock.now(), msg.instance_uuid,
                                           host, group)
        except claims.GroupConflict as exc:
            log.info("claim on %s broke a server-group rule (%s); choosing again", host, exc)
            self.stats["lost_races"] += 1
            req.group.members = await self.db.read_fresh(claims.live_members, req.group.uuid)  # type: ignore[union-attr]
            return False
        if won:
            ix.add_usage(i, req.vcpus, req.memory_mb, req.disk_gb)
            if req.group is not None:
                req.group.add(host)
            return True
        self.stats["lost_races"] += 1
        if row is None:
            ix.remove_host(i)
        else:
            ix.apply_host_row(row)
            ix.rescore(_one(i))
        return False

    def _selected(self, i: int) -> HostSelected:
        self.stats["placed"] += 1
        zone = self.index.zones.names[int(self.index.cols["zone"][i])]
        return HostSelected(host=self.index.names[i], availability_zone=zone)

    # -- multi-create ------------------------------------------------------------------------------

    async def _select_batched(self, msg: SelectHost) -> HostSelected:
        """Members of one multi-create arrive together: the first waits briefly for the rest, then places
        them all with one set of lookups, one refresh and one filter cache entry."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[HostSelected] = loop.create_future()
        batch = self._batches.get(msg.reservation_id)
        if batch is not None:
            batch.items.append((msg, fut))
            if len(batch.items) >= batch.size:
                batch.full.set()
            return await fut
        batch = self._batches[msg.reservation_id] = _Batch(msg.batch_size, [(msg, fut)])
        try:
            await asyncio.wait_for(batch.full.wait(), self.cfg.batch_wait_s)
        except TimeoutError:
            pass  # the others went to another scheduler, or are late: place who is here
        del self._batches[msg.reservation_id]
        await self._place_batch(batch.items)
        return await fut

    async def _place_batch(self, items: list[tuple[SelectHost, asyncio.Future[HostSelected]]]) -> None:
        items = sorted(items, key=lambda item: item[0].instance_uuid)
        try:
            req = await build_request(self.lookups, items[0][0])
            await self.refresh()
        except Exception as exc:
            for _, fut in items:
                fut.set_exception(exc)
            return
        for msg, fut in items:
            try:
                fut.set_result(await self._place(req, msg))
            except Exception as exc:  # each member gets its own answer
                fut.set_exception(exc)


def _claim_or_reread(conn: Any, host_id: int, req: Request, now: dt.datetime, instance_uuid: str | None,
                     host: str, group: claims.GroupClaim | None) -> tuple[bool, Any]:
    """One transaction: the claim, or (lost) the host's current row to correct the index with."""
    if claims.claim(conn, host_id, req.vcpus, req.memory_mb, req.disk_gb, now, instance_uuid=instance_uuid or None,
                    host=host, group=group):
        return True, None
    return False, feed.read_host(conn, host_id)


def _one(i: int) -> Any:
    import numpy as np

    return np.array([i], dtype=np.int64)


def _epoch(clock: Clock) -> float:
    return clock.now().replace(tzinfo=dt.UTC).timestamp()
