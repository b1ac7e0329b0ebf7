"""A host's program kept up to date as its desired state changes: the same flows and meters as
`compile_host`, at a cost that follows the change, not the size of the network.

A host on a big VXLAN network, or one with an ARP responder, holds thousands of neighbors (tunnel and
responder entries) and hears of a few new ones at a time (on a flat network without a responder it holds
none). The builder keeps the neighbors' flows as a layer with, for each flow key, how many
neighbors produce it; a change of k neighbors updates k fragments, the host's own ports and segments are
compiled again (they are few), and the result is the layer overlaid with them, as `compile_host` merges
them. It starts over from the whole state (the same cost as `compile_host`) whenever the increment could
differ from it: on the first build, when the host's active segments or address change, when several
neighbors produce the same flow (stale entries that `compile_host` resolves by their order), or when
told to (a full sync).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from canopy.agent.net.compiler import HOST, Fragment, local_flows, neighbor_flows, port_meters, tunnel_of
from canopy.agent.net.model import Firewall, FlowKey, FlowValue, Program, ProgramDiff, Segment, VmPort
from canopy.agent.net.secgroups import firewall_flows
from canopy.agent.net.state import DesiredState, Peer, SegmentKey, neighbor

# One neighbor's part of the program: its flows, its segment's key, and the tunnel endpoint it adds to
# that segment (VXLAN). Plain tuples of immutable values: the garbage collector stops tracking them.
Part = tuple[Fragment, int, str | None]


_FRAGMENTS: dict[tuple[object, ...], Fragment] = {}
MAX_FRAGMENTS = 100_000


def shared_fragment(value: Peer, seg_of: Segment, seg: Segment) -> Fragment:
    """A neighbor's flows, memoized by what they depend on for every builder of the process (the
    all-in-one's simulated hosts share their neighbors); the memo is emptied when it grows too big."""
    key = (value.mac_address, value.ips, value.tunnel_ip, seg.key, seg.network_type, seg.vni)
    fragment = _FRAGMENTS.get(key)
    if fragment is None:
        if len(_FRAGMENTS) >= MAX_FRAGMENTS:
            _FRAGMENTS.clear()
        fragment = _FRAGMENTS[key] = neighbor_flows(neighbor(value, seg_of), seg)
    return fragment


class ProgramBuilder:
    """Builds one host's Program from its DesiredState, incrementally where it can."""

    def __init__(self) -> None:
        self.program: Program | None = None
        self.rebuilds = 0  # how many builds started over (tests, benchmarks)
        self._signature: object = None
        self._parts: dict[str, Part] = {}  # neighbor port id -> its part
        self._layer: dict[FlowKey, FlowValue] = {}  # every neighbor's flows
        self._producers: dict[FlowKey, int] = {}  # how many neighbors produce each key of the layer
        self._tunnels: dict[int, Counter[str]] = defaultdict(Counter)  # segment key -> endpoints (VXLAN)
        self._local: dict[FlowKey, FlowValue] = {}  # the host's ports' and segments' flows
        self._local_of: tuple[VmPort, ...] | None = None  # the up ports they were compiled for
        self._tunnels_moved = False  # a segment's set of tunnel endpoints changed since
        self._memo: dict[object, Fragment] = {}  # port fragments
        self._fw: Firewall = Firewall()  # the security groups the local flows were compiled with
        self._fw_next: Firewall = Firewall()
        self._fw_memo: dict[object, dict[FlowKey, FlowValue]] = {}  # firewall fragments (ports, groups)

    def reset(self) -> None:
        """Forget the program (the next build starts over)."""
        self.program = None

    def build(self, state: DesiredState, changed: Iterable[str] | None) -> tuple[Program, ProgramDiff | None]:
        """The program of `state`, and what changed since the last build. `changed`: the neighbor ids
        that may differ since then (None: anything may). The diff is None when the build started over;
        otherwise the previous program object has been updated in place."""
        segs, ports = state.local()
        self._fw_next = state.firewall()
        up = tuple(p for p in ports if p.up)
        active = {p.segment.key: p.segment for p in up}
        signature = (frozenset(active.items()), frozenset(segs.items()), state.tunnel_ip)
        if self.program is None or changed is None or signature != self._signature:
            return self._rebuild(state, segs, ports, up, active, signature), None
        touched: set[FlowKey] = set()
        fresh: dict[FlowKey, FlowValue] = {}
        parts, producers = self._parts, self._producers
        for port_id in changed:
            old = parts.pop(port_id, None)
            if old is not None:
                self._drop(old, touched)
            value = state.neighbors.get(port_id)
            part = self._part(value, segs, active, state.tunnel_ip) if value is not None else None
            if part is None:
                continue
            parts[port_id] = part
            for key, cookie, actions in part[0]:
                producers[key] = producers.get(key, 0) + 1
                touched.add(key)
                fresh[key] = (cookie, actions)
            if part[2] is not None:
                self._add_tunnel(part)
        for key in touched:
            count = self._producers.get(key, 0)
            if count <= 0:
                self._producers.pop(key, None)
                self._layer.pop(key, None)
            elif count == 1 and key in fresh:
                self._layer[key] = fresh[key]
            else:  # several neighbors share the key: their order decides, as compile_host merges them
                return self._rebuild(state, segs, ports, up, active, signature), None
        return self.program, self._update(touched, up, active, ports)

    # -- the neighbor layer ----------------------------------------------------------------------

    def _part(self, value: Peer, segs: dict[SegmentKey, Segment], active: dict[int, Segment],
              own_ip: str | None) -> Part | None:
        """A neighbor's part, when it is on one of the host's active segments."""
        seg_of = segs.get((value.network_id, value.segment_id))
        seg = active.get(seg_of.key) if seg_of is not None else None
        if seg_of is None or seg is None:
            return None
        return shared_fragment(value, seg_of, seg), seg.key, tunnel_of(value.tunnel_ip, seg, own_ip)

    def _add_tunnel(self, part: Part) -> None:
        endpoints = self._tunnels[part[1]]
        endpoints[part[2]] += 1  # type: ignore[index]
        self._tunnels_moved |= endpoints[part[2]] == 1  # type: ignore[index]

    def _drop(self, part: Part, touched: set[FlowKey]) -> None:
        producers = self._producers
        for key, _, _ in part[0]:
            producers[key] = producers.get(key, 0) - 1
            touched.add(key)
        if part[2] is not None:
            endpoints = self._tunnels[part[1]]
            endpoints[part[2]] -= 1
            if endpoints[part[2]] <= 0:
                del endpoints[part[2]]
                self._tunnels_moved = True

    # -- whole builds and increments -------------------------------------------------------------

    def _rebuild(self, state: DesiredState, segs: dict[SegmentKey, Segment], ports: tuple[VmPort, ...],
                 up: tuple[VmPort, ...], active: dict[int, Segment], signature: object) -> Program:
        self.rebuilds += 1
        self._parts = {}
        self._layer, self._producers, self._tunnels = {}, {}, defaultdict(Counter)
        for value in state.neighbors.values():
            part = self._part(value, segs, active, state.tunnel_ip)
            if part is None:
                continue
            self._parts[value.port_id] = part
            for key, cookie, actions in part[0]:
                self._producers[key] = self._producers.get(key, 0) + 1
                self._layer[key] = (cookie, actions)  # a later neighbor wins, as in compile_host
            if part[2] is not None:
                self._add_tunnel(part)
        self._local = self._local_flows(up, active)
        flows = dict(HOST)
        flows.update(self._layer)
        flows.update(self._local)
        self._signature = signature
        self.program = Program(flows=flows, meters=port_meters(up), ports=tuple(sorted(ports, key=lambda p: p.ofport)),
                               firewall=self._fw)
        return self.program

    def _local_flows(self, up: tuple[VmPort, ...], active: dict[int, Segment]) -> dict[FlowKey, FlowValue]:
        self._local_of, self._tunnels_moved = up, False
        used: dict[object, Fragment] = {}
        tunnels = {key: sorted(endpoints) for key, endpoints in self._tunnels.items() if endpoints}
        flows = local_flows(up, active, tunnels, self._memo, used)
        self._memo = used
        # the firewall is compiled with the host's own ports: a rule or membership change recompiles the
        # few groups it touches (the fragments of the others come from the memo) and the diff carries it
        self._fw = self._fw_next
        fw_used: dict[object, dict[FlowKey, FlowValue]] = {}
        flows.update(firewall_flows(up, self._fw, self._fw_memo, fw_used))
        self._fw_memo = fw_used
        return flows

    def _update(self, touched: set[FlowKey], up: tuple[VmPort, ...], active: dict[int, Segment],
                ports: tuple[VmPort, ...]) -> ProgramDiff:
        """Bring the program up to date with the layer's touched keys and the recompiled local flows."""
        program = self.program
        assert program is not None
        keys: set[FlowKey] = touched
        if up != self._local_of or self._tunnels_moved or self._fw_next != self._fw:  # else as the last build
            old_local, self._local = self._local, self._local_flows(up, active)
            keys = touched | old_local.keys() | self._local.keys()
        flows, layer, local = program.flows, self._layer, self._local
        add: dict[FlowKey, FlowValue] = {}
        delete: list[FlowKey] = []
        for key in keys:
            value = local.get(key) or layer.get(key) or HOST.get(key)
            if value is None:
                if flows.pop(key, None) is not None:
                    delete.append(key)
            elif flows.get(key) != value:
                flows[key] = add[key] = value
        old_meters, meters = program.meters, port_meters(up)
        program.meters = meters
        program.ports = tuple(sorted(ports, key=lambda p: p.ofport))
        program.firewall = self._fw
        return ProgramDiff(add, tuple(delete), {i: m for i, m in meters.items() if old_meters.get(i) != m},
                           tuple(i for i in old_meters if i not in meters))
