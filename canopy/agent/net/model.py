"""The values the flow compiler takes and returns: a host's desired network state in, a Program out.

Everything here is frozen and hashable, so the compiler can cache the flows of an unchanged port by
the port value itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Segment:
    """A network (or one segment of a routed network) as one host sees it."""

    network_id: str
    segment_id: str | None
    network_type: str  # "flat" (untagged through an uplink) or "vxlan" (a 24-bit VNI over tunnels)
    key: int  # the REG_NET value, see tables.network_key()
    uplink: int | None = None  # flat: the uplink's OpenFlow port
    vni: int | None = None  # vxlan
    physical_network: str | None = None
    arp_responder: bool = True  # this host answers ARP for the segment's addresses (else their owners do)

    @property
    def needs_neighbors(self) -> bool:
        """Whether the host must know the segment's ports on other hosts: VXLAN (which host holds a MAC)
        or the ARP responder (their addresses). A flat segment without one needs only its own ports."""
        return self.network_type == "vxlan" or self.arp_responder


@dataclass(frozen=True, slots=True)
class BandwidthLimit:
    """A QoS bandwidth_limit rule: kilobits per second, and the burst in kilobits."""

    max_kbps: int
    max_burst_kbps: int = 0


@dataclass(frozen=True, slots=True)
class AddressPair:
    """An allowed address pair: a MAC and an IP address or CIDR the port may also use."""

    mac: str
    cidr: str
    version: int


@dataclass(frozen=True, slots=True)
class SgRule:
    """A security group rule as the compiler takes it. `mark` is unique in the cloud: it is the ct_mark of
    the connections the rule allows and the id of its conjunctive match."""

    mark: int
    direction: str  # "ingress" | "egress"
    ethertype: int  # 4 | 6
    protocol: int | None = None  # IP protocol number; None: any
    port_min: int | None = None  # tcp/udp/sctp: the port range; icmp: the type
    port_max: int | None = None  # icmp: the code
    prefix: str | None = None  # remote IP prefix
    remote_group: str | None = None  # remote group id
    id: str = ""


@dataclass(frozen=True, slots=True)
class SecGroup:
    """A security group with its rules; `tag` (unique in the cloud) names it in REG_GROUP."""

    id: str
    tag: int
    rules: tuple[SgRule, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class Firewall:
    """The security groups of a host's ports, and the addresses of the remote groups their rules name."""

    groups: tuple[SecGroup, ...] = ()
    members: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group id, its members' addresses)


@dataclass(frozen=True, slots=True)
class VmPort:
    """A port bound to this host, with everything its flows depend on."""

    id: str
    ofport: int
    mac: str
    segment: Segment
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    pairs: tuple[AddressPair, ...] = ()
    security: bool = True
    up: bool = True
    egress: BandwidthLimit | None = None
    ingress: BandwidthLimit | None = None
    device_id: str = ""
    project_id: str = ""
    # Security group ids; None: no firewall (a port from before security groups, or port security off).
    groups: tuple[str, ...] | None = None

    @property
    def firewalled(self) -> bool:
        """Whether the port's traffic goes through its security groups."""
        return self.security and self.groups is not None


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A port on another host of a segment this host serves: its addresses feed the ARP responder, and
    for VXLAN its host is a tunnel endpoint."""

    port_id: str
    key: int
    mac: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    tunnel_ip: str | None = None


@dataclass(frozen=True)
class HostNetState:
    """All the compiler needs to know to program one host's integration bridge."""

    host: str
    ports: tuple[VmPort, ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    tunnel_ip: str | None = None
    firewall: Firewall = Firewall()


@dataclass(frozen=True, slots=True)
class Meter:
    """An OpenFlow meter dropping what exceeds a rate."""

    id: int
    kbps: int
    burst_kb: int

    @classmethod
    def limiting(cls, meter_id: int, kbps: int, burst_kb: int = 0) -> Meter:
        """A meter for a bandwidth limit; no burst given means about 100 ms of traffic."""
        return cls(meter_id, kbps, burst_kb or max(kbps // 10, 1))

    def text(self) -> str:
        """The meter in ovs-ofctl syntax."""
        return f"meter={self.id},kbps,burst,bands=type=drop,rate={self.kbps},burst_size={self.burst_kb}"


# A flow is keyed by what OpenFlow keys it by, "table=T,priority=P,<match>", and carries (cookie, actions).
FlowKey = str
FlowValue = tuple[int, str]


@dataclass
class Program:
    """The complete set of flows and meters for one bridge, and the port numbering it assumes."""

    flows: dict[FlowKey, FlowValue] = field(default_factory=dict)
    meters: dict[int, Meter] = field(default_factory=dict)
    ports: tuple[VmPort, ...] = ()
    firewall: Firewall = Firewall()  # the groups the flows were compiled from (for explanations)

    def lines(self) -> list[str]:
        """The flows in ovs-ofctl syntax, one per line, in table then priority order."""
        return [flow_line(k, v) for k, v in sorted(self.flows.items(), key=_order)]

    def meter_lines(self) -> list[str]:
        return [self.meters[m].text() for m in sorted(self.meters)]


def flow_line(key: FlowKey, value: FlowValue) -> str:
    """One flow as `ovs-ofctl add-flow` takes it."""
    return f"cookie={value[0]:#x},{key},actions={value[1]}"


def _order(item: tuple[FlowKey, FlowValue]) -> tuple[int, int, str]:
    key = item[0]
    table, priority, rest = key.split(",", 2) if key.count(",") >= 2 else (*key.split(","), "")
    return int(table[6:]), -int(priority[9:]), rest


@dataclass(frozen=True)
class ProgramDiff:
    """What changes between two programs: flows to add (new or with other actions), flow keys to delete
    strictly, meters to add or change, meter ids to delete."""

    add: dict[FlowKey, FlowValue]
    delete: tuple[FlowKey, ...]
    meters: dict[int, Meter]
    delete_meters: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return not (self.add or self.delete or self.meters or self.delete_meters)


def diff_programs(old: Program, new: Program) -> ProgramDiff:
    """The changes that turn `old` into `new`."""
    of, nf = old.flows, new.flows
    add = {k: v for k, v in nf.items() if of.get(k) != v}
    delete = tuple(k for k in of if k not in nf)
    om, nm = old.meters, new.meters
    meters = {i: m for i, m in nm.items() if om.get(i) != m}
    return ProgramDiff(add, delete, meters, tuple(i for i in om if i not in nm))


def index_ports(ports: Iterable[VmPort]) -> Mapping[int, VmPort]:
    """Ports by OpenFlow number."""
    return {p.ofport: p for p in ports}
