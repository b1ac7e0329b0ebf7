"""The flow compiler, by behaviour: each rule family is a table of packets and where they must go,
asked of the compiled flows through the fake switch (the same packets run against a real Open vSwitch
in tests/integration/test_ovs_flows.py)."""

from __future__ import annotations

import dataclasses

import pytest

from canopy.agent.net import tables as t
from canopy.agent.net.compiler import compile_host, link_local
from canopy.agent.net.fake import FlowTable
from canopy.agent.net.model import (
    AddressPair,
    BandwidthLimit,
    HostNetState,
    Neighbor,
    Segment,
    VmPort,
    diff_programs,
)

UPLINK = 7
FLAT = Segment("net-public", None, "flat", t.network_key("flat", UPLINK, None), uplink=UPLINK,
               physical_network="public")
VXLAN = Segment("net-tenant", None, "vxlan", 5001, vni=5001)
BCAST = "ff:ff:ff:ff:ff:ff"


def mac(n: int) -> str:
    return f"fa:16:3e:00:00:{n:02x}"


# Two customers (A: project p1, B: project p2) on one flat public network, and the odd ones out.
A = VmPort("port-a", 100, mac(0x0A), FLAT, ("203.0.113.10",), ("2001:db8::a",), project_id="p1")
B = VmPort("port-b", 101, mac(0x0B), FLAT, ("203.0.113.11",), ("2001:db8::b",), project_id="p2")
C = VmPort("port-c", 102, mac(0x0C), FLAT, ("203.0.113.12",),
           pairs=(AddressPair(mac(0x0C), "203.0.113.100", 4), AddressPair("fa:16:3e:00:00:cc", "203.0.113.101", 4)))
D = VmPort("port-d", 103, mac(0x0D), FLAT, ("203.0.113.13",), security=False)
Q = VmPort("port-q", 104, mac(0x0F), FLAT, ("203.0.113.15",), egress=BandwidthLimit(1000, 100),
           ingress=BandwidthLimit(2000))
E = VmPort("port-e", 105, mac(0x1E), FLAT, ("203.0.113.30",), up=False)
V = VmPort("port-v", 110, mac(0x10), VXLAN, ("10.0.0.10",))
N = Neighbor("port-n", FLAT.key, mac(0x0E), ("203.0.113.14",))  # on another host of the segment
W = Neighbor("port-w", VXLAN.key, mac(0x20), ("10.0.0.20",), tunnel_ip="192.0.2.2")
X = Neighbor("port-x", VXLAN.key, mac(0x21), ("10.0.0.21",), tunnel_ip="192.0.2.3")
STATE = HostNetState("hv-1", (A, B, C, D, Q, E, V), (N, W, X), tunnel_ip="192.0.2.1")
LOCAL_UP = [100, 101, 102, 103, 104]


@pytest.fixture(scope="module")
def switch() -> FlowTable:
    return FlowTable.from_program(compile_host(STATE))


def ip4(src_port: int, src_mac: str, dst_mac: str, src: str, dst: str = "203.0.113.200", extra: str = "") -> str:
    return f"in_port={src_port},ip,dl_src={src_mac},dl_dst={dst_mac},nw_src={src},nw_dst={dst}{extra}"


def arp(src_port: int, sha: str, spa: str, tpa: str, op: int = 1, dst: str = BCAST) -> str:
    return f"in_port={src_port},arp,dl_src={sha},dl_dst={dst},arp_op={op},arp_sha={sha},arp_spa={spa},arp_tpa={tpa}"


def icmp6(src_port: int, src_mac: str, dst_mac: str, src: str, dst: str, icmp_type: int, target: str = "") -> str:
    nd = f",nd_target={target}" if target else ""
    return (f"in_port={src_port},icmp6,dl_src={src_mac},dl_dst={dst_mac},ipv6_src={src},ipv6_dst={dst},"
            f"icmpv6_type={icmp_type}{nd}")


def ports_of(switch: FlowTable, packet: str) -> list[int]:
    return sorted(switch.trace(packet).ports)


MAC_AND_IPV4 = [
    ("A to B, legit", ip4(100, A.mac, B.mac, "203.0.113.10", "203.0.113.11"), [101]),
    ("B to A, other project", ip4(101, B.mac, A.mac, "203.0.113.11", "203.0.113.10"), [100]),
    ("A to the router", ip4(100, A.mac, "02:00:00:00:00:01", "203.0.113.10"), [UPLINK]),
    ("A with B's MAC", ip4(100, B.mac, "02:00:00:00:00:01", "203.0.113.10"), []),
    ("A with a made-up MAC", ip4(100, "fa:16:3e:99:99:99", B.mac, "203.0.113.10"), []),
    ("A with B's IP", ip4(100, A.mac, B.mac, "203.0.113.11", "203.0.113.11"), []),
    ("A with an IP of nobody", ip4(100, A.mac, "02:00:00:00:00:01", "198.51.100.7"), []),
    ("non-IP ethertype from A", f"in_port=100,dl_src={A.mac},dl_dst={B.mac},dl_type=0x88cc", []),
]

ARP = [
    ("A asks for B: answered on the host", arp(100, A.mac, "203.0.113.10", "203.0.113.11"), [100]),
    ("A asks for a neighbor on another host", arp(100, A.mac, "203.0.113.10", "203.0.113.14"), [100]),
    ("A asks for the gateway: out of the uplink", arp(100, A.mac, "203.0.113.10", "203.0.113.1"), [UPLINK, 103]),
    ("A answers the router", arp(100, A.mac, "203.0.113.10", "203.0.113.1", op=2, dst="02:00:00:00:00:01"), [UPLINK]),
    ("ARP with a foreign sender MAC", arp(100, B.mac, "203.0.113.10", "203.0.113.1"), []),
    ("ARP with sha != dl_src", f"in_port=100,arp,dl_src={A.mac},dl_dst={BCAST},arp_op=1,arp_sha={B.mac},"
                               "arp_spa=203.0.113.10,arp_tpa=203.0.113.1", []),
    ("ARP with a foreign sender IP", arp(100, A.mac, "203.0.113.11", "203.0.113.1"), []),
    ("ARP reply poisoning B's cache", arp(100, A.mac, "203.0.113.11", "203.0.113.11", op=2, dst=B.mac), []),
    ("router asks for A: only A hears it", arp(UPLINK, "02:00:00:00:00:01", "203.0.113.1", "203.0.113.10"), [100]),
    ("router asks for a remote port: nobody here", arp(UPLINK, "02:00:00:00:00:01", "203.0.113.1", "203.0.113.14"),
     []),
    ("router asks for an unknown IP", arp(UPLINK, "02:00:00:00:00:01", "203.0.113.1", "203.0.113.99"), []),
]


def test_arp_responder_answers_with_the_owners_mac(switch: FlowTable) -> None:
    result = switch.trace(arp(100, A.mac, "203.0.113.10", "203.0.113.11"))
    ((port, reply),) = result.outputs
    assert port == 100
    assert reply["arp_op"] == 2 and reply["dl_src"] == int(B.mac.replace(":", ""), 16)
    assert reply["arp_sha"] == reply["dl_src"] and reply["dl_dst"] == int(A.mac.replace(":", ""), 16)
    assert reply["arp_spa"] == 0xCB00710B and reply["arp_tpa"] == 0xCB00710A  # 203.0.113.11 is-at B, to .10


V6_ALL_NODES = "33:33:00:00:00:01"
IPV6 = [
    ("A to B from its address", icmp6(100, A.mac, B.mac, "2001:db8::a", "2001:db8::b", 128), [101]),
    ("A from its link-local", icmp6(100, A.mac, B.mac, link_local(A.mac), link_local(B.mac), 128), [101]),
    ("A from B's address", icmp6(100, A.mac, B.mac, "2001:db8::b", "2001:db8::b", 128), []),
    ("A from a made-up address", icmp6(100, A.mac, B.mac, "2001:db8::99", "2001:db8::b", 128), []),
    ("A advertises itself", icmp6(100, A.mac, V6_ALL_NODES, "2001:db8::a", "ff02::1", 136, "2001:db8::a"),
     [UPLINK, 103]),
    ("A advertises B's address", icmp6(100, A.mac, V6_ALL_NODES, "2001:db8::a", "ff02::1", 136, "2001:db8::b"), []),
    ("A advertises from B's address", icmp6(100, A.mac, V6_ALL_NODES, "2001:db8::b", "ff02::1", 136, "2001:db8::a"),
     []),
    ("A solicits B: only B hears it", icmp6(100, A.mac, "33:33:ff:00:00:0b", "2001:db8::a", "ff02::1:ff00:b", 135,
                                            "2001:db8::b"), [101]),
    ("router solicits A: only A", icmp6(UPLINK, "02:00:00:00:00:01", "33:33:ff:00:00:0a", "2001:db8::1",
                                        "ff02::1:ff00:a", 135, "2001:db8::a"), [100]),
    ("router solicits nobody here", icmp6(UPLINK, "02:00:00:00:00:01", "33:33:ff:00:00:99", "2001:db8::1",
                                          "ff02::1:ff00:99", 135, "2001:db8::99"), []),
    ("A's duplicate address detection", icmp6(100, A.mac, "33:33:ff:00:00:77", "::", "ff02::1:ff00:77", 135,
                                              "2001:db8::77"), [UPLINK, 103]),
    ("A as a router (RA)", icmp6(100, A.mac, V6_ALL_NODES, link_local(A.mac), "ff02::1", 134), []),
    ("the real router's RA reaches every port", icmp6(UPLINK, "02:00:00:00:00:01", V6_ALL_NODES, "fe80::1",
                                                      "ff02::1", 134), LOCAL_UP),
]

DHCP_DISCOVER = (f"in_port=100,udp,dl_src={A.mac},dl_dst={BCAST},nw_src=0.0.0.0,nw_dst=255.255.255.255,"
                 "udp_src=68,udp_dst=67")
DHCP = [
    ("A's DHCP discover: out, and to the port without security", DHCP_DISCOVER, [UPLINK, 103]),
    ("A as a DHCP server", f"in_port=100,udp,dl_src={A.mac},dl_dst={BCAST},nw_src=203.0.113.10,"
                           "nw_dst=255.255.255.255,udp_src=67,udp_dst=68", []),
    ("a DHCP server's broadcast reply reaches every port", f"in_port={UPLINK},udp,dl_src=02:00:00:00:00:01,"
     f"dl_dst={BCAST},nw_src=203.0.113.2,nw_dst=255.255.255.255,udp_src=67,udp_dst=68", LOCAL_UP),
]

SNOOPING = [
    ("unicast for A from outside", ip4(UPLINK, "02:00:00:00:00:01", A.mac, "198.51.100.1", "203.0.113.10"), [100]),
    ("unicast for a MAC not here", ip4(UPLINK, "02:00:00:00:00:01", "fa:16:3e:77:77:77", "198.51.100.1"), []),
    ("broadcast IP from outside: only the open port", ip4(UPLINK, "02:00:00:00:00:01", BCAST, "198.51.100.1",
                                                          "255.255.255.255"), [103]),
    ("unicast for the port that is down", ip4(UPLINK, "02:00:00:00:00:01", E.mac, "198.51.100.1"), []),
    ("the port that is down sends", ip4(105, E.mac, A.mac, "203.0.113.30", "203.0.113.10"), []),
]

PAIRS_AND_OPEN_PORT = [
    ("C from its pair address", ip4(102, C.mac, A.mac, "203.0.113.100", "203.0.113.10"), [100]),
    ("C from its pair MAC and address", ip4(102, "fa:16:3e:00:00:cc", A.mac, "203.0.113.101", "203.0.113.10"),
     [100]),
    ("C's pair MAC with the wrong address", ip4(102, "fa:16:3e:00:00:cc", A.mac, "203.0.113.100", "203.0.113.10"),
     []),
    ("ARP for C's pair address from outside", arp(UPLINK, "02:00:00:00:00:01", "203.0.113.1", "203.0.113.100"),
     [102]),
    ("unicast to C's pair MAC", ip4(UPLINK, "02:00:00:00:00:01", "fa:16:3e:00:00:cc", "198.51.100.1"), [102]),
    ("the open port spoofs freely", ip4(103, "fa:16:3e:55:55:55", A.mac, "192.0.2.55", "203.0.113.10"), [100]),
]

VXLAN_CASES = [
    ("V to a remote port: through its host's tunnel", ip4(110, V.mac, W.mac, "10.0.0.10", "10.0.0.20"), [1]),
    ("V to an unknown MAC: nowhere", ip4(110, V.mac, "fa:16:3e:77:77:77", "10.0.0.10"), []),
    ("V broadcasts: one copy per remote host", ip4(110, V.mac, BCAST, "10.0.0.10", "10.255.255.255"), [1, 1]),
    ("V asks for a remote port: answered here", arp(110, V.mac, "10.0.0.10", "10.0.0.20"), [110]),
    ("tunnel, VNI 5001, for V", f"in_port=1,tun_id=5001,ip,dl_src={W.mac},dl_dst={V.mac},nw_src=10.0.0.20,"
                                "nw_dst=10.0.0.10", [110]),
    ("tunnel, another VNI, for V", f"in_port=1,tun_id=5002,ip,dl_src={W.mac},dl_dst={V.mac},nw_src=10.0.0.20,"
                                   "nw_dst=10.0.0.10", []),
    ("flat A to V's MAC stays on the flat network", ip4(100, A.mac, V.mac, "203.0.113.10"), [UPLINK]),
]


@pytest.mark.parametrize("family", ["mac_ipv4", "arp", "ipv6", "dhcp", "snooping", "pairs", "vxlan"])
def test_rule_family(switch: FlowTable, family: str) -> None:
    cases = {"mac_ipv4": MAC_AND_IPV4, "arp": ARP, "ipv6": IPV6, "dhcp": DHCP, "snooping": SNOOPING,
             "pairs": PAIRS_AND_OPEN_PORT, "vxlan": VXLAN_CASES}[family]
    wrong = [(name, want, ports_of(switch, pkt)) for name, pkt, want in cases if ports_of(switch, pkt) != sorted(want)]
    assert not wrong, "\n".join(f"{name}: wanted {want}, got {got}" for name, want, got in wrong)


def test_vxlan_tunnel_carries_the_vni_to_the_right_host(switch: FlowTable) -> None:
    ((_, out),) = switch.trace(ip4(110, V.mac, W.mac, "10.0.0.10", "10.0.0.20")).outputs
    assert out["tun_id"] == 5001 and out["tun_dst"] == 0xC0000202  # 192.0.2.2
    dests = sorted(p["tun_dst"] for _, p in switch.trace(ip4(110, V.mac, BCAST, "10.0.0.10")).outputs)
    assert dests == [0xC0000202, 0xC0000203]


def test_flat_networks_never_tag(switch: FlowTable) -> None:
    actions = " ".join(a for _, a in compile_host(STATE).flows.values())
    assert "vlan" not in actions


def test_qos_meters_on_both_directions(switch: FlowTable) -> None:
    program = compile_host(STATE)
    assert {m.id: (m.kbps, m.burst_kb) for m in program.meters.values()} == {
        t.egress_meter(104): (1000, 100), t.ingress_meter(104): (2000, 200)}
    assert switch.trace(ip4(104, Q.mac, A.mac, "203.0.113.15", "203.0.113.10")).meters == [t.egress_meter(104)]
    assert switch.trace(ip4(100, A.mac, Q.mac, "203.0.113.10", "203.0.113.15")).meters == [t.ingress_meter(104)]


def test_every_flow_carries_a_canopy_cookie_and_port_flows_their_port() -> None:
    program = compile_host(STATE)
    assert all(cookie & t.COOKIE_MASK == t.COOKIE_CANOPY for cookie, _ in program.flows.values())
    mine = [k for k, (cookie, _) in program.flows.items() if cookie == t.port_cookie(A.ofport)]
    assert any("in_port=100" in k for k in mine) and any("reg7=100" in k for k in mine)


def test_cache_gives_the_same_program_and_forgets_removed_ports() -> None:
    cache: dict[object, object] = {}
    first = compile_host(STATE, cache)  # type: ignore[arg-type]
    assert compile_host(STATE, cache).flows == first.flows == compile_host(STATE).flows  # type: ignore[arg-type]
    smaller = dataclasses.replace(STATE, ports=(A, B))
    assert compile_host(smaller, cache).flows == compile_host(smaller).flows  # type: ignore[arg-type]
    assert C not in cache and A in cache


def test_diff_of_one_more_ip_touches_only_that_port_and_is_empty_when_nothing_changed() -> None:
    before = compile_host(STATE)
    assert diff_programs(before, compile_host(STATE)).empty
    a2 = dataclasses.replace(A, ipv4=("203.0.113.10", "203.0.113.20"))
    after = compile_host(dataclasses.replace(STATE, ports=(a2, B, C, D, Q, E, V)))
    diff = diff_programs(before, after)
    assert not diff.delete and diff.add
    assert all("203.0.113.20" in k for k in diff.add)
    table = FlowTable.from_program(before)
    table.modify(diff.add, diff.delete)
    assert table.flows == after.flows
    assert ports_of(table, ip4(100, A.mac, B.mac, "203.0.113.20", "203.0.113.11")) == [101]
    removed = diff_programs(after, before)
    assert set(removed.delete) == set(diff.add) and not removed.add


def test_a_removed_port_leaves_no_flow_behind() -> None:
    without_b = compile_host(dataclasses.replace(STATE, ports=(A, C, D, Q, E, V)))
    assert not [k for k, (cookie, _) in without_b.flows.items() if cookie == t.port_cookie(101)]
    table = FlowTable.from_program(without_b)
    assert ports_of(table, ip4(UPLINK, "02:00:00:00:00:01", B.mac, "198.51.100.1")) == []
    assert ports_of(table, arp(100, A.mac, "203.0.113.10", "203.0.113.11")) == [UPLINK, 103]  # no longer answered


def test_network_key_and_naming() -> None:
    assert t.network_key("vxlan", None, 5001) == 5001
    assert t.network_key("flat", 7, None) == t.FLAT_KEY_BASE + 7
    with pytest.raises(ValueError):
        t.network_key("vxlan", None, 1 << 24)
    assert t.tap_name("0123456789abcdef") == "tap0123456789a"
    assert t.FIRST_UPLINK_OFPORT <= t.uplink_ofport("public") <= t.LAST_UPLINK_OFPORT
    assert t.uplink_ofport("public", {"public": 5}) == 5
    assert link_local("fa:16:3e:00:00:0a") == "fe80::f816:3eff:fe00:a"


def test_program_lines_are_ovs_ofctl_syntax_in_table_order() -> None:
    lines = compile_host(STATE).lines()
    tables = [int(line.split("table=")[1].split(",")[0]) for line in lines]
    assert tables == sorted(tables)
    assert all(line.startswith("cookie=0xca90") and ",actions=" in line for line in lines)


def test_long_floods_are_cut_into_chunks_that_still_reach_everyone() -> None:
    ports = tuple(VmPort(f"p{i}", 100 + i, f"fa:16:3e:01:{i >> 8:02x}:{i & 255:02x}", FLAT, (f"198.51.100.{i % 250}",),
                         security=i % 3 != 0) for i in range(450))
    program = compile_host(HostNetState("big", ports))
    assert max(len(a) for _, a in program.flows.values()) < 16_000  # one OpenFlow message holds 64 KiB
    assert any(k.startswith(f"table={t.FLOOD},") for k in program.flows)
    table = FlowTable.from_program(program)
    reply = (f"in_port={UPLINK},udp,dl_src=02:00:00:00:00:01,dl_dst={BCAST},nw_src=198.51.100.254,"
             "nw_dst=255.255.255.255,udp_src=67,udp_dst=68")
    assert sorted(table.trace(reply).ports) == [p.ofport for p in ports]
    bcast = ip4(UPLINK, "02:00:00:00:00:01", BCAST, "198.51.100.254", "255.255.255.255")
    assert sorted(table.trace(bcast).ports) == [p.ofport for p in ports if not p.security]
