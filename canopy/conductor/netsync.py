"""Delivering each host's desired network state to its agent, in batches.

Port changes (a boot's ports, a deleted server's, an API port update relayed as PortsChanged) are
queued; a flusher takes everything queued within `batch_s` and calls each host that holds a changed
port (or held it) with the port (or its removal), plus the network's whole neighbor list when it is the
host's first port on a network whose hosts keep neighbors. The caller may wait until those owner hosts
have applied their flows: a boot does, before it starts the guest, and waits for nobody else.

Hosts keep neighbors only for VXLAN networks (which host holds a MAC) and networks with an ARP responder
(`Topology.needs_neighbors`). On a flat network without one — the default, the public network — a boot
costs its own host's call and nothing else, whatever the fleet. Where hosts keep neighbors, the other
hosts learn of the change as a delta, coalesced: every neighbor change since the last round goes to the
hosts serving the changed port's segment, one cast per host, at most one round per `neighbor_interval_s`
(the first change after a quiet spell goes at once). Nothing is fanned out to every agent.

Which hosts serve a network's segments, and the neighbor list a first port gets, come from a view per
network kept in the conductor: its bound ports as neighbors see them. It is read from the cell once (one
statement), updated from this conductor's own batches, and read again after `VIEW_TTL_S` to take in other
conductors' changes; a boot reads nothing. Agents ask for a full sync on start and periodically; that
read is fresh, so a lost round, or a change another conductor made that a view had not seen yet, heals
at the next full sync (and an agent sent a port for a network whose neighbors it lacks asks for one at
once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection

from canopy.conductor import sgsync
from canopy.network import desired
from canopy.network.desired import Topology
from canopy.network.port_record import PortRecord
from canopy.network.port_views import rows_where
from canopy.rpc.base import NoRoute, Target
from canopy.rpc.calls import NeighborRow, NetNeighbor, NetworkSync, PortChange, PortsChanged, RequestNetworkSync
from canopy.rpc.messages import Message

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor.netsync")
QOS_TTL_S = 300.0  # a safety net: QoS changes are fanned out to every conductor, which drop their cache
VIEW_TTL_S = 30.0  # a network's view is read again after this long (other conductors' changes)
NEIGHBOR_INTERVAL_S = 0.5  # at most one round of neighbor changes per this long
SEND_CONCURRENCY = 64
Row = tuple[dict[str, Any], list[dict[str, str]]]
Pending = tuple[NeighborRow | None, set[str | None]]


@dataclass
class _Batch:
    changes: dict[str, PortChange] = field(default_factory=dict)
    rows: dict[str, Row] = field(default_factory=dict)  # current rows the caller already had
    networks: set[str] = field(default_factory=set)  # networks whose every port is re-sent
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


HOST: Final = 5  # a NeighborRow's host
SEGMENT: Final = 2  # a NeighborRow's segment


def row_of(n: NetNeighbor) -> NeighborRow:
    """A neighbor as a row, the form long lists of them travel in."""
    return (n.port_id, n.network_id, n.segment_id, n.mac_address, n.ips, n.host, n.tunnel_ip, n.rev)


@dataclass
class NetView:
    """What a conductor knows of one network: its ports bound to a host, as their neighbors see them, and
    how many of them each host holds."""

    loaded_at: float
    ports: dict[str, NeighborRow] = field(default_factory=dict)
    hosts: Counter[str] = field(default_factory=Counter)
    seg_hosts: Counter[tuple[str | None, str]] = field(default_factory=Counter)  # (segment, host) -> ports

    @classmethod
    def of(cls, neighbors: list[NetNeighbor], loaded_at: float) -> NetView:
        view = cls(loaded_at)
        for n in neighbors:
            view.put(n.port_id, row_of(n))
        return view

    def put(self, port_id: str, row: NeighborRow | None) -> None:
        """Record a port's new state (None: unbound or deleted)."""
        old = self.ports.pop(port_id, None)
        if old is not None:
            _less(self.hosts, old[HOST])
            _less(self.seg_hosts, (old[SEGMENT], old[HOST]))
        if row is not None:
            self.ports[port_id] = row
            self.hosts[row[HOST]] += 1
            self.seg_hosts[(row[SEGMENT], row[HOST])] += 1

    def serving(self, segment_id: str | None) -> set[str]:
        """The hosts that hold ports of one segment of the network (None: the network itself)."""
        return {host for seg, host in self.seg_hosts if seg == segment_id}

    def holds(self, host: str, besides: Collection[str]) -> bool:
        """Whether the host holds ports of the network other than those `besides`."""
        besides_here = sum(1 for pid in besides if pid in self.ports and self.ports[pid][HOST] == host)
        return self.hosts.get(host, 0) > besides_here

    def others(self, host: str) -> list[NeighborRow]:
        """The network's ports on other hosts than `host` (its neighbors there)."""
        return [r for r in self.ports.values() if r[HOST] != host]


def _less(counter: Counter[Any], key: Any) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class NetSync:
    """A conductor's deliverer of network state to agents."""

    def __init__(self, env: TaskEnv, batch_s: float = 0.01, call_timeout_s: float = 60.0,
                 neighbor_interval_s: float = NEIGHBOR_INTERVAL_S) -> None:
        self.env = env
        self.batch_s = batch_s
        self.call_timeout_s = call_timeout_s
        self.neighbor_interval_s = neighbor_interval_s
        self.topology = Topology()
        self.views: dict[str, NetView] = {}
        self._host_ips: dict[str, str | None] = {}  # tunnel endpoints seen in views
        self._qos: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # policy -> (loaded at, rules)
        self._net_qos: dict[str, tuple[float, str]] = {}  # network -> (loaded at, policy or "")
        self._batch = _Batch()
        self._wake = asyncio.Event()
        # network -> port -> (its new state as a neighbor (None: gone), the segments that must hear of it),
        # for the next neighbor round
        self._pending: dict[str, dict[str, Pending]] = {}
        self._neighbors_due = asyncio.Event()
        self._last_round = -1e18
        self._tasks: list[asyncio.Task[None]] = []
        self.flushes = 0
        self.neighbor_rounds = 0

    @property
    def pending_neighbor_changes(self) -> int:
        """Neighbor changes waiting for the next round."""
        return sum(len(changes) for changes in self._pending.values())

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flusher(), name="netsync"),
                       asyncio.create_task(self._neighbor_flusher(), name="netsync-neighbors")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def handle(self, msg: Message) -> Message | None:
        """RequestNetworkSync (reply: the full state) and PortsChanged (queued)."""
        if isinstance(msg, RequestNetworkSync):
            return await desired.full_state(self.env.dbs, self.env.cell_name, msg.host, self.topology)
        if isinstance(msg, PortsChanged):
            if msg.qos_changed:
                self.forget_qos()
            self.queue(msg.changes, networks=msg.networks)
            return None
        raise ValueError(f"netsync does not handle {msg.kind}")

    def forget_qos(self) -> None:
        """Drop the cached QoS (a policy or a network's policy changed)."""
        self._qos.clear()
        self._net_qos.clear()

    def queue(self, changes: list[PortChange], *, records: list[PortRecord] | None = None,
              networks: list[str] | None = None) -> asyncio.Future[None]:
        """Queue port changes (with the ports' records when the caller has them); the future resolves once
        the owner hosts have applied them."""
        batch = self._batch
        for change in changes:
            prior = batch.changes.get(change.port_id)
            old_host = prior.old_host if prior is not None else change.old_host
            batch.changes[change.port_id] = PortChange(port_id=change.port_id, network_id=change.network_id,
                                                       old_host=old_host)
            batch.rows.pop(change.port_id, None)
        for record in records or []:  # the row netsync would read back from the database
            batch.rows[record.id] = (record.row(), list(record.fixed_ips))
        batch.networks.update(networks or [])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch.waiters.append(done)
        self._wake.set()
        return done

    async def ports_changed(self, changes: list[PortChange], *, records: list[PortRecord] | None = None,
                            wait: bool = False) -> None:
        """Queue changes; with `wait`, return once their hosts applied them (errors raise)."""
        done = self.queue(changes, records=records)
        if wait:
            await done

    async def _flusher(self) -> None:
        idle_since = -1e18
        while True:
            await self._wake.wait()
            # Adaptive: after a quiet spell a change goes at once (a lone boot waits for nothing); while
            # changes keep coming, the window lets a burst join one batch (and changes queued during a
            # flush form the next batch by themselves).
            if self.batch_s > 0 and time.monotonic() - idle_since < self.batch_s:
                await asyncio.sleep(self.batch_s)
            else:
                await asyncio.sleep(0)  # the changes queued in the same turn of the loop join it
            self._wake.clear()
            batch, self._batch = self._batch, _Batch()
            try:
                await self.flush(batch)
            except Exception as exc:
                log.exception("network sync failed")
                for w in batch.waiters:
                    if not w.done():
                        w.set_exception(exc)
                continue
            for w in batch.waiters:
                if not w.done():
                    w.set_result(None)
            if self._pending and time.monotonic() >= self._last_round + self.neighbor_interval_s:
                await self._neighbor_round()  # after a quiet spell, at once
            if not self._wake.is_set():
                idle_since = time.monotonic()

    async def _neighbor_flusher(self) -> None:
        while True:
            await self._neighbors_due.wait()
            await asyncio.sleep(max(self._last_round + self.neighbor_interval_s - time.monotonic(), self.batch_s))
            await self._neighbor_round()

    async def _neighbor_round(self) -> None:
        """Send the neighbor changes queued since the last round to the hosts that serve their segments
        (and keep neighbors there): one cast per such host with all of its changes."""
        self._neighbors_due.clear()
        pending, self._pending = self._pending, {}
        messages = self._round_messages(pending)
        if not messages:
            return
        if self._heard(pending):  # else nobody else serves these networks: the next change goes at once
            self._last_round = time.monotonic()
        self.neighbor_rounds += 1
        sent_at = time.time()
        for host, (rows, gone) in messages.items():
            try:
                await self.env.bus.cast(Target("agent", host), NetworkSync(
                    host=host, neighbor_rows=rows, removed_neighbors=gone, sent_at=sent_at))
            except Exception as exc:
                log.warning("neighbor changes for %s not delivered (its next full sync heals them): %s", host, exc)

    def _round_messages(self, pending: dict[str, dict[str, Pending]]
                        ) -> dict[str, tuple[list[NeighborRow], list[str]]]:
        """host -> (the neighbors it gains or sees change, those it loses), for the hosts other than the
        changed ports' own that serve their segments, as far as the views know."""
        out: dict[str, tuple[list[NeighborRow], list[str]]] = {}
        for network_id, changes in pending.items():
            view = self.views.get(network_id)
            if view is None:
                continue  # not loaded: its hosts learn at their next full sync
            serving = {seg: view.serving(seg) for _, segs in changes.values() for seg in segs}
            for pid, (row, segs) in changes.items():
                for host in {h for seg in segs for h in serving[seg]}:
                    if row is not None and row[HOST] == host:
                        continue  # its own host had the port itself
                    rows, gone = out.setdefault(host, ([], []))
                    if row is not None:
                        rows.append(row)
                    else:
                        gone.append(pid)
        return out

    def _heard(self, pending: dict[str, dict[str, Pending]]) -> bool:
        """Whether, as far as the views know, a host other than the changed ports' own serves a network of
        the round."""
        for network_id, changes in pending.items():
            own = {row[HOST] for row, _ in changes.values() if row is not None}
            view = self.views.get(network_id)
            if view is not None and any(host not in own for host in view.hosts):
                return True
        return False

    # -- one batch --------------------------------------------------------------------------------

    async def flush(self, batch: _Batch) -> None:
        """Deliver one batch to its owner hosts (and queue the neighbor changes for the next round)."""
        if not batch.changes and not batch.networks:
            return
        now = time.monotonic()
        known = {ch.network_id for ch in batch.changes.values()}
        if self.topology.missing(known, ()):
            await self._topology_and_qos(sorted(known), set(), {})
        # Only networks whose hosts keep neighbors (VXLAN, ARP responder) need a view: a flat network
        # without a responder costs a boot its owner host's message and nothing else.
        stale = {n for n in known if self.topology.needs_neighbors(n)
                 and (n not in self.views or self.views[n].loaded_at < now - VIEW_TTL_S)}
        rows = dict(batch.rows)
        loaded: dict[str, Any] = {}
        vxlan_hosts = {r["host_id"] for r, _ in rows.values() if r["host_id"] and r["host_id"] not in self._host_ips
                       and self.topology.networks.get(r["network_id"], {}).get("network_type") == "vxlan"}
        if stale or vxlan_hosts or batch.networks or any(pid not in rows for pid in batch.changes):
            more, loaded, ips = await self.env.db.read_fresh(self._read_cell, batch, sorted(stale))
            rows.update(more)
            self._host_ips.update(ips)
        port_policies = {pid: r[0]["qos_policy_id"] for pid, r in rows.items() if r[0].get("qos_policy_id")}
        network_ids = sorted(known | {r[0]["network_id"] for r in rows.values()})
        subnet_ids = {f["subnet_id"] for _, ips in rows.values() for f in ips}
        rules, by_network = await self._topology_and_qos(network_ids, subnet_ids, port_policies)
        for network_id, neighbors in loaded.items():
            self.views[network_id] = NetView.of(neighbors, now)
            self._host_ips.update((n.host, n.tunnel_ip) for n in neighbors)
        messages = self._messages(batch, rows, rules, by_network)
        await self._send(messages)
        self.flushes += 1

    def _read_cell(self, conn: Connection, batch: _Batch, stale: list[str]
                   ) -> tuple[dict[str, Row], dict[str, list[NetNeighbor]], dict[str, str | None]]:
        """The rows the batch lacks, every port of the networks it re-sends, the views to (re)load, and the
        addresses of new hosts on VXLAN networks."""
        from canopy.db import tables_cell as c

        rows: dict[str, Row] = {}
        unknown = [pid for pid in batch.changes if pid not in batch.rows]
        if unknown:
            rows.update((r["id"], (r, ips)) for r, ips in rows_where(conn, c.ports.c.id.in_(unknown)))
        if batch.networks:
            found = rows_where(conn, c.ports.c.network_id.in_(sorted(batch.networks)))
            rows.update((r["id"], (r, ips)) for r, ips in found if r["host_id"])
        topo = self.topology
        stale = [n for n in stale if n in topo.networks]
        loaded = desired.network_ports(conn, stale, topo) if stale else {}
        # VXLAN neighbors need their host's address (their tunnel endpoint): read those not seen yet.
        unseen = {r["host_id"] for r, _ in rows.values() if r["host_id"] and r["host_id"] not in self._host_ips
                  and topo.networks.get(r["network_id"], {}).get("network_type") == "vxlan"}
        unseen -= {n.host for ns in loaded.values() for n in ns}
        return rows, loaded, desired.host_ips(conn, sorted(unseen)) if unseen else {}

    async def _topology_and_qos(self, network_ids: list[str], subnet_ids: set[str], port_policies: dict[str, str]
                                ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        now = time.monotonic()
        fresh = now - QOS_TTL_S
        need_qos = ([n for n in network_ids if self._net_qos.get(n, (-1e18, ""))[0] < fresh] or
                    [p for p in port_policies.values() if self._qos.get(p, (-1e18, []))[0] < fresh])
        if need_qos or self.topology.missing(network_ids, subnet_ids):
            def read(conn: Connection) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
                if self.topology.missing(network_ids, subnet_ids):
                    desired.load_topology(conn, self.topology, network_ids)
                return desired.qos_limits(conn, port_policies, network_ids)

            rules, by_network = await self.env.dbs.global_db.read_fresh(read)
            for n in network_ids:
                self._net_qos[n] = (now, by_network.get(n, ""))
            for p in {*port_policies.values(), *by_network.values()} - {""}:
                self._qos[p] = (now, rules.get(p, []))
        return ({p: r for p, (_, r) in self._qos.items()},
                {n: pol for n, (_, pol) in self._net_qos.items() if pol})

    def _messages(self, batch: _Batch, rows: dict[str, Row], rules: dict[str, list[dict[str, Any]]],
                  by_network: dict[str, str]) -> dict[str, NetworkSync]:
        """The owner hosts' messages; the views take in the changes, and the neighbor round gets them."""
        topo = self.topology
        out: dict[str, dict[str, Any]] = {}

        def of(host: str) -> dict[str, Any]:
            return out.setdefault(host, {"segments": {}, "ports": [], "removed_ports": [], "neighbor_rows": [],
                                         "complete_networks": []})

        resend = {pid for pid, (r, _) in rows.items() if r["network_id"] in batch.networks}
        placed: dict[str, NeighborRow | None] = {}  # changed port -> where it is now, as a neighbor
        owners: set[tuple[str, str]] = set()
        for pid in sorted(set(batch.changes) | resend):
            change = batch.changes.get(pid)
            row = rows.get(pid)
            known = row is not None and row[0]["network_id"] in topo.networks
            bound = known and row[0].get("ofport") is not None and bool(row[0]["host_id"])  # type: ignore[index]
            new_host = row[0]["host_id"] if bound else ""  # type: ignore[index]
            network_id = row[0]["network_id"] if row is not None else change.network_id  # type: ignore[union-attr]
            if change is not None and change.old_host and change.old_host != new_host:
                of(change.old_host)["removed_ports"].append(pid)
            if bound:
                r, ips = row  # type: ignore[misc]
                of(new_host)["ports"].append(desired.net_port(r, ips, topo, rules, by_network))
                seg = topo.segment(network_id, ips)
                of(new_host)["segments"][(network_id, seg.segment_id)] = seg
            if change is None:
                continue  # a QoS re-send: the neighbors see no difference
            if not topo.needs_neighbors(network_id):
                continue  # its hosts keep no neighbors: nobody else hears of it
            if bound:
                owners.add((new_host, network_id))
            on_host = known and bool(row[0]["host_id"])  # type: ignore[index]
            placed[pid] = self._as_neighbor(row) if on_host else None  # type: ignore[arg-type]
        # A host's first port on a network (it held none there but this batch's) brings the network's
        # whole neighbor list, this batch's changes included.
        first = [(host, network_id) for host, network_id in sorted(owners)
                 if network_id not in self.views or not self.views[network_id].holds(host, besides=placed)]
        for pid, neighbor in placed.items():
            network_id = rows[pid][0]["network_id"] if pid in rows else batch.changes[pid].network_id
            view = self.views.get(network_id)
            old = view.ports.get(pid) if view is not None else None
            if view is not None:
                view.put(pid, neighbor)
            # the segments that hear of it: where it is now, and where it was
            segs = {row[SEGMENT] for row in (neighbor, old) if row is not None}
            prior = self._pending.setdefault(network_id, {}).get(pid)
            self._pending[network_id][pid] = (neighbor, segs | (prior[1] if prior is not None else set()))
        for host, network_id in first:
            view = self.views.get(network_id)
            if view is not None:
                of(host)["neighbor_rows"].extend(view.others(host))
                of(host)["complete_networks"].append(network_id)
        if placed:
            self._neighbors_due.set()
        sent_at = time.time()
        return {host: NetworkSync(host=host, segments=list(m["segments"].values()), ports=m["ports"],
                                  removed_ports=m["removed_ports"], neighbor_rows=m["neighbor_rows"],
                                  complete_networks=m["complete_networks"], sent_at=sent_at)
                for host, m in out.items()}

    def _as_neighbor(self, row: Row) -> NeighborRow:
        r, ips = row
        return row_of(desired.neighbor_of({**r, "fixed_ips": ips, "host_ip": self._host_ips.get(r["host_id"])},
                                          self.topology))

    async def _send(self, messages: dict[str, NetworkSync]) -> None:
        """Owners (their ports changed) are called, together, and their failures raised; neighbors are
        cast (one after the other: a cast only hands the message to the bus)."""
        gate = asyncio.Semaphore(SEND_CONCURRENCY)
        bus = self.env.bus
        calls = {h: m for h, m in messages.items() if m.ports or m.removed_ports}
        failures: list[tuple[str, BaseException]] = []
        for host, msg in messages.items():
            if host not in calls:
                try:
                    await bus.cast(Target("agent", host), msg)
                except Exception as exc:
                    failures.append((host, exc))

        async def call(host: str, msg: NetworkSync) -> None:
            async with gate:
                await bus.call(Target("agent", host), msg, timeout=self.call_timeout_s)

        results = await asyncio.gather(*(call(h, m) for h, m in calls.items()), return_exceptions=True)
        failures += [(h, r) for h, r in zip(calls, results, strict=True) if isinstance(r, BaseException)]
        for host, err in failures:
            log.warning("network state for %s not delivered: %s", host, err)
        real = [err for _, err in failures if not isinstance(err, NoRoute)]  # a host without an agent: skipped
        if real:
            raise real[0]


# -- the conductor's hooks (a boot's and a delete's ports) ----------------------------------------------


async def prepare_networking(env: TaskEnv, requests: list[dict[str, Any]], host: str, project_id: str
                             ) -> tuple[list[dict[str, Any]], Any]:
    """A boot's network requests with the subnets of the segment the host's rack reaches (routed networks),
    and the project's address policy (quotas, hold time): one global read, of one statement unless the
    project has a limit."""
    from canopy.network import limits, segments

    net = env.settings.network
    rack = await env.db.read(segments.rack_of_host, host) if segments.any_segmented(requests) else None

    def read(conn: Connection) -> tuple[list[dict[str, Any]], limits.AddressPolicy]:
        placed = [segments.place_request(conn, req, rack) for req in requests]
        quota = limits.quota_of(conn, project_id, net.quota_defaults())
        if quota["port"] >= 0 or quota["public_ip"] >= 0:  # counting needs every public network
            return placed, limits.load_policy(conn, project_id, net.quota_defaults(), net.public_ip_hold_s)
        # No limit to count against: whether the boot's own networks are public (their hold time) is
        # all the policy needs, and the requests carry their networks' rows.
        public = frozenset(r["network"]["id"] for r in placed if r["network"].get("external"))
        return placed, limits.AddressPolicy(project_id, quota["port"], quota["public_ip"], public,
                                            net.public_ip_hold_s)

    return await env.dbs.global_db.read(read)


async def ports_created(env: TaskEnv, ports: list[PortRecord]) -> None:
    """A boot's new ports: wait until their host has applied their flows (before the guest starts)."""
    if ports:
        await env.netsync.ports_changed([PortChange(port_id=p.id, network_id=p.network_id) for p in ports],
                                        records=ports, wait=True)


async def ports_removed(env: TaskEnv, views: list[dict[str, Any]]) -> None:
    """Deleted ports: their host and their networks' other hosts forget them (not waited for)."""
    if views:
        env.netsync.queue([PortChange(port_id=v["id"], network_id=v["network_id"], old_host=v["binding:host_id"])
                            for v in views])
        # the hosts whose rules name the ports' groups forget their addresses
        await sgsync.members_left(env, views)


async def release_policy(env: TaskEnv, project_id: str) -> Any:
    """What deleting a project's ports must respect: the hold time of public addresses (no read when off)."""
    from canopy.network import limits

    net = env.settings.network
    if net.public_ip_hold_s <= 0:
        return limits.NO_LIMITS
    return await env.dbs.global_db.read(limits.load_policy, project_id, net.quota_defaults(), net.public_ip_hold_s)
