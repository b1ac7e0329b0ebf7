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
    HostNetState,
    VmPort,
    diff_programs,
)
from tests.packet_tables import (
    ARP,
    BCAST,
    DHCP,
    FLAT,
    IPV6,
    MAC_AND_IPV4,
    PAIRS_AND_OPEN_PORT,
    SNOOPING,
    STATE,
    UPLINK,
    VXLAN_CASES,
    A,
    B,
    C,
    D,
    E,
    Q,
    V,
    W,
    arp,
    ip4,
)


@pytest.fixture(scope="module")
def switch() -> FlowTable:
    return FlowTable.from_program(compile_host(STATE))


def ports_of(switch: FlowTable, packet: str) -> list[int]:
    return sorted(switch.trace(packet).ports)


def test_arp_responder_answers_with_the_owners_mac(switch: FlowTable) -> None:
    result = switch.trace(arp(100, A.mac, "203.0.113.10", "203.0.113.11"))
    ((port, reply),) = result.outputs
    assert port == 100
    assert reply["arp_op"] == 2 and reply["dl_src"] == int(B.mac.replace(":", ""), 16)
    assert reply["arp_sha"] == reply["dl_src"] and reply["dl_dst"] == int(A.mac.replace(":", ""), 16)
    assert reply["arp_spa"] == 0xCB00710B and reply["arp_tpa"] == 0xCB00710A  # 203.0.113.11 is-at B, to .10


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
