"""Delivering each host's desired network state to its agent, in batches.

Port changes (a boot's ports, a deleted server's, an API port update relayed as PortsChanged) are
queued; a flusher takes everything queued within `batch_s` and, with one cell query for the whole batch
(plus a global one when QoS or topology is not cached), builds one NetworkSync per affected host:
- the host that holds a changed port gets the port (or its removal), and the neighbors of the port's
  network when it is the host's first port there;
- every other host with ports on that network gets the port as a neighbor (ARP responder, tunnels).
Owner hosts are called (the caller may wait until the flows are applied: a boot does, before it starts
the guest); neighbor updates are cast. Agents ask for a full sync on start and periodically; that read
is fresh, so a lost cast heals at the next full sync.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from canopy.network import desired
from canopy.network.desired import Topology
from canopy.network.port_views import rows_where
from canopy.rpc.base import NoRoute, Target
from canopy.rpc.calls import NetworkSync, PortChange, PortsChanged, RequestNetworkSync
from canopy.rpc.messages import Message

if TYPE_CHECKING:
    from canopy.conductor.service import Conductor

log = logging.getLogger("canopy.conductor.netsync")
QOS_TTL_S = 300.0  # a safety net: QoS changes are fanned out to every conductor, which drop their cache
SEND_CONCURRENCY = 64
Row = tuple[dict[str, Any], list[dict[str, str]]]


@dataclass
class _Batch:
    changes: dict[str, PortChange] = field(default_factory=dict)
    rows: dict[str, Row] = field(default_factory=dict)  # current rows the caller already had
    networks: set[str] = field(default_factory=set)  # networks whose every port is re-sent
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class NetSync:
    """A conductor's deliverer of network state to agents."""

    def __init__(self, cond: Conductor, batch_s: float = 0.01, call_timeout_s: float = 60.0) -> None:
        self.cond = cond
        self.batch_s = batch_s
        self.call_timeout_s = call_timeout_s
        self.topology = Topology()
        self._qos: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # policy -> (loaded at, rules)
        self._net_qos: dict[str, tuple[float, str]] = {}  # network -> (loaded at, policy or "")
        self._batch = _Batch()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flusher(), name="netsync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def handle(self, msg: Message) -> Message | None:
        """RequestNetworkSync (reply: the full state) and PortsChanged (queued)."""
        if isinstance(msg, RequestNetworkSync):
            return await desired.full_state(self.cond.dbs, self.cond.cloud.cell_name, msg.host, self.topology)
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

    def queue(self, changes: list[PortChange], *, views: list[dict[str, Any]] | None = None,
              networks: list[str] | None = None) -> asyncio.Future[None]:
        """Queue port changes (with the current views when the caller has them); the future resolves once
        the owner hosts have applied them."""
        batch = self._batch
        for change in changes:
            prior = batch.changes.get(change.port_id)
            old_host = prior.old_host if prior is not None else change.old_host
            batch.changes[change.port_id] = PortChange(port_id=change.port_id, network_id=change.network_id,
                                                       old_host=old_host)
            batch.rows.pop(change.port_id, None)
        for view in views or []:
            batch.rows[view["id"]] = row_of_view(view)
        batch.networks.update(networks or [])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch.waiters.append(done)
        self._wake.set()
        return done

    async def ports_changed(self, changes: list[PortChange], *, views: list[dict[str, Any]] | None = None,
                            wait: bool = False) -> None:
        """Queue changes; with `wait`, return once their hosts applied them (errors raise)."""
        done = self.queue(changes, views=views)
        if wait:
            await done

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            if self.batch_s > 0:
                await asyncio.sleep(self.batch_s)  # let a burst of changes join one batch
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

    # -- one batch --------------------------------------------------------------------------------

    async def flush(self, batch: _Batch) -> None:
        """Build and deliver the messages of one batch."""
        if not batch.changes and not batch.networks:
            return
        rows, hosts, snaps = await self.cond.db.read_fresh(self._read_cell, batch)
        port_policies = {pid: r[0]["qos_policy_id"] for pid, r in rows.items() if r[0].get("qos_policy_id")}
        network_ids = sorted({ch.network_id for ch in batch.changes.values()}
                             | {r[0]["network_id"] for r in rows.values()})
        subnet_ids = {f["subnet_id"] for _, ips in rows.values() for f in ips}
        rules, by_network = await self._topology_and_qos(network_ids, subnet_ids, port_policies)
        messages = self._messages(batch, rows, hosts, snaps, rules, by_network)
        await self._send(messages)
        self.flushes += 1

    def _read_cell(self, conn: Connection, batch: _Batch) -> tuple[dict[str, Row], dict[str, dict[str, int]],
                                                                   dict[tuple[str, str], list[dict[str, Any]]]]:
        from canopy.db import tables_cell as c

        rows = dict(batch.rows)
        unknown = [pid for pid in batch.changes if pid not in rows]
        if unknown:
            rows.update((r["id"], (r, ips)) for r, ips in rows_where(conn, c.ports.c.id.in_(unknown)))
        if batch.networks:
            found = rows_where(conn, c.ports.c.network_id.in_(sorted(batch.networks)))
            rows.update((r["id"], (r, ips)) for r, ips in found if r["host_id"])
        network_ids = sorted({ch.network_id for ch in batch.changes.values()}
                             | {r["network_id"] for r, _ in rows.values()})
        owners: dict[tuple[str, str], list[str]] = defaultdict(list)
        for pid, (r, _) in rows.items():
            if r["host_id"] and r.get("ofport") is not None and pid in batch.changes:
                owners[(r["host_id"], r["network_id"])].append(pid)
        hosts, snaps = desired.fanout_rows(conn, network_ids, [(h, n, ids) for (h, n), ids in owners.items()])
        return rows, hosts, snaps

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

            rules, by_network = await self.cond.dbs.global_db.read_fresh(read)
            for n in network_ids:
                self._net_qos[n] = (now, by_network.get(n, ""))
            for p in {*port_policies.values(), *by_network.values()} - {""}:
                self._qos[p] = (now, rules.get(p, []))
        return ({p: r for p, (_, r) in self._qos.items()},
                {n: pol for n, (_, pol) in self._net_qos.items() if pol})

    def _messages(self, batch: _Batch, rows: dict[str, Row], hosts: dict[str, dict[str, int]],
                  snaps: dict[tuple[str, str], list[dict[str, Any]]], rules: dict[str, list[dict[str, Any]]],
                  by_network: dict[str, str]) -> dict[str, NetworkSync]:
        topo = self.topology
        out: dict[str, dict[str, Any]] = defaultdict(lambda: {"segments": {}, "ports": [], "removed_ports": [],
                                                              "neighbors": [], "removed_neighbors": [],
                                                              "complete_networks": []})
        resend = {pid for pid, (r, _) in rows.items() if r["network_id"] in batch.networks}
        for pid in set(batch.changes) | resend:
            change = batch.changes.get(pid)
            row = rows.get(pid)
            bound = row is not None and row[0]["host_id"] and row[0].get("ofport") is not None \
                and row[0]["network_id"] in topo.networks
            new_host = row[0]["host_id"] if bound else ""  # type: ignore[index]
            network_id = row[0]["network_id"] if row is not None else change.network_id  # type: ignore[union-attr]
            if change is not None and change.old_host and change.old_host != new_host:
                out[change.old_host]["removed_ports"].append(pid)
            if bound:
                r, ips = row  # type: ignore[misc]
                out[new_host]["ports"].append(desired.net_port(r, ips, topo, rules, by_network))
                seg = topo.segment(network_id, ips)
                out[new_host]["segments"][(network_id, seg.segment_id)] = seg
            if change is None:
                continue  # a QoS re-send: the neighbors see no difference
            as_neighbor = desired.neighbor_of({**row[0], "fixed_ips": row[1]}, topo) if bound else None  # type: ignore[index]
            for host in hosts.get(network_id, {}):
                if host == new_host:
                    continue
                if as_neighbor is not None:
                    out[host]["neighbors"].append(as_neighbor)
                else:
                    out[host]["removed_neighbors"].append(pid)
        for (host, network_id), snap in snaps.items():
            out[host]["neighbors"].extend(desired.neighbor_of(r, topo) for r in snap)
            out[host]["complete_networks"].append(network_id)
        sent_at = time.time()
        return {host: NetworkSync(host=host, segments=list(m["segments"].values()), ports=m["ports"],
                                  removed_ports=m["removed_ports"], neighbors=m["neighbors"],
                                  removed_neighbors=m["removed_neighbors"],
                                  complete_networks=m["complete_networks"], sent_at=sent_at)
                for host, m in out.items()}

    async def _send(self, messages: dict[str, NetworkSync]) -> None:
        """Owners (their ports changed) are called and their failures raised; neighbors are cast."""
        gate = asyncio.Semaphore(SEND_CONCURRENCY)
        bus = self.cond.bus

        async def one(host: str, msg: NetworkSync) -> None:
            async with gate:
                if msg.ports or msg.removed_ports:
                    await bus.call(Target("agent", host), msg, timeout=self.call_timeout_s)
                else:
                    await bus.cast(Target("agent", host), msg)

        results = await asyncio.gather(*(one(h, m) for h, m in messages.items()), return_exceptions=True)
        failures = [(h, r) for h, r in zip(messages, results, strict=True) if isinstance(r, BaseException)]
        for host, exc in failures:
            log.warning("network state for %s not delivered: %s", host, exc)
        real = [exc for _, exc in failures if not isinstance(exc, NoRoute)]  # a host without an agent: skipped
        if real:
            raise real[0]


def row_of_view(view: dict[str, Any]) -> Row:
    """A port view (as create_port returns it) as the row and addresses netsync reads from the database."""
    stamp = view.get("updated_at")
    updated = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ") if isinstance(stamp, str) else stamp
    row = {"id": view["id"], "network_id": view["network_id"], "project_id": view["project_id"],
           "mac_address": view["mac_address"], "device_id": view["device_id"], "host_id": view["binding:host_id"],
           "admin_state_up": view["admin_state_up"], "port_security_enabled": view["port_security_enabled"],
           "allowed_address_pairs": view["allowed_address_pairs"], "qos_policy_id": view.get("qos_policy_id"),
           "ofport": (view.get("binding:vif_details") or {}).get("ofport"), "updated_at": updated}
    return row, list(view["fixed_ips"])


# -- the conductor's hooks (a boot's and a delete's ports) ----------------------------------------------


async def prepare_networking(cond: Conductor, requests: list[dict[str, Any]], host: str, project_id: str
                             ) -> tuple[list[dict[str, Any]], Any]:
    """A boot's network requests with the subnets of the segment the host's rack reaches (routed networks),
    and the project's address policy (quotas, hold time): one global read."""
    from canopy.network import limits, segments

    net = cond.settings.network
    rack = await cond.db.read(segments.rack_of_host, host) if segments.any_segmented(requests) else None

    def read(conn: Connection) -> tuple[list[dict[str, Any]], limits.AddressPolicy]:
        placed = [segments.place_request(conn, req, rack) for req in requests]
        return placed, limits.load_policy(conn, project_id, net.quota_defaults(), net.public_ip_hold_s)

    return await cond.dbs.global_db.read(read)


async def ports_created(cond: Conductor, ports: list[dict[str, Any]]) -> None:
    """A boot's new ports: wait until their host has applied their flows (before the guest starts)."""
    if ports:
        await cond.netsync.ports_changed([PortChange(port_id=p["id"], network_id=p["network_id"]) for p in ports],
                                         views=ports, wait=True)


async def ports_removed(cond: Conductor, views: list[dict[str, Any]]) -> None:
    """Deleted ports: their host and their networks' other hosts forget them (not waited for)."""
    if views:
        cond.netsync.queue([PortChange(port_id=v["id"], network_id=v["network_id"], old_host=v["binding:host_id"])
                            for v in views])


async def release_policy(cond: Conductor, project_id: str) -> Any:
    """What deleting a project's ports must respect: the hold time of public addresses (no read when off)."""
    from canopy.network import limits

    net = cond.settings.network
    if net.public_ip_hold_s <= 0:
        return limits.NO_LIMITS
    return await cond.dbs.global_db.read(limits.load_policy, project_id, net.quota_defaults(), net.public_ip_hold_s)
