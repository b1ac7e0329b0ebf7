"""The simulated fleet's shape: data centers, rows and racks, and the public address space for a run."""

from __future__ import annotations

import ipaddress
import math

RACKS_PER_ROW = 10


def host_layout(hosts: int, dcs: int, racks_per_dc: int) -> list[list[str]]:
    """[name, data center, rack] for each host: spread evenly over the data centers, then their racks
    (a rack is named row-rack, `RACKS_PER_ROW` racks to a row)."""
    out = []
    per_dc = math.ceil(hosts / max(dcs, 1))
    for n in range(hosts):
        dc, k = divmod(n, per_dc)
        rack = k % max(racks_per_dc, 1)
        out.append([f"sim-{n + 1:06d}", f"dc{dc + 1}", f"row{rack // RACKS_PER_ROW + 1}-r{rack + 1:03d}"])
    return out


def subnet_for(servers: int, base: str = "100.64.0.0/10") -> str:
    """The smallest block of `base` holding twice `servers` addresses (at least a /22): a run's public
    subnet, sized so that the addresses held back after a delete never run out."""
    need = max(1024, 2 * servers + 16)
    prefix = max(ipaddress.ip_network(base).prefixlen, 32 - math.ceil(math.log2(need)))
    return str(next(ipaddress.ip_network(base).subnets(new_prefix=prefix)))
