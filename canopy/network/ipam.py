"""IP address management, the pure part: CIDRs, gateways, allocation pools as integer ranges, and the
per-subnet cursor that proposes candidate addresses.

The database's primary key on (subnet_id, ip_address) is the only arbiter of who holds an address; a
cursor only proposes. Each process keeps one cursor per subnet: a position in the pool (an offset over
its integer ranges, starting at a random place so that several processes rarely propose the same
address) and the set of addresses it knows to be taken. Proposing walks forward from the position,
skipping known-taken addresses, and wraps at the end of the pool: consecutive allocations cost one
INSERT each, and a freed address comes back only after a full cycle. When the cursor knows no free
address, or too many proposals in a row were taken by others, the caller resyncs it from the database
(one query for the subnet's allocations) before declaring the pool exhausted. Nothing here enumerates a
pool, so an IPv6 /64 costs the same as a /24.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import random
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from canopy.network.errors import (
    GatewayConflictWithAllocationPools,
    InvalidAllocationPool,
    OutOfBoundsAllocationPool,
    OverlappingAllocationPools,
    invalid,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Range = tuple[int, int]


def parse_ip(value: object, field: str, version: int | None = None) -> IPAddress:
    """An IP address from request text; a 400 naming `field` when it is not one (of `version`)."""
    if not isinstance(value, str) or "%" in value:
        raise invalid(field, f"'{value}' is not a valid IP address")
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        raise invalid(field, f"'{value}' is not a valid IP address") from None
    if version is not None and addr.version != version:
        raise invalid(field, f"'{value}' is not an IPv{version} address")
    return addr


def parse_cidr(value: object, version: int, field: str = "cidr") -> IPNetwork:
    """A subnet CIDR in canonical form; host bits set, a bare address or the wrong version is a 400."""
    if not isinstance(value, str) or "/" not in value:
        raise invalid(field, f"'{value}' is not a valid IP subnet")
    try:
        return _checked_network(ipaddress.ip_network(value.strip(), strict=True), version, field)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise invalid(field, f"'{value}' is not a valid IP subnet") from None
    raise invalid(field, f"'{value}' isn't a recognized IP subnet cidr, '{loose}' is recommended")


def _checked_network(net: IPNetwork, version: int, field: str) -> IPNetwork:
    if net.version != version:
        raise invalid(field, f"cidr '{net}' does not match ip_version {version}")
    return net


@functools.lru_cache(maxsize=4096)
def network_of(cidr: str) -> IPNetwork:
    """The network of a stored (already canonical) CIDR, parsed once per process."""
    return ipaddress.ip_network(cidr)


def host_bounds(net: IPNetwork) -> Range:
    """The first and last address a host may use: not the network address nor (IPv4) the broadcast."""
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.num_addresses <= 2:
        return first, last
    return first + 1, last - 1 if net.version == 4 else last


def is_host_address(net: IPNetwork, addr: IPAddress) -> bool:
    """Whether `addr` is inside `net` and usable by a host."""
    if addr.version != net.version:
        return False
    first, last = host_bounds(net)
    return first <= int(addr) <= last


def default_gateway(net: IPNetwork) -> str | None:
    """The first host address, or None for a subnet too small to spare one."""
    if net.num_addresses <= 2:
        return None
    return str(net.network_address + 1)


def check_gateway(net: IPNetwork, value: object) -> str | None:
    """A requested gateway_ip in canonical form; it must be a host address of the subnet."""
    if value is None:
        return None
    addr = parse_ip(value, "gateway_ip", net.version)
    if not is_host_address(net, addr):
        raise invalid("gateway_ip", f"gateway {addr} is not a valid host address of subnet {net}")
    return str(addr)


def default_pools(net: IPNetwork, gateway: str | None) -> list[Range]:
    """The whole usable range of the subnet, minus the gateway."""
    first, last = host_bounds(net)
    if gateway is None:
        return [(first, last)]
    gw = int(ipaddress.ip_address(gateway))
    return [(a, b) for a, b in ((first, gw - 1), (gw + 1, last)) if a <= b]


def validate_pools(net: IPNetwork, raw: object, gateway: str | None) -> list[Range]:
    """Requested allocation pools as sorted integer ranges: well formed, inside the subnet's usable
    range, not overlapping, and clear of the gateway."""
    if not isinstance(raw, list):
        raise invalid("allocation_pools", f"{raw!r} is not a list")
    ranges: list[Range] = []
    for pool in raw:
        if not isinstance(pool, dict) or set(pool) != {"start", "end"}:
            raise invalid("allocation_pools", f"{pool!r} must be an object with exactly 'start' and 'end'")
        start = parse_ip(pool["start"], "allocation_pools", net.version)
        end = parse_ip(pool["end"], "allocation_pools", net.version)
        if int(start) > int(end):
            raise InvalidAllocationPool(f"The allocation pool {start}-{end} is not valid.")
        first, last = host_bounds(net)
        if int(start) < first or int(end) > last:
            raise OutOfBoundsAllocationPool(f"The allocation pool {start}-{end} spans beyond the subnet cidr {net}.")
        ranges.append((int(start), int(end)))
    ranges.sort()
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:], strict=False):
        if b0 <= a1:
            raise OverlappingAllocationPools(
                f"Found overlapping allocation pools: {text_of(net.version, a0)}-{text_of(net.version, a1)} and "
                f"{text_of(net.version, b0)}-{text_of(net.version, b1)} for subnet {net}.")
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        for a, b in ranges:
            if a <= gw <= b:
                raise GatewayConflictWithAllocationPools(
                    f"Gateway ip {gateway} conflicts with allocation pool "
                    f"{text_of(net.version, a)}-{text_of(net.version, b)}")
    return ranges


def text_of(version: int, value: int) -> str:
    """The canonical text of an address given as an integer."""
    if version == 4:
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))


def pools_to_dicts(version: int, ranges: Iterable[Range]) -> list[dict[str, str]]:
    """Integer ranges as the API's [{"start", "end"}]."""
    return [{"start": text_of(version, a), "end": text_of(version, b)} for a, b in ranges]


def pools_from_dicts(pools: Iterable[dict[str, Any]]) -> list[Range]:
    """Stored [{"start", "end"}] as sorted integer ranges."""
    return sorted((int(ipaddress.ip_address(p["start"])), int(ipaddress.ip_address(p["end"]))) for p in pools)


def reserved_addresses(subnet: dict[str, Any]) -> frozenset[int]:
    """Addresses of a subnet no port is ever given automatically: its gateway and its DNS servers."""
    out = set()
    for text in [subnet.get("gateway_ip"), *(subnet.get("dns_nameservers") or [])]:
        if text:
            try:
                out.add(int(ipaddress.ip_address(text)))
            except ValueError:
                continue
    return frozenset(out)


class PoolRanges:
    """Allocation pools as sorted, disjoint integer ranges, addressed by an offset 0..size-1."""

    __slots__ = ("version", "starts", "offsets", "size")

    def __init__(self, version: int, ranges: Sequence[Range]) -> None:
        self.version = version
        self.starts: list[int] = []
        self.offsets: list[int] = []
        size = 0
        for start, end in sorted(ranges):
            self.starts.append(start)
            self.offsets.append(size)
            size += end - start + 1
        self.size = size

    def at(self, offset: int) -> int:
        """The address at `offset` into the pools."""
        if len(self.starts) == 1:
            return self.starts[0] + offset
        i = bisect.bisect_right(self.offsets, offset) - 1
        return self.starts[i] + offset - self.offsets[i]

    def offset_of(self, value: int) -> int | None:
        """The offset of an address, or None when it is in no pool."""
        i = bisect.bisect_right(self.starts, value) - 1
        if i < 0:
            return None
        offset = self.offsets[i] + value - self.starts[i]
        end = self.offsets[i + 1] if i + 1 < len(self.offsets) else self.size
        return offset if offset < end else None

    def text(self, value: int) -> str:
        return text_of(self.version, value)


class PoolCursor:
    """One process's position in one subnet's pools, and the addresses it knows to be taken."""

    def __init__(self, ranges: PoolRanges, start: int = 0, key: object = None,
                 reserved: Iterable[int] = ()) -> None:
        self.ranges = ranges
        self.key = key
        self.pos = start % ranges.size if ranges.size else 0
        self.reserved = frozenset(reserved)  # the gateway and DNS addresses: never proposed, even if pooled
        self.taken: set[int] = set(self.reserved)
        self._lock = threading.Lock()

    def propose(self) -> int | None:
        """The next address at or after the cursor not known to be taken (wrapping at the end of the
        pool), reserved in this process; None when every address is known to be taken."""
        size = self.ranges.size
        with self._lock:
            pos, taken = self.pos, self.taken
            for _ in range(min(size, len(taken) + 1)):
                value = self.ranges.at(pos)
                pos = pos + 1 if pos + 1 < size else 0
                if value not in taken:
                    self.pos = pos
                    taken.add(value)
                    return value
            return None

    def mark_taken(self, value: int) -> None:
        """Remember that an address is held (by this process or another)."""
        with self._lock:
            self.taken.add(value)

    def release(self, value: int) -> None:
        """Forget that an address is held: it comes back when the cursor next passes it."""
        if value in self.reserved:
            return
        with self._lock:
            self.taken.discard(value)

    def resync(self, taken: Iterable[int]) -> None:
        """Replace what the cursor knows with the database's list of held addresses."""
        fresh = set(taken) | self.reserved
        with self._lock:
            self.taken = fresh


class CursorRegistry:
    """This process's cursors, one per subnet, rebuilt when a subnet's pools change."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._cursors: dict[str, PoolCursor] = {}
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    def get(self, subnet: dict[str, Any]) -> PoolCursor:
        """The cursor of a subnet row (keys id, ip_version, allocation_pools)."""
        pools = subnet["allocation_pools"]
        reserved = reserved_addresses(subnet)
        key = (tuple((p["start"], p["end"]) for p in pools), reserved)
        cursor = self._cursors.get(subnet["id"])
        if cursor is not None and cursor.key == key:
            return cursor
        with self._lock:
            cursor = self._cursors.get(subnet["id"])
            if cursor is None or cursor.key != key:
                ranges = PoolRanges(subnet["ip_version"], pools_from_dicts(pools))
                start = self._rng.randrange(ranges.size) if ranges.size else 0
                cursor = PoolCursor(ranges, start, key, reserved)
                self._cursors[subnet["id"]] = cursor
            return cursor

    def peek(self, subnet_id: str) -> PoolCursor | None:
        """The subnet's cursor if this process has one."""
        return self._cursors.get(subnet_id)

    def clear(self) -> None:
        """Forget every cursor (tests; a subnet deleted)."""
        with self._lock:
            self._cursors.clear()


CURSORS = CursorRegistry()
