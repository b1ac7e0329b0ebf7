"""The flow compiler's packet tables: one host's ports and neighbors, and for each rule family the packets
and the ports each must leave by. Asked of the fake switch in tests/unit/test_flow_compiler.py and of a real
Open vSwitch in tests/integration/test_ovs_flows.py."""

from __future__ import annotations

from canopy.agent.net import tables as t
from canopy.agent.net.compiler import link_local
from canopy.agent.net.model import AddressPair, BandwidthLimit, HostNetState, Neighbor, Segment, VmPort

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


def ip4(src_port: int, src_mac: str, dst_mac: str, src: str, dst: str = "203.0.113.200", extra: str = "") -> str:
    return f"in_port={src_port},ip,dl_src={src_mac},dl_dst={dst_mac},nw_src={src},nw_dst={dst}{extra}"


def arp(src_port: int, sha: str, spa: str, tpa: str, op: int = 1, dst: str = BCAST) -> str:
    return f"in_port={src_port},arp,dl_src={sha},dl_dst={dst},arp_op={op},arp_sha={sha},arp_spa={spa},arp_tpa={tpa}"


def icmp6(src_port: int, src_mac: str, dst_mac: str, src: str, dst: str, icmp_type: int, target: str = "") -> str:
    nd = f",nd_target={target}" if target else ""
    return (f"in_port={src_port},icmp6,dl_src={src_mac},dl_dst={dst_mac},ipv6_src={src},ipv6_dst={dst},"
            f"icmpv6_type={icmp_type}{nd}")


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
