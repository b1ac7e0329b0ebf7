"""Subnets (global table): validation of addressing, rows, views and queries."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from canopy.clock import isotime
from canopy.db import tables_global as g
from canopy.network import ipam
from canopy.network.errors import InvalidInput, invalid

MISSING: Any = object()


def addressing(ip_version: int, cidr: object, gateway_ip: object = MISSING, allocation_pools: object = MISSING,
               *, existing: Sequence[dict[str, Any]] = (), network_id: str = "") -> dict[str, Any]:
    """cidr, gateway_ip and allocation_pools for a new subnet, validated and normalised; an absent
    gateway defaults to the first host address, absent pools to the usable range minus the gateway.
    `existing` are the network's other subnets, which the new CIDR must not overlap."""
    if ip_version not in (4, 6):
        raise invalid("ip_version", f"{ip_version!r} is not in [4, 6]")
    net = ipam.parse_cidr(cidr, ip_version)
    for other in existing:
        if ipam.network_of(other["cidr"]).overlaps(net):
            # Neutron's words exactly: clients match "overlaps with another subnet" to try the next CIDR.
            raise InvalidInput(f"Invalid input for operation: Requested subnet with cidr: {net} for network: "
                               f"{network_id or other['network_id']} overlaps with another subnet.")
    gateway = ipam.default_gateway(net) if gateway_ip is MISSING else ipam.check_gateway(net, gateway_ip)
    if allocation_pools is MISSING:
        ranges = ipam.default_pools(net, gateway)
    else:
        ranges = ipam.validate_pools(net, allocation_pools, gateway)
    return {"ip_version": ip_version, "cidr": str(net), "gateway_ip": gateway,
            "allocation_pools": ipam.pools_to_dicts(ip_version, ranges)}


def readdress(row: dict[str, Any], gateway_ip: object = MISSING, allocation_pools: object = MISSING
              ) -> dict[str, Any]:
    """The changed gateway_ip / allocation_pools of an existing subnet, validated against each other."""
    net = ipam.network_of(row["cidr"])
    gateway = row["gateway_ip"] if gateway_ip is MISSING else ipam.check_gateway(net, gateway_ip)
    raw_pools = row["allocation_pools"] if allocation_pools is MISSING else allocation_pools
    ranges = ipam.validate_pools(net, raw_pools, gateway)
    changes: dict[str, Any] = {}
    if gateway_ip is not MISSING:
        changes["gateway_ip"] = gateway
    if allocation_pools is not MISSING:
        changes["allocation_pools"] = ipam.pools_to_dicts(net.version, ranges)
    return changes


def dns_nameservers(value: object) -> list[str]:
    """A list of name server addresses, canonical and without duplicates."""
    if not isinstance(value, list):
        raise invalid("dns_nameservers", f"{value!r} is not a list")
    out = [str(ipam.parse_ip(v, "dns_nameservers")) for v in value]
    if len(set(out)) != len(out):
        raise invalid("dns_nameservers", f"duplicate name servers in {value!r}")
    return out


def host_routes(value: object, ip_version: int) -> list[dict[str, str]]:
    """A list of {"destination": cidr, "nexthop": ip} of the subnet's IP version."""
    if not isinstance(value, list):
        raise invalid("host_routes", f"{value!r} is not a list")
    out = []
    for route in value:
        if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
            raise invalid("host_routes", f"{route!r} must be an object with exactly 'destination' and 'nexthop'")
        dest = route["destination"]
        try:
            net = ipaddress.ip_network(dest, strict=True) if isinstance(dest, str) else None
        except ValueError:
            net = None
        if net is None or net.version != ip_version:
            raise invalid("host_routes", f"'{dest}' is not a valid IPv{ip_version} destination cidr")
        hop = ipam.parse_ip(route["nexthop"], "host_routes", ip_version)
        out.append({"destination": str(net), "nexthop": str(hop)})
    return out


def insert_subnet(conn: Connection, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Create a subnet from validated column values."""
    row = {"id": str(uuid.uuid4()), "name": "", "description": "", "enable_dhcp": False, "dns_nameservers": [],
           "host_routes": [], "segment_id": None, **values, "created_at": now, "updated_at": now}
    conn.execute(g.subnets.insert().values(**row))
    return row


def subnets_of(conn: Connection, network_id: str) -> list[dict[str, Any]]:
    """The subnet rows of a network, oldest first."""
    stmt = (select(g.subnets).where(g.subnets.c.network_id == network_id)
            .order_by(g.subnets.c.created_at, g.subnets.c.id))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def get_subnet(conn: Connection, subnet_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A subnet row with its network row."""
    s, n = g.subnets, g.networks
    row = conn.execute(select(s).where(s.c.id == subnet_id)).mappings().first()
    if row is None:
        return None
    net = conn.execute(select(n).where(n.c.id == row["network_id"])).mappings().first()
    return (dict(row), dict(net)) if net else None


def list_subnets(conn: Connection, *, filters: dict[str, list[Any]], project_id: str | None,
                 limit: int, marker: str | None) -> list[dict[str, Any]]:
    """Subnet rows matching column filters, ordered by id, after `marker`; a project sees its own
    subnets and those of shared networks."""
    s, n = g.subnets, g.networks
    stmt = select(s).order_by(s.c.id).limit(limit)
    for column, values in filters.items():
        stmt = stmt.where(s.c[column].in_(values))
    if project_id is not None:
        shared = select(n.c.id).where(n.c.shared.is_(True))
        stmt = stmt.where((s.c.project_id == project_id) | s.c.network_id.in_(shared))
    if marker:
        stmt = stmt.where(s.c.id > marker)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def update_subnet(conn: Connection, subnet_id: str, changes: dict[str, Any], now: datetime) -> None:
    """Apply column changes to a subnet."""
    conn.execute(update(g.subnets).where(g.subnets.c.id == subnet_id).values(**changes, updated_at=now))


def delete_subnet(conn: Connection, subnet_id: str) -> None:
    """Delete a subnet row (the caller has checked it holds no allocations)."""
    conn.execute(delete(g.subnets).where(g.subnets.c.id == subnet_id))


def subnet_view(row: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a subnet."""
    return {
        "id": row["id"], "name": row["name"], "network_id": row["network_id"], "project_id": row["project_id"],
        "tenant_id": row["project_id"], "description": row["description"], "ip_version": row["ip_version"],
        "cidr": row["cidr"], "gateway_ip": row["gateway_ip"], "allocation_pools": row["allocation_pools"],
        "dns_nameservers": row["dns_nameservers"], "host_routes": row["host_routes"],
        "enable_dhcp": row["enable_dhcp"], "segment_id": row["segment_id"], "ipv6_ra_mode": None,
        "ipv6_address_mode": None, "subnetpool_id": None, "service_types": [], "dns_publish_fixed_ip": False,
        "tags": [], "created_at": isotime(row["created_at"]), "updated_at": isotime(row["updated_at"]),
        "revision_number": 1,
    }
