"""What an agent knows of its host's desired network state, and how a NetworkSync message changes it.
Pure: the node feeds it messages and compiles what `host_state()` returns.

Messages may cross (several conductors cast changes), so each port and neighbor carries a revision
(its updated_at) and an older one never replaces a newer one; a removed port leaves a tombstone for a
while so that a late update cannot bring it back.

A full sync is a snapshot read some time before it arrives: a change sent after that read (a boot's port,
a delete) may reach the agent first. So while a full sync is awaited (`expect_full`), every change
received is kept, and merged again on top of the snapshot when it comes; revisions and tombstones make
that replay harmless for the changes the snapshot already holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from canopy.agent.net import tables as t
from canopy.agent.net.model import (
    AddressPair,
    BandwidthLimit,
    Firewall,
    HostNetState,
    Neighbor,
    SecGroup,
    Segment,
    SgRule,
    VmPort,
)
from canopy.rpc.calls import NeighborRow, NetNeighbor, NetPort, NetSecGroup, NetSegment, NetworkSync

SegmentKey = tuple[str, str | None]
TOMBSTONE_S = 600.0
MAX_TOMBSTONES = 100_000
MAX_REPLAY = 10_000  # changes kept while a full sync is awaited; beyond, the next full sync is asked for


class Peer(NamedTuple):
    """A neighbor as the agent keeps it: what a NetNeighbor (or a NeighborRow) says, as a light tuple (a
    host keeps thousands)."""

    port_id: str
    network_id: str
    segment_id: str | None
    mac_address: str
    ips: tuple[str, ...]
    host: str
    tunnel_ip: str | None
    rev: float

    @classmethod
    def of(cls, n: NetNeighbor) -> Peer:
        return cls(n.port_id, n.network_id, n.segment_id, n.mac_address, tuple(n.ips), n.host, n.tunnel_ip, n.rev)

    @classmethod
    def of_row(cls, r: NeighborRow) -> Peer:
        return cls(r[0], r[1], r[2], r[3], tuple(r[4]), r[5], r[6], r[7])


@dataclass
class DesiredState:
    """The segments, local ports and neighbors of one host, merged from NetworkSync messages."""

    host: str
    uplink_ofports: dict[str, int] = field(default_factory=dict)  # configured physnet -> uplink port
    tunnel_ip: str | None = None
    segments: dict[SegmentKey, NetSegment] = field(default_factory=dict)
    ports: dict[str, NetPort] = field(default_factory=dict)
    neighbors: dict[str, Peer] = field(default_factory=dict)
    tombstones: dict[str, float] = field(default_factory=dict)
    synced: bool = False  # a full sync has been received
    wall_clock: Callable[[], float] = time.time
    groups: dict[str, SecGroup] = field(default_factory=dict)  # security groups the ports need
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # remote group -> member addresses
    awaited_fulls: int = 0  # full syncs asked for and not yet settled
    since_asked: list[NetworkSync] = field(default_factory=list)  # changes received meanwhile
    overflowed: bool = False  # too many changes to keep: the snapshot cannot be trusted

    def expect_full(self) -> None:
        """A full sync was just asked for: keep the changes that arrive until it is settled."""
        if self.awaited_fulls == 0:
            self.since_asked, self.overflowed = [], False
        self.awaited_fulls += 1

    def full_settled(self) -> None:
        """A full sync asked for arrived (or failed): stop keeping changes once none is awaited."""
        self.awaited_fulls = max(self.awaited_fulls - 1, 0)
        if self.awaited_fulls == 0:
            self.since_asked = []

    def merge(self, msg: NetworkSync) -> bool:
        """Take in a message; True when the agent should ask for a full sync (it was sent changes for a
        network whose neighbors it does not know, or more changes crossed a full sync than it keeps)."""
        if not msg.full:
            if self.awaited_fulls:
                self._keep(msg)
            return self._merge(msg)
        self.segments, self.ports, self.neighbors, self.tombstones = {}, {}, {}, {}
        self.groups, self.members = {}, {}
        self.synced = True
        if msg.tunnel_ip and not self.tunnel_ip:
            self.tunnel_ip = msg.tunnel_ip
        self._merge(msg)
        for change in self.since_asked:  # sent after the snapshot was read, perhaps: they win by revision
            self._merge(change, replay=True)
        overflowed, self.overflowed = self.overflowed, False
        return overflowed

    def _keep(self, msg: NetworkSync) -> None:
        if len(self.since_asked) < MAX_REPLAY:
            self.since_asked.append(msg)
        else:
            self.overflowed = True

    def _merge(self, msg: NetworkSync, replay: bool = False) -> bool:
        """Merge one message. A replayed one (a change that crossed a full sync) neither removes a port the
        snapshot holds in a later revision than the removal, nor drops the snapshot's neighbors for its
        complete lists (its rows still count, by revision)."""
        known = {p.network_id for p in self.ports.values()}
        used_before = self._used()
        for seg in msg.segments:
            self.segments[(seg.network_id, seg.segment_id)] = seg
        self._merge_groups(msg)
        removed_at = msg.sent_at or self.wall_clock()
        for port_id in msg.removed_ports:
            current = self.ports.get(port_id)
            if not (replay and current is not None and current.rev > removed_at):
                self._remove_port(port_id, removed_at)
        for port in msg.ports:
            self._upsert_port(port)
        for network_id in () if replay else msg.complete_networks:
            self.neighbors = {k: n for k, n in self.neighbors.items() if n.network_id != network_id}
        for port_id in msg.removed_neighbors:
            self.neighbors.pop(port_id, None)
        self._forget_unused(used_before)
        wanted = self._neighborly()
        for n in (*map(Peer.of, msg.neighbors), *map(Peer.of_row, msg.neighbor_rows)):
            old = self.neighbors.get(n.port_id)
            if ((old is None or n.rev >= old.rev) and n.port_id not in self.ports
                    and (n.network_id, n.segment_id) in wanted):
                self.neighbors[n.port_id] = n
        new_networks = {p.network_id for p in msg.ports} - known - set(msg.complete_networks)
        if not msg.full and self.synced and self.missing_groups():
            return True  # a port in a group this host has not been sent: a full sync brings it
        return not msg.full and self.synced and bool(new_networks & {key[0] for key in wanted})

    def _merge_groups(self, msg: NetworkSync) -> None:
        for gid in msg.removed_security_groups:
            self.groups.pop(gid, None)
        for group in msg.security_groups:
            self.groups[group.id] = sec_group(group)
        for gid, ips in msg.group_members.items():
            self.members[gid] = tuple(sorted(ips))
        for gid, ips in msg.members_added.items():
            self.members[gid] = tuple(sorted(set(self.members.get(gid, ())) | set(ips)))
        for gid, ips in msg.members_removed.items():
            if gid in self.members:
                self.members[gid] = tuple(sorted(set(self.members[gid]) - set(ips)))

    def missing_groups(self) -> set[str]:
        """Groups a local port is in that this host does not know."""
        wanted = {gid for p in self.ports.values() if p.port_security_enabled for gid in p.security_groups or ()}
        return wanted - self.groups.keys()

    def firewall(self) -> Firewall:
        """The groups of the local ports, and the members of the remote groups their rules name."""
        wanted = {gid for p in self.ports.values() if p.port_security_enabled for gid in p.security_groups or ()}
        groups = tuple(self.groups[g] for g in sorted(wanted) if g in self.groups)
        remote = sorted({r.remote_group for g in groups for r in g.rules if r.remote_group})
        return Firewall(groups, tuple((g, self.members.get(g, ())) for g in remote))

    def concerns(self, msg: NetworkSync) -> bool:
        """Whether a message may change anything here: a round of neighbor changes goes to every agent,
        and only those serving one of its networks (or knowing a neighbor it removes) take it in."""
        if (msg.full or msg.ports or msg.removed_ports or msg.segments or msg.complete_networks
                or msg.security_groups or msg.group_members or msg.removed_security_groups or msg.members_added
                or msg.members_removed or not self.synced):
            return True
        used = self._neighborly()
        return (any((n.network_id, n.segment_id) in used for n in msg.neighbors)
                or any((row[1], row[2]) in used for row in msg.neighbor_rows)
                or any(port_id in self.neighbors for port_id in msg.removed_neighbors))

    def _upsert_port(self, port: NetPort) -> None:
        dead = self.tombstones.get(port.id)
        old = self.ports.get(port.id)
        if (dead is not None and port.rev <= dead) or (old is not None and port.rev < old.rev):
            return
        self.ports[port.id] = port
        self.neighbors.pop(port.id, None)  # it moved here

    def _remove_port(self, port_id: str, removed_at: float) -> None:
        old = self.ports.pop(port_id, None)
        # An update of the port written before its removal (an older revision) must not revive it.
        self.tombstones[port_id] = max(removed_at, old.rev if old is not None else 0.0)
        if len(self.tombstones) > MAX_TOMBSTONES:
            horizon = self.wall_clock() - TOMBSTONE_S
            self.tombstones = {k: v for k, v in self.tombstones.items() if v >= horizon}
            for key in list(self.tombstones)[: max(len(self.tombstones) - MAX_TOMBSTONES, 0)]:
                del self.tombstones[key]

    def _used(self) -> set[SegmentKey]:
        return {(p.network_id, p.segment_id) for p in self.ports.values()}

    def _neighborly(self) -> set[SegmentKey]:
        """The segments of local ports whose neighbors this host keeps (VXLAN, or an ARP responder)."""
        return {key for key in self._used() if key in self.segments
                and (self.segments[key].network_type == "vxlan" or self.segments[key].arp_responder)}

    def _forget_unused(self, used_before: set[SegmentKey]) -> set[SegmentKey]:
        """Drop the segments and neighbors of networks that no local port is on any more (the neighbors
        are looked at only when that set changed: no other can be held); the segments still used."""
        used = self._used()
        self.segments = {k: s for k, s in self.segments.items() if k in used}
        if used != used_before:
            self.neighbors = {k: n for k, n in self.neighbors.items() if (n.network_id, n.segment_id) in used}
        return used

    def host_state(self) -> HostNetState:
        """The compiler's input."""
        segs, ports = self.local()
        neighbors = tuple(neighbor(n, segs[(n.network_id, n.segment_id)]) for n in self.neighbors.values()
                          if (n.network_id, n.segment_id) in segs)
        return HostNetState(self.host, ports, neighbors, self.tunnel_ip, self.firewall())

    def local(self) -> tuple[dict[SegmentKey, Segment], tuple[VmPort, ...]]:
        """The compiler's segments, and the local ports on them."""
        segs = {key: segment_of(seg, self.uplink_ofports) for key, seg in self.segments.items()}
        ports = tuple(vm_port(p, segs[(p.network_id, p.segment_id)]) for p in self.ports.values()
                      if (p.network_id, p.segment_id) in segs)
        return segs, ports

    def uplinks(self) -> dict[str, int]:
        """The physical networks of this host's flat segments, with their uplink ports."""
        return {s.physical_network: t.uplink_ofport(s.physical_network, self.uplink_ofports)
                for s in self.segments.values() if s.network_type == "flat" and s.physical_network}


def segment_of(seg: NetSegment, uplink_ofports: dict[str, int]) -> Segment:
    """A message's segment as the compiler's Segment (with its REG_NET key)."""
    if seg.network_type == "flat":
        uplink = t.uplink_ofport(seg.physical_network or "", uplink_ofports)
        return Segment(seg.network_id, seg.segment_id, "flat", t.network_key("flat", uplink, None), uplink=uplink,
                       physical_network=seg.physical_network, arp_responder=seg.arp_responder)
    return Segment(seg.network_id, seg.segment_id, "vxlan", t.network_key("vxlan", None, seg.segmentation_id),
                   vni=seg.segmentation_id, arp_responder=seg.arp_responder)


def _split(ips: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(ip for ip in ips if ":" not in ip), tuple(ip for ip in ips if ":" in ip)


def vm_port(p: NetPort, seg: Segment) -> VmPort:
    """A message's port as the compiler's VmPort."""
    v4, v6 = _split(p.fixed_ips)
    pairs = tuple(AddressPair(pair["mac_address"], pair["ip_address"], 6 if ":" in pair["ip_address"] else 4)
                  for pair in p.allowed_address_pairs)
    limits = {r["direction"]: BandwidthLimit(int(r["max_kbps"]), int(r.get("max_burst_kbps") or 0))
              for r in p.bandwidth_limits}
    groups = tuple(sorted(p.security_groups)) if p.security_groups is not None else None
    return VmPort(p.id, p.ofport, p.mac_address, seg, v4, v6, pairs, p.port_security_enabled, p.admin_state_up,
                  limits.get("egress"), limits.get("ingress"), p.device_id, p.project_id, groups)


def sec_group(g: NetSecGroup) -> SecGroup:
    """A message's group as the compiler's SecGroup."""
    rules = tuple(SgRule(int(r["mark"]), r["direction"], int(r["ethertype"]), r.get("protocol"), r.get("port_min"),
                         r.get("port_max"), r.get("prefix"), r.get("remote_group"), r.get("id", ""))
                  for r in g.rules)
    return SecGroup(g.id, g.tag, rules, g.name)


def neighbor(n: Peer, seg: Segment) -> Neighbor:
    """A message's neighbor as the compiler's Neighbor."""
    v4, v6 = _split(n.ips)
    return Neighbor(n.port_id, seg.key, n.mac_address, v4, v6, n.tunnel_ip)


def state_of(msg: NetworkSync, uplink_ofports: dict[str, int] | None = None) -> DesiredState:
    """The state a full sync describes (for inspection tools)."""
    state = DesiredState(msg.host, dict(uplink_ofports or {}))
    state.merge(msg)
    return state
