"""A fake Open vSwitch: a flow table with OpenFlow semantics for the subset of matches and actions the
compiler emits, and a FakeApplier that keeps one per host. Tests and the simulator ask it behaviour
questions ("where does this packet go?") instead of comparing flow text:

    table = FlowTable.from_program(compile_host(state))
    result = table.trace("in_port=100,arp,dl_src=fa:16:3e:00:00:01,arp_op=1,arp_spa=203.0.113.10,...")
    assert result.ports == [7]          # or result.dropped

Packets are written as `ovs-appctl ofproto/trace` takes them, so one description works on both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canopy.agent.net.fakect import CT_BITS, Conntrack
from canopy.agent.net.model import Meter, Program, ProgramDiff

_PROTOCOLS: dict[str, tuple[int, int | None]] = {
    "arp": (0x0806, None), "ip": (0x0800, None), "ipv6": (0x86DD, None), "icmp": (0x0800, 1), "tcp": (0x0800, 6),
    "udp": (0x0800, 17), "icmp6": (0x86DD, 58), "tcp6": (0x86DD, 6), "udp6": (0x86DD, 17),
    "sctp": (0x0800, 132), "sctp6": (0x86DD, 132),
}
_MAC_FIELDS = {"dl_src", "dl_dst", "arp_sha", "arp_tha", "nd_sll", "nd_tll"}
_IP4_FIELDS = {"nw_src", "nw_dst", "arp_spa", "arp_tpa", "tun_dst", "tun_src"}
_IP6_FIELDS = {"ipv6_src", "ipv6_dst", "nd_target"}
_ALIASES = {"eth_src": "dl_src", "eth_dst": "dl_dst", "icmpv6_type": "icmp_type", "tp_src": "udp_src",
            "tp_dst": "udp_dst", "tcp_src": "udp_src", "tcp_dst": "udp_dst", "sctp_src": "udp_src",
            "sctp_dst": "udp_dst", "icmpv6_code": "icmp_code"}

_NXM = {"NXM_OF_ETH_SRC": "dl_src", "NXM_OF_ETH_DST": "dl_dst", "NXM_NX_ARP_SHA": "arp_sha",
        "NXM_NX_ARP_THA": "arp_tha", "NXM_OF_ARP_SPA": "arp_spa", "NXM_OF_ARP_TPA": "arp_tpa"}
_ALL_ONES = (1 << 128) - 1
MAX_RESUBMITS = 4096  # as Open vSwitch bounds the work one packet may cause


class FlowSyntaxError(ValueError):
    """A flow or packet description this fake does not understand."""


def _value(name: str, text: str) -> tuple[int, int]:
    """A field value and mask from flow text."""
    name = _ALIASES.get(name, name)
    if name == "ct_state" and text[:1] in "+-":
        return _ct_state(text)
    value, _, mask = text.partition("/")
    if name in _MAC_FIELDS:
        v = int(value.replace(":", ""), 16)
        return v, int(mask.replace(":", ""), 16) if mask else _ALL_ONES
    if name in _IP4_FIELDS or name in _IP6_FIELDS:
        if mask and "." not in mask and ":" not in mask:
            net = ipaddress.ip_network(f"{value}/{mask}", strict=False)
            return int(net.network_address), int(net.netmask)
        v = int(ipaddress.ip_address(value))
        return v, int(ipaddress.ip_address(mask)) if mask else _ALL_ONES
    return int(value, 0), int(mask, 0) if mask else _ALL_ONES


def _ct_state(text: str) -> tuple[int, int]:
    value = mask = 0
    for sign, flag in ((m[0], m[1:]) for m in text.replace("-", " -").replace("+", " +").split()):
        mask |= CT_BITS[flag]
        value |= CT_BITS[flag] if sign == "+" else 0
    return value, mask


def parse_fields(text: str) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Match fields (name -> (value, mask)) and the other keywords (table, priority, cookie) of flow text."""
    fields: dict[str, tuple[int, int]] = {}
    meta: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, raw = part.partition("=")
        if not eq:
            if name not in _PROTOCOLS:
                raise FlowSyntaxError(f"unknown keyword {name!r}")
            dl_type, proto = _PROTOCOLS[name]
            fields["dl_type"] = (dl_type, _ALL_ONES)
            if proto is not None:
                fields["nw_proto"] = (proto, _ALL_ONES)
        elif name in ("table", "priority", "cookie"):
            meta[name] = raw
        else:
            fields[_ALIASES.get(name, name)] = _value(name, raw)
    return fields, meta


def split_actions(text: str) -> list[str]:
    """Actions separated by top-level commas (a resubmit's own comma stays inside it)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        out.append(cur)
    return [a.strip() for a in out if a.strip()]


@dataclass
class Flow:
    """One parsed flow."""

    table: int
    priority: int
    match: dict[str, tuple[int, int]]
    actions: list[str]
    key: str
    cookie: int = 0
    conjunctions: list[tuple[int, int, int]] = field(default_factory=list)  # (id, dimension, of n)

    def __post_init__(self) -> None:
        for a in self.actions:
            if a.startswith("conjunction("):
                cid, _, dims = a[12:-1].partition(",")
                k, _, n = dims.partition("/")
                self.conjunctions.append((int(cid), int(k), int(n)))

    def matches(self, packet: Mapping[str, int]) -> bool:
        for name, (value, mask) in self.match.items():
            if packet.get(name, 0) & mask != value & mask:
                return False
        return True


@dataclass
class Step:
    """One table lookup of a trace: the table, and the flow that matched (None: table miss)."""

    table: int
    flow: Flow | None


@dataclass
class TraceResult:
    """Where a packet went: the ports it was output to (with the packet as it left), the lookups on
    the way, and the meters it passed."""

    outputs: list[tuple[int, dict[str, int]]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    meters: list[int] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [p for p, _ in self.outputs]

    @property
    def dropped(self) -> bool:
        return not self.outputs


def parse_packet(text: str) -> dict[str, int]:
    """A packet in ofproto/trace syntax as field values (unnamed fields are zero, as in a trace)."""
    fields, _ = parse_fields(text)
    return {name: value for name, (value, _mask) in fields.items()}


class FlowTable:
    """Flows by table, highest priority first: a switch's lookup pipeline, without a datapath."""

    def __init__(self, flows: Mapping[str, tuple[int, str]] | None = None) -> None:
        self._tables: dict[int, list[Flow]] | None = {}
        self.flows: dict[str, tuple[int, str]] = {}
        self.conntrack = Conntrack()  # survives flow changes, as a switch's does
        if flows:
            self.load(flows)

    @property
    def tables(self) -> dict[int, list[Flow]]:
        """The parsed flows by table (parsed when first needed: loading stays cheap)."""
        if self._tables is None:
            self._tables = self._index()
        return self._tables

    @classmethod
    def from_program(cls, program: Program) -> FlowTable:
        return cls(program.flows)

    def load(self, flows: Mapping[str, tuple[int, str]]) -> None:
        """Replace every flow."""
        self.flows = dict(flows)
        self._tables = None

    def modify(self, add: Mapping[str, tuple[int, str]], delete: Sequence[str]) -> None:
        """Add (or overwrite) and strictly delete flows by key."""
        for key in delete:
            self.flows.pop(key, None)
        self.flows.update(add)
        self._tables = None

    def _index(self) -> dict[int, list[Flow]]:
        tables: dict[int, list[Flow]] = {}
        for key, (cookie, actions) in self.flows.items():
            match, meta = parse_fields(key)
            flow = Flow(int(meta.get("table", "0")), int(meta.get("priority", "32768")), match,
                        split_actions(actions), key, cookie)
            tables.setdefault(flow.table, []).append(flow)
        for flows in tables.values():
            flows.sort(key=lambda f: -f.priority)
        return tables

    def lookup(self, table: int, packet: Mapping[str, int]) -> Flow | None:
        """The highest-priority flow of `table` matching the packet; a conjunctive match completed at a
        priority (every dimension matched) resolves to the flow matching its conj_id."""
        flows = self.tables.get(table, ())
        seen: dict[int, set[int]] = {}
        level = None
        for f in flows:
            if level is not None and f.priority < level:
                done = self._conjunction(flows, packet, seen)
                if done is not None:
                    return done
                seen.clear()
            level = f.priority
            if not f.matches(packet):
                continue
            if not f.conjunctions:
                return f
            for cid, k, n in f.conjunctions:
                seen.setdefault(cid, set()).add(k)
                seen.setdefault(-cid - 1, set()).add(n)  # remembers n
        return self._conjunction(flows, packet, seen)

    @staticmethod
    def _conjunction(flows: Sequence[Flow], packet: Mapping[str, int], seen: dict[int, set[int]]) -> Flow | None:
        for cid in sorted(c for c in seen if c >= 0):
            if len(seen[cid]) == max(seen[-cid - 1]):
                with_id = {**packet, "conj_id": cid}
                hit = next((f for f in flows if "conj_id" in f.match and f.matches(with_id)), None)
                if hit is not None:
                    return hit
        return None

    def trace(self, packet: str | Mapping[str, int]) -> TraceResult:
        """Run a packet through the pipeline from table 0."""
        pkt = parse_packet(packet) if isinstance(packet, str) else dict(packet)
        result = TraceResult()
        self._run(0, pkt, result, [0])
        return result

    def _run(self, table: int, pkt: dict[str, int], result: TraceResult, budget: list[int]) -> None:
        while True:
            budget[0] += 1
            if budget[0] > MAX_RESUBMITS:
                return
            flow = self.lookup(table, pkt)
            result.steps.append(Step(table, flow))
            if flow is None:
                return
            goto = self._execute(flow.actions, pkt, result, budget)
            if goto is None:
                return
            table = goto

    def _execute(self, actions: list[str], pkt: dict[str, int], result: TraceResult, budget: list[int]) -> int | None:
        goto = None
        for action in actions:
            if action.startswith("goto_table:"):
                goto = int(action[11:])
            elif action.startswith("resubmit(,"):  # in place: what the resubmitted table sets stays set
                self._run(int(action[10:-1]), pkt, result, budget)
            elif action.startswith("ct("):
                goto = self._ct(action[3:-1], pkt) if goto is None else goto
            elif action == "ct_clear":
                for name in ("ct_state", "ct_zone", "ct_mark"):
                    pkt.pop(name, None)
            elif action.startswith("output:"):
                port = int(action[7:])
                if port != pkt.get("in_port"):  # OpenFlow never sends a packet back out of its in_port
                    result.outputs.append((port, dict(pkt)))
            elif action.upper() == "IN_PORT":
                result.outputs.append((pkt.get("in_port", 0), dict(pkt)))
            elif action.startswith("meter:"):
                result.meters.append(int(action[6:]))
            elif action.startswith("set_field:"):
                value, _, name = action[10:].partition("->")
                name = _ALIASES.get(name, name)
                pkt[name] = _value(name, value)[0]
            elif action.startswith("move:"):
                src, _, dst = action[5:].partition("->")
                pkt[_nxm(dst)] = pkt.get(_nxm(src), 0)
            elif action != "drop":
                raise FlowSyntaxError(f"the fake switch does not know the action {action!r}")
        return goto

    def _ct(self, args: str, pkt: dict[str, int]) -> int | None:
        """ct(…): track in a zone (then continue in `table`), or commit with a mark."""
        opts = dict(a.partition("=")[::2] for a in split_actions(args) if not a.startswith("exec("))
        zone_src = opts.get("zone", "0")
        zone = pkt.get(_nxm(zone_src), 0) & 0xFFFF if zone_src.startswith("NXM") else int(zone_src)
        if "commit" in opts:
            mark = pkt.get("ct_mark", 0)
            for inner in (a[5:-1] for a in split_actions(args) if a.startswith("exec(")):
                if inner.startswith("move:"):
                    mark = pkt.get(_nxm(inner[5:].partition("->")[0]), 0)
                elif inner.startswith("set_field:"):
                    mark = int(inner[10:].partition("->")[0], 0)
            self.conntrack.commit(zone, pkt, mark)
            pkt["ct_mark"] = mark
            return None
        self.conntrack.lookup(zone, pkt)
        return int(opts["table"]) if "table" in opts else None


def _nxm(name: str) -> str:
    """A packet field from an NXM name (NXM_NX_REG2[], NXM_NX_REG1[0..15], NXM_OF_ETH_SRC[])."""
    base = name.partition("[")[0]
    if base.startswith("NXM_NX_REG"):
        return "reg" + base[10:]
    if base == "NXM_NX_CT_MARK":
        return "ct_mark"
    return _NXM[base]


@dataclass
class FakeApplier:
    """An applier that programs a FlowTable instead of Open vSwitch, and remembers what it was asked.

    `flow_counts` records the table size after every operation, so a test can check that a host's
    table was never empty while it was being reprogrammed."""

    existing_taps: set[str] | None = None  # None: every tap exists
    table: FlowTable = field(default_factory=FlowTable)
    meters: dict[int, Meter] = field(default_factory=dict)
    wired: dict[str, Any] = field(default_factory=dict)
    uplinks: dict[str, int] = field(default_factory=dict)
    tunnel_ip: str | None = None
    replaces: int = 0
    changes: int = 0
    flow_counts: list[int] = field(default_factory=list)

    async def setup(self, uplinks: Mapping[str, int], tunnel_ip: str | None) -> None:
        self.uplinks = dict(uplinks)
        self.tunnel_ip = tunnel_ip

    async def wire(self, taps: Sequence[Any]) -> list[str]:
        """Keep exactly the taps that exist; the port ids now wired."""
        exists = self.existing_taps
        self.wired = {tap.name: tap for tap in taps if exists is None or tap.name in exists}
        return [tap.port_id for tap in self.wired.values()]

    async def replace(self, program: Program) -> None:
        self.table.load(program.flows)
        self.meters = dict(program.meters)
        self.replaces += 1
        self.flow_counts.append(len(self.table.flows))

    async def change(self, diff: ProgramDiff) -> None:
        self.meters.update(diff.meters)
        self.table.modify(diff.add, diff.delete)
        for meter_id in diff.delete_meters:
            self.meters.pop(meter_id, None)
        self.changes += 1
        self.flow_counts.append(len(self.table.flows))

    async def dump(self) -> list[str]:
        from canopy.agent.net.model import flow_line

        return sorted(flow_line(k, v) for k, v in self.table.flows.items())

