"""Security groups in the flow compiler, by behaviour: each rule family is a table of packets and where
they must go, asked of the compiled flows through the fake switch and its connection tracker (the same
packets run against a real Open vSwitch in tests/integration/test_ovs_secgroups.py)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from canopy.agent.net import tables as t
from canopy.agent.net.compiler import compile_host
from canopy.agent.net.fake import FlowTable
from canopy.agent.net.model import Firewall, HostNetState, SecGroup, Segment, SgRule, VmPort
from canopy.agent.net.secgroups import port_masks, port_range_matches, rule_matches

UPLINK = 7
FLAT = Segment("net-public", None, "flat", t.network_key("flat", UPLINK, None), uplink=UPLINK,
               physical_network="public")
ROUTER = "02:00:00:00:00:01"


def mac(n: int) -> str:
    return f"fa:16:3e:00:00:{n:02x}"


SSH = SgRule(101, "ingress", 4, 6, 22, 22, prefix="198.51.100.0/24", id="r-ssh")
WEB_RANGE = SgRule(102, "ingress", 4, 6, 8000, 8099, id="r-range")
PING = SgRule(103, "ingress", 4, 1, 8, None, id="r-ping")
HTTPS6 = SgRule(104, "ingress", 6, 6, 443, 443, id="r-https6")
PG_FROM_WEB = SgRule(105, "ingress", 4, 6, 5432, 5432, remote_group="sg-web", id="r-pg")
GRE = SgRule(106, "ingress", 4, 47, id="r-gre")
OUT4 = SgRule(107, "egress", 4, id="r-out4")
OUT6 = SgRule(108, "egress", 6, id="r-out6")
UNREACH = SgRule(109, "ingress", 4, 1, 3, 4, id="r-frag-needed")
WEB = SecGroup("sg-web", 11, (SSH, WEB_RANGE, PING, HTTPS6, PG_FROM_WEB, GRE, OUT4, OUT6, UNREACH), "web")
EMPTY = SecGroup("sg-empty", 12, (), "empty")

A = VmPort("port-a", 100, mac(0x0A), FLAT, ("203.0.113.10",), ("2001:db8::a",), groups=("sg-web",))
B = VmPort("port-b", 101, mac(0x0B), FLAT, ("203.0.113.11",), groups=("sg-web",))
C = VmPort("port-c", 102, mac(0x0C), FLAT, ("203.0.113.12",), groups=("sg-empty",))
D = VmPort("port-d", 103, mac(0x0D), FLAT, ("203.0.113.13",), security=False, groups=("sg-web",))
MEMBERS = (("sg-web", ("203.0.113.10", "203.0.113.11", "2001:db8::a", "203.0.113.13")),)
STATE = HostNetState("hv-1", (A, B, C, D), firewall=Firewall((WEB, EMPTY), MEMBERS))


def tcp(src_port: int, src_mac: str, dst_mac: str, src: str, dst: str, dport: int, sport: int = 40000,
        flags: int | None = None, proto: str = "tcp") -> str:
    v6 = ":" in src
    fl = f",tcp_flags={flags:#x}" if flags is not None else ""
    nw = f"ipv6_src={src},ipv6_dst={dst}" if v6 else f"nw_src={src},nw_dst={dst}"
    return (f"in_port={src_port},{proto}{'6' if v6 else ''},dl_src={src_mac},dl_dst={dst_mac},{nw},"
            f"{proto}_src={sport},{proto}_dst={dport}{fl}")


def icmp(src_port: int, src_mac: str, dst_mac: str, src: str, dst: str, kind: int, code: int = 0) -> str:
    return (f"in_port={src_port},icmp,dl_src={src_mac},dl_dst={dst_mac},nw_src={src},nw_dst={dst},"
            f"icmp_type={kind},icmp_code={code}")


def ip_proto(src: str, dst_mac: str, dst: str, proto: int) -> str:
    return f"in_port={UPLINK},ip,dl_src={ROUTER},dl_dst={dst_mac},nw_src={src},nw_dst={dst},nw_proto={proto}"


def inbound(dst: VmPort, src: str, dport: int, **kw: object) -> str:
    ip = dst.ipv6[0] if ":" in src else dst.ipv4[0]
    return tcp(UPLINK, ROUTER, dst.mac, src, ip, dport, **kw)  # type: ignore[arg-type]


@pytest.fixture
def switch() -> FlowTable:
    return FlowTable.from_program(compile_host(STATE))


PROTOCOL_AND_PREFIX = [
    ("ssh from the allowed prefix", inbound(A, "198.51.100.7", 22), [100]),
    ("ssh from elsewhere", inbound(A, "192.0.2.7", 22), []),
    ("a port no rule opens", inbound(A, "198.51.100.7", 23), []),
    ("udp to the ssh port", inbound(A, "198.51.100.7", 22, proto="udp"), []),
    ("gre by protocol number", ip_proto("192.0.2.7", A.mac, "203.0.113.10", 47), [100]),
    ("esp, not allowed", ip_proto("192.0.2.7", A.mac, "203.0.113.10", 50), []),
]
PORT_RANGE = [
    ("first port of the range", inbound(A, "192.0.2.7", 8000), [100]),
    ("inside the range", inbound(A, "192.0.2.7", 8063), [100]),
    ("last port of the range", inbound(A, "192.0.2.7", 8099), [100]),
    ("just below", inbound(A, "192.0.2.7", 7999), []),
    ("just above", inbound(A, "192.0.2.7", 8100), []),
]
ICMP = [
    ("echo request (type 8)", icmp(UPLINK, ROUTER, A.mac, "192.0.2.7", "203.0.113.10", 8), [100]),
    ("timestamp (type 13)", icmp(UPLINK, ROUTER, A.mac, "192.0.2.7", "203.0.113.10", 13), []),
    ("frag needed (type 3 code 4)", icmp(UPLINK, ROUTER, A.mac, "192.0.2.7", "203.0.113.10", 3, 4), [100]),
    ("port unreachable (type 3 code 3)", icmp(UPLINK, ROUTER, A.mac, "192.0.2.7", "203.0.113.10", 3, 3), []),
]
IPV6 = [
    ("https over IPv6", inbound(A, "2001:db8::99", 443), [100]),
    ("http over IPv6", inbound(A, "2001:db8::99", 80), []),
    ("https over IPv4: the rule is IPv6 only", inbound(A, "192.0.2.7", 443), []),
]
REMOTE_GROUP = [
    ("postgres from B, a member of web", tcp(101, B.mac, A.mac, "203.0.113.11", "203.0.113.10", 5432), [100]),
    ("postgres from outside", inbound(A, "198.51.100.7", 5432), []),
    ("postgres from C, not a member", tcp(102, C.mac, A.mac, "203.0.113.12", "203.0.113.10", 5432), []),
]
PORTS = [
    ("a port whose group has no rules receives nothing", inbound(C, "198.51.100.7", 22), []),
    ("and sends nothing", tcp(102, C.mac, ROUTER, "203.0.113.12", "192.0.2.7", 80), []),
    ("port security off: no firewall", inbound(D, "192.0.2.7", 9999), [103]),
    ("egress any from A", tcp(100, A.mac, ROUTER, "203.0.113.10", "192.0.2.7", 80), [UPLINK]),
    ("a TCP packet of no connection, not a SYN (invalid)", inbound(A, "198.51.100.7", 22, flags=0x10), []),
    ("DHCP always passes", f"in_port=100,udp,dl_src={A.mac},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,"
                           "nw_dst=255.255.255.255,udp_src=68,udp_dst=67", [UPLINK, 103]),
]


@pytest.mark.parametrize("family", ["protocol_prefix", "port_range", "icmp", "ipv6", "remote_group", "ports"])
def test_rule_family(switch: FlowTable, family: str) -> None:
    cases = {"protocol_prefix": PROTOCOL_AND_PREFIX, "port_range": PORT_RANGE, "icmp": ICMP, "ipv6": IPV6,
             "remote_group": REMOTE_GROUP, "ports": PORTS}[family]
    wrong = []
    for name, pkt, want in cases:
        switch.conntrack.flush()  # each case on its own
        got = sorted(switch.trace(pkt).ports)
        if got != sorted(want):
            wrong.append(f"{name}: wanted {want}, got {got}")
    assert not wrong, "\n".join(wrong)


def test_replies_to_an_allowed_outbound_connection_come_back(switch: FlowTable) -> None:
    assert switch.trace(tcp(100, A.mac, ROUTER, "203.0.113.10", "192.0.2.50", 80, 40000)).ports == [UPLINK]
    reply = tcp(UPLINK, ROUTER, A.mac, "192.0.2.50", "203.0.113.10", 40000, 80, flags=0x12)
    assert switch.trace(reply).ports == [100]
    assert switch.trace(tcp(UPLINK, ROUTER, A.mac, "192.0.2.50", "203.0.113.10", 40001, 80)).ports == []


def test_removing_a_rule_cuts_its_established_connections_and_only_those(switch: FlowTable) -> None:
    ssh = inbound(A, "198.51.100.7", 22)
    ssh_reply = tcp(100, A.mac, ROUTER, "203.0.113.10", "198.51.100.7", 40000, 22, flags=0x12)
    web = inbound(A, "192.0.2.7", 8080)
    for pkt in (ssh, web):
        assert switch.trace(pkt).ports == [100]
    assert switch.trace(ssh_reply).ports == [UPLINK]
    # an unrelated change (the ping rule goes): both connections keep flowing
    switch.load(compile_host(_without(PING)).flows)
    assert switch.trace(ssh + ",tcp_flags=0x10").ports == [100] and switch.trace(web).ports == [100]
    # the ssh rule goes: its connection stops both ways, conntrack untouched; the other flows on
    switch.load(compile_host(_without(PING, SSH)).flows)
    assert switch.trace(ssh + ",tcp_flags=0x10").ports == [] and switch.trace(ssh_reply).ports == []
    assert switch.trace(web).ports == [100]
    assert switch.conntrack.entries  # nothing was flushed


def _without(*rules: SgRule) -> HostNetState:
    web = dataclasses.replace(WEB, rules=tuple(r for r in WEB.rules if r not in rules))
    return dataclasses.replace(STATE, firewall=Firewall((web, EMPTY), MEMBERS))


def test_ports_without_groups_field_keep_working_as_before() -> None:
    legacy = dataclasses.replace(A, groups=None)
    table = FlowTable.from_program(compile_host(HostNetState("hv", (legacy,))))
    assert table.trace(inbound(legacy, "192.0.2.7", 9999)).ports == [100]


@pytest.mark.parametrize(("lo", "hi", "count"), [(80, 80, 1), (0, 65535, 1), (1, 65535, 16), (1024, 65535, 6),
                                                 (8000, 8099, 3), (1000, 1999, 7), (65535, 65535, 1)])
def test_port_ranges_are_the_fewest_masked_matches_covering_exactly_the_range(lo: int, hi: int, count: int) -> None:
    masks = port_masks(lo, hi)
    assert len(masks) == count
    covered = {p for p in range(65536) for v, m in masks if p & m == v}
    assert covered == set(range(lo, hi + 1))
    assert len(port_range_matches("tcp_dst", lo, hi)) == count


def test_rule_matches_per_family() -> None:
    assert rule_matches(OUT4) == ["ip"]
    assert rule_matches(SgRule(1, "ingress", 6, 58, 135, 0)) == ["icmp6,icmp_type=135,icmp_code=0"]
    assert rule_matches(SgRule(1, "egress", 4, 17, 53, 53, prefix="192.0.2.0/24")) == [
        "udp,nw_dst=192.0.2.0/24,udp_dst=53"]
    assert rule_matches(SgRule(1, "ingress", 6, 132, 1, 1, prefix="::/0")) == ["sctp6,sctp_dst=1"]


def _big_state(members: int, rules_per_group: int = 10) -> HostNetState:
    remote = [SgRule(1000 + i, "ingress" if i % 2 else "egress", 4, 6, 5000 + i, 5000 + i, remote_group="sg-big")
              for i in range(rules_per_group // 2)]
    plain = [SgRule(2000 + i, "ingress", 4, 6, 6000 + i, 6000 + i) for i in range(rules_per_group - len(remote))]
    group = SecGroup("sg-big", 21, tuple(remote + plain))
    ips = tuple(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(1, members + 1))
    port = VmPort("port-big", 100, mac(1), FLAT, (ips[0],), groups=("sg-big",))
    return HostNetState("hv", (port,), firewall=Firewall((group,), (("sg-big", ips),)))


def test_a_1000_member_remote_group_costs_members_plus_rules_flows() -> None:
    base, one, two = (len(compile_host(_big_state(n)).flows) for n in (1, 1000, 2000))
    # one flow per member and direction the remote rules use (2), not one per member and rule (5)
    assert two - one == one - base + 2 == 2 * 1000
    # 10 more rules: 3 flows each (2 established, 1 match), a remote-group one a 4th (its conj_id)
    assert len(compile_host(_big_state(1000, 20)).flows) - one == 5 * 3 + 5 * 4
    table = FlowTable.from_program(compile_host(_big_state(1000)))
    member = "10.0.3.231"  # the 999th
    hit = tcp(UPLINK, ROUTER, mac(1), member, "10.0.0.1", 5001)
    miss = tcp(UPLINK, ROUTER, mac(1), "10.9.9.9", "10.0.0.1", 5001)
    assert table.trace(hit).ports == [100] and table.trace(miss).ports == []


def test_every_firewall_flow_carries_a_canopy_cookie() -> None:
    flows = compile_host(STATE).flows
    assert all(cookie & t.COOKIE_MASK == t.COOKIE_CANOPY for cookie, _ in flows.values())
    sg_tables = {t.EGRESS_CT, t.EGRESS_RULES, t.EGRESS_COMMIT, t.INGRESS_CT, t.INGRESS_RULES, t.INGRESS_COMMIT}
    used = {int(k.split(",")[0][6:]) for k in flows}
    assert sg_tables <= used
    assert not list(itertools.islice((k for k in flows if "conjunction" in flows[k][1] and "drop" in flows[k][1]), 1))


def test_trace_names_the_group_and_the_missing_rule() -> None:
    from canopy.agent.net.trace import explain

    program = compile_host(STATE)
    text = explain(program, inbound(A, "198.51.100.7", 23)).text()
    assert "security group(s) web (sg-web) of port port-a have no ingress rule" in text
    assert "--ingress --ethertype IPv4 --protocol tcp --dst-port 23 --remote-ip 198.51.100.7/32" in text
    out = explain(program, tcp(102, C.mac, ROUTER, "203.0.113.12", "192.0.2.7", 80)).verdict
    assert "empty (sg-empty) of port port-c have no egress rule" in out and "--dst-port 80" in out
    assert "output to 100" in explain(program, inbound(A, "198.51.100.7", 22)).verdict


def test_a_port_in_no_group_gets_and_sends_nothing_but_dhcp() -> None:
    """Neutron's OVS firewall: port security on and no group at all → everything dropped, both ways,
    except what a port always needs (DHCP, neighbour discovery)."""
    lone = VmPort("port-e", 104, mac(0x0E), FLAT, ("203.0.113.14",), groups=())
    table = FlowTable.from_program(compile_host(dataclasses.replace(STATE, ports=(*STATE.ports, lone))))
    assert table.trace(inbound(lone, "198.51.100.7", 22)).ports == []
    assert table.trace(tcp(104, lone.mac, ROUTER, "203.0.113.14", "192.0.2.7", 80)).ports == []
    dhcp = (f"in_port=104,udp,dl_src={lone.mac},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,nw_dst=255.255.255.255,"
            "udp_src=68,udp_dst=67")
    assert UPLINK in table.trace(dhcp).ports
