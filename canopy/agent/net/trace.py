"""Why would this packet be dropped? Runs a packet through a host's compiled program on the fake switch
and explains the verdict in the words of the rule that decided it (`canopy network trace`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from canopy.agent.net import tables as t
from canopy.agent.net.compiler import link_local
from canopy.agent.net.fake import FlowTable, TraceResult, parse_packet
from canopy.agent.net.model import Program, VmPort


@dataclass
class Explanation:
    """A trace: each table's decision, where the packet went, and (when dropped) why."""

    packet: str
    result: TraceResult
    lines: list[str] = field(default_factory=list)
    verdict: str = ""

    def text(self) -> str:
        return "\n".join([f"packet: {self.packet}", *self.lines, f"verdict: {self.verdict}"])


def _mac(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def _ip(value: int, version: int) -> str:
    return str(ipaddress.ip_address(value) if version == 4 else ipaddress.IPv6Address(value))


def explain(program: Program, packet: str, table: FlowTable | None = None) -> Explanation:
    """Trace `packet` (ofproto/trace syntax) through `program`, and say why it ends where it does."""
    switch = table or FlowTable.from_program(program)
    result = switch.trace(packet)
    out = Explanation(packet, result)
    for step in result.steps:
        name = t.TABLE_NAMES.get(step.table, str(step.table))
        if step.flow is None:
            out.lines.append(f"  table {step.table} ({name}): no flow matches -> drop")
        else:
            out.lines.append(f"  table {step.table} ({name}): priority {step.flow.priority}, "
                             f"{step.flow.key.split(',', 2)[2] if step.flow.key.count(',') >= 2 else '(any)'} "
                             f"-> {','.join(step.flow.actions)}")
    if result.outputs:
        ports = {p.ofport: p for p in program.ports}
        names = [f"{n} ({ports[n].id})" if n in ports else _infra(n) for n in result.ports]
        out.verdict = "output to " + ", ".join(names)
    else:
        out.verdict = "dropped: " + why_dropped(program, parse_packet(packet), result)
    return out


def _infra(ofport: int) -> str:
    if ofport == t.TUNNEL_OFPORT:
        return f"{ofport} (vxlan tunnel)"
    if t.FIRST_UPLINK_OFPORT <= ofport <= t.LAST_UPLINK_OFPORT:
        return f"{ofport} (uplink)"
    return str(ofport)


def why_dropped(program: Program, pkt: dict[str, int], result: TraceResult) -> str:
    """The reason, from the last table the packet reached and what the port is allowed to send."""
    last = result.steps[-1] if result.steps else None
    port = next((p for p in program.ports if p.ofport == pkt.get("in_port")), None)
    if last is None or last.table == t.CLASSIFY:
        if port is not None and not port.up:
            return f"port {port.id} is administratively down"
        return f"in_port {pkt.get('in_port', 0)} is not a VM port, uplink or tunnel of this host's networks"
    if last.table == t.PORT_SECURITY and port is not None:
        return spoofing_reason(port, pkt)
    if last.table in (t.EGRESS_CT, t.INGRESS_CT, t.EGRESS_COMMIT, t.INGRESS_COMMIT):
        return firewall_reason(program, pkt, last.table)
    if last.table == t.ARP_ND:
        return "an ARP request or neighbour solicitation from outside for an address no port on this host holds"
    if last.table == t.FORWARD:
        dst = _mac(pkt.get("dl_dst", 0))
        if port is not None:  # from a VM: only a vxlan network keeps unknown MACs in
            return f"destination MAC {dst} is on no host of this vxlan network"
        return f"no port on this host has the destination MAC {dst}, and unknown unicast is never flooded"
    return f"table {last.table} drops it"


def spoofing_reason(port: VmPort, pkt: dict[str, int]) -> str:
    """Which anti-spoofing rule a packet from a VM port broke."""
    src = _mac(pkt.get("dl_src", 0))
    macs = {port.mac} | {p.mac for p in port.pairs}
    dl_type, proto = pkt.get("dl_type", 0), pkt.get("nw_proto", 0)
    if src not in macs:
        return f"source MAC {src} is not the port's ({port.mac})"
    if dl_type == 0x0806:
        sha, spa = _mac(pkt.get("arp_sha", 0)), _ip(pkt.get("arp_spa", 0), 4)
        if sha != src:
            return f"ARP sender hardware address {sha} is not the port's MAC"
        return f"ARP sender address {spa} is not one of the port's addresses {list(port.ipv4)}"
    if dl_type == 0x0800:
        if proto == 17 and pkt.get("udp_src") == 67:
            return "a VM may not act as a DHCP server (UDP source port 67)"
        return f"source IP {_ip(pkt.get('nw_src', 0), 4)} is not one of the port's addresses {list(port.ipv4)}"
    if dl_type == 0x86DD:
        icmp = pkt.get("icmp_type", 0) if proto == 58 else None
        if icmp == 134:
            return "a VM may not send router advertisements"
        if icmp == 136:
            return (f"neighbour advertisement for {_ip(pkt.get('nd_target', 0), 6)}, which is not one of the "
                    "port's addresses")
        own = [*port.ipv6, link_local(port.mac)]
        return f"IPv6 source {_ip(pkt.get('ipv6_src', 0), 6)} is not one of the port's addresses {own}"
    return f"ethertype {dl_type:#06x} is not allowed from a VM port"


def firewall_reason(program: Program, pkt: dict[str, int], table: int) -> str:
    """Which security group dropped a packet, and the rule it lacks."""
    egress = table in (t.EGRESS_CT, t.EGRESS_COMMIT)
    if egress:
        port = next((p for p in program.ports if p.ofport == pkt.get("in_port")), None)
    else:
        port = next((p for p in program.ports if int(p.mac.replace(":", ""), 16) == pkt.get("dl_dst")), None)
    if table in (t.EGRESS_CT, t.INGRESS_CT):
        return "conntrack marks it invalid (e.g. a TCP packet of no known connection that is not a SYN)"
    if port is None:
        return "the port's security groups allow no rule matching it"
    groups = {g.id: g for g in program.firewall.groups}
    names = [f"{groups[g].name or g} ({g})" if g in groups else g for g in port.groups or ()]
    direction = "egress" if egress else "ingress"
    return (f"security group(s) {', '.join(names) or '(none)'} of port {port.id} have no {direction} rule for it: "
            f"missing e.g. {wanted_rule(pkt, direction)}")


def wanted_rule(pkt: dict[str, int], direction: str) -> str:
    """The rule that would let the packet through, in words (and as the openstack CLI writes it)."""
    v6 = pkt.get("dl_type") == 0x86DD
    proto = pkt.get("nw_proto", 0)
    name = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp", 132: "sctp"}.get(proto, str(proto))
    remote = _ip(pkt.get("ipv6_src" if not egress_of(direction) else "ipv6_dst", 0) if v6 else
                 pkt.get("nw_src" if not egress_of(direction) else "nw_dst", 0), 6 if v6 else 4)
    port = ""
    if proto in (6, 17, 132):
        port = f" --dst-port {pkt.get('udp_dst', 0)}"
    elif proto in (1, 58):
        port = f" --icmp-type {pkt.get('icmp_type', 0)}"
    return (f"`openstack security group rule create --{direction} --ethertype IPv{6 if v6 else 4} "
            f"--protocol {name}{port} --remote-ip {remote}/{128 if v6 else 32} GROUP`")


def egress_of(direction: str) -> bool:
    return direction == "egress"
