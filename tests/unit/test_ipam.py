"""The pure IPAM logic: CIDRs, gateways, pools as integer ranges, and the allocation cursor."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest

from canopy.network import errors, ipam
from canopy.network.ports import plan_fixed_ips


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def net(text: str) -> ipam.IPNetwork:
    return ipaddress.ip_network(text)


@pytest.mark.parametrize("cidr, first, last, gateway", [
    ("10.0.0.0/24", "10.0.0.1", "10.0.0.254", "10.0.0.1"),
    ("10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1"),
    ("10.0.0.0/31", "10.0.0.0", "10.0.0.1", None),
    ("10.0.0.7/32", "10.0.0.7", "10.0.0.7", None),
    ("2001:db8::/64", "2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::1"),
    ("2001:db8::/127", "2001:db8::", "2001:db8::1", None),
])
def test_host_bounds_and_default_gateway(cidr: str, first: str, last: str, gateway: str | None) -> None:
    assert ipam.host_bounds(net(cidr)) == (ip(first), ip(last))
    assert ipam.default_gateway(net(cidr)) == gateway


@pytest.mark.parametrize("cidr, gateway, pools", [
    ("10.0.0.0/24", "10.0.0.1", [("10.0.0.2", "10.0.0.254")]),
    ("10.0.0.0/24", None, [("10.0.0.1", "10.0.0.254")]),
    ("10.0.0.0/24", "10.0.0.100", [("10.0.0.1", "10.0.0.99"), ("10.0.0.101", "10.0.0.254")]),
    ("10.0.0.0/24", "10.0.0.254", [("10.0.0.1", "10.0.0.253")]),
    ("10.0.0.0/30", "10.0.0.1", [("10.0.0.2", "10.0.0.2")]),
    ("10.0.0.0/16", "10.0.0.1", [("10.0.0.2", "10.0.255.254")]),
    ("2001:db8::/64", "2001:db8::1", [("2001:db8::2", "2001:db8::ffff:ffff:ffff:ffff")]),
])
def test_default_pools(cidr: str, gateway: str | None, pools: list[tuple[str, str]]) -> None:
    ranges = ipam.default_pools(net(cidr), gateway)
    assert ranges == [(ip(a), ip(b)) for a, b in pools]
    assert ipam.pools_to_dicts(net(cidr).version, ranges) == [
        {"start": str(ipaddress.ip_address(a)), "end": str(ipaddress.ip_address(b))} for a, b in pools]


@pytest.mark.parametrize("text, version, result, error", [
    ("10.0.0.0/24", 4, "10.0.0.0/24", None),
    (" 10.0.0.0/24 ", 4, "10.0.0.0/24", None),
    ("2001:DB8:0::/48", 6, "2001:db8::/48", None),
    ("10.0.0.1/24", 4, None, "'10.0.0.0/24' is recommended"),
    ("10.0.0.0", 4, None, "not a valid IP subnet"),
    ("10.0.0.0/40", 4, None, "not a valid IP subnet"),
    ("10.0.0.0/24", 6, None, "does not match ip_version 6"),
    (42, 4, None, "not a valid IP subnet"),
])
def test_parse_cidr(text: Any, version: int, result: str | None, error: str | None) -> None:
    if error is None:
        assert str(ipam.parse_cidr(text, version)) == result
    else:
        with pytest.raises(errors.InvalidInput, match=error):
            ipam.parse_cidr(text, version)


def pools(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"start": a, "end": b} for a, b in pairs]


@pytest.mark.parametrize("raw, gateway, outcome", [
    (pools(("10.0.0.10", "10.0.0.20")), "10.0.0.1", [("10.0.0.10", "10.0.0.20")]),
    (pools(("10.0.0.30", "10.0.0.40"), ("10.0.0.10", "10.0.0.20")), None,
     [("10.0.0.10", "10.0.0.20"), ("10.0.0.30", "10.0.0.40")]),
    (pools(("10.0.0.1", "10.0.0.254")), None, [("10.0.0.1", "10.0.0.254")]),
    ([], "10.0.0.1", []),
    (pools(("10.0.0.20", "10.0.0.10")), None, errors.InvalidAllocationPool),
    (pools(("10.0.0.0", "10.0.0.10")), None, errors.OutOfBoundsAllocationPool),
    (pools(("10.0.0.10", "10.0.0.255")), None, errors.OutOfBoundsAllocationPool),
    (pools(("10.0.1.1", "10.0.1.2")), None, errors.OutOfBoundsAllocationPool),
    (pools(("10.0.0.10", "10.0.0.20"), ("10.0.0.20", "10.0.0.30")), None, errors.OverlappingAllocationPools),
    (pools(("10.0.0.1", "10.0.0.20")), "10.0.0.5", errors.GatewayConflictWithAllocationPools),
    (pools(("10.0.0.1", "::1")), None, errors.InvalidInput),
    ([{"start": "10.0.0.1"}], None, errors.InvalidInput),
    ("10.0.0.1-10.0.0.2", None, errors.InvalidInput),
])
def test_validate_pools(raw: Any, gateway: str | None, outcome: Any) -> None:
    if isinstance(outcome, list):
        assert ipam.validate_pools(net("10.0.0.0/24"), raw, gateway) == [(ip(a), ip(b)) for a, b in outcome]
    else:
        with pytest.raises(outcome):
            ipam.validate_pools(net("10.0.0.0/24"), raw, gateway)


@pytest.mark.parametrize("value, error", [
    ("10.0.0.1", None), ("10.0.0.0", "gateway_ip"), ("10.0.0.255", "gateway_ip"), ("10.0.1.1", "gateway_ip"),
    ("fe80::1", "IPv4"), ("bogus", "gateway_ip"),
])
def test_check_gateway(value: str, error: str | None) -> None:
    if error is None:
        assert ipam.check_gateway(net("10.0.0.0/24"), value) == value
    else:
        with pytest.raises(errors.InvalidInput, match=error):
            ipam.check_gateway(net("10.0.0.0/24"), value)


def test_pool_ranges_offsets_across_ranges() -> None:
    ranges = ipam.PoolRanges(4, [(ip("10.0.0.30"), ip("10.0.0.31")), (ip("10.0.0.10"), ip("10.0.0.12"))])
    assert ranges.size == 5
    assert [ranges.text(ranges.at(i)) for i in range(5)] == [
        "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.30", "10.0.0.31"]
    assert [ranges.offset_of(ip(t)) for t in ("10.0.0.10", "10.0.0.12", "10.0.0.30", "10.0.0.31")] == [0, 2, 3, 4]
    assert [ranges.offset_of(ip(t)) for t in ("10.0.0.9", "10.0.0.13", "10.0.0.32")] == [None, None, None]


def test_cursor_walks_forward_and_wraps() -> None:
    cursor = ipam.PoolCursor(ipam.PoolRanges(4, [(ip("10.0.0.2"), ip("10.0.0.5"))]), start=2)
    got = [cursor.ranges.text(cursor.propose() or 0) for _ in range(4)]
    assert got == ["10.0.0.4", "10.0.0.5", "10.0.0.2", "10.0.0.3"]
    assert cursor.propose() is None  # every address is held


def test_cursor_skips_known_taken_and_comes_back_to_released() -> None:
    cursor = ipam.PoolCursor(ipam.PoolRanges(4, [(ip("10.0.0.2"), ip("10.0.0.6"))]))
    cursor.resync([ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.5"), ip("192.0.2.1")])
    assert cursor.propose() == ip("10.0.0.4")
    assert cursor.propose() == ip("10.0.0.6")
    assert cursor.propose() is None
    cursor.release(ip("10.0.0.3"))
    assert cursor.propose() == ip("10.0.0.3")
    cursor.mark_taken(ip("10.0.0.2"))
    assert cursor.propose() is None


def test_cursor_on_a_huge_ipv6_pool_never_enumerates_it() -> None:
    subnet = net("2001:db8::/64")
    ranges = ipam.PoolRanges(6, ipam.default_pools(subnet, "2001:db8::1"))
    assert ranges.size == 2**64 - 2
    cursor = ipam.PoolCursor(ranges, start=ranges.size - 1)
    assert ranges.text(cursor.propose() or 0) == "2001:db8::ffff:ffff:ffff:ffff"
    assert ranges.text(cursor.propose() or 0) == "2001:db8::2"  # wrapped
    cursor.resync(range(ip("2001:db8::3"), ip("2001:db8::3") + 1000))
    assert ranges.text(cursor.propose() or 0) == "2001:db8::3eb"


def test_empty_pool_proposes_nothing() -> None:
    cursor = ipam.PoolCursor(ipam.PoolRanges(4, []))
    assert cursor.propose() is None


def test_registry_rebuilds_a_cursor_when_the_pools_change() -> None:
    registry = ipam.CursorRegistry(random.Random(7))
    subnet = {"id": "s1", "ip_version": 4, "allocation_pools": pools(("10.0.0.2", "10.0.0.9"))}
    first = registry.get(subnet)
    assert registry.get(dict(subnet)) is first and registry.peek("s1") is first
    assert 0 <= first.pos < 8
    changed = registry.get({**subnet, "allocation_pools": pools(("10.0.0.2", "10.0.0.3"))})
    assert changed is not first and changed.ranges.size == 2
    registry.clear()
    assert registry.peek("s1") is None


def test_cursors_of_several_processes_start_apart() -> None:
    subnet = {"id": "s1", "ip_version": 4, "allocation_pools": pools(("10.0.0.0", "10.0.255.255"))}
    starts = {ipam.CursorRegistry(random.Random(seed)).get(subnet).pos for seed in range(8)}
    assert len(starts) == 8


SUBNETS = [
    {"id": "v4", "ip_version": 4, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1"},
    {"id": "v6", "ip_version": 6, "cidr": "2001:db8::/64", "gateway_ip": "2001:db8::1"},
    {"id": "v4b", "ip_version": 4, "cidr": "10.0.1.0/24", "gateway_ip": None},
]


@pytest.mark.parametrize("fixed_ips, outcome", [
    (None, [("v4", None)]),
    ([], []),
    ([{"subnet_id": "v6"}], [("v6", None)]),
    ([{"ip_address": "10.0.1.9"}], [("v4b", "10.0.1.9")]),
    ([{"ip_address": "2001:db8:0:0::9"}], [("v6", "2001:db8::9")]),
    ([{"subnet_id": "v4", "ip_address": "10.0.0.9"}, {"subnet_id": "v4"}], [("v4", "10.0.0.9"), ("v4", None)]),
    ([{"ip_address": "10.0.0.1"}], errors.IpAddressAlreadyAllocated),
    ([{"ip_address": "10.0.0.0"}], errors.InvalidIpForNetwork),
    ([{"subnet_id": "v4", "ip_address": "10.0.1.9"}], errors.InvalidIpForSubnet),
    ([{"subnet_id": "nope"}], errors.InvalidInput),
    ([{}], errors.InvalidInput),
    ([{"subnet_id": None}], errors.InvalidInput),
    ("10.0.0.5", errors.InvalidInput),
])
def test_plan_fixed_ips(fixed_ips: Any, outcome: Any) -> None:
    network = {"id": "n1"}
    if isinstance(outcome, list):
        plan = plan_fixed_ips(network, SUBNETS, fixed_ips)
        assert [(s["id"], a) for s, a in plan] == outcome
    else:
        with pytest.raises(outcome):
            plan_fixed_ips(network, SUBNETS, fixed_ips)


def test_plan_default_without_ipv4_and_router_gateway() -> None:
    assert [s["id"] for s, _ in plan_fixed_ips({"id": "n"}, SUBNETS[1:2], None)] == ["v6"]
    assert plan_fixed_ips({"id": "n"}, [], None) == []
    plan = plan_fixed_ips({"id": "n"}, SUBNETS, [{"ip_address": "10.0.0.1"}], "network:router_interface")
    assert [(s["id"], a) for s, a in plan] == [("v4", "10.0.0.1")]
