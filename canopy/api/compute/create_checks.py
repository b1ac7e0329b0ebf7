"""What a server create asks for, checked against the cloud before anything is written: the number of
servers, a chosen fixed_ip (the port API's policy and the network's subnets), the availability zone and
the security groups."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, or_, select

from canopy.api.compute.zones import DEFAULT_ZONE
from canopy.api.errors import ApiError, bad_request
from canopy.context import RequestContext
from canopy.db import tables_cell as c
from canopy.network.errors import NetworkError
from canopy.network.ports import plan_fixed_ips


def bound_count(server: Any, bound: int) -> None:
    """min_count and max_count are bounded before anything is planned; a max_count over the bound is
    lowered to it (a multi-create is "up to" max_count, as the quota lowers it too)."""
    if server.min_count > bound:
        raise bad_request(f"Invalid input for field/attribute min_count. Value: {server.min_count}. "
                          f"At most {bound} servers may be created at once.")
    if server.max_count is not None and server.max_count > bound:
        server.max_count = bound


def zone_exists(conn: Connection, zone: str) -> bool:
    """Whether any host is in the availability zone (the default zone exists while hosts have none)."""
    h = c.hosts.c
    named = h.availability_zone == zone
    if zone == DEFAULT_ZONE:
        named = or_(named, h.availability_zone.is_(None), h.availability_zone == "")
    return conn.execute(select(h.availability_zone).where(named).limit(1)).first() is not None


def check_fixed_ip(net: dict[str, Any], address: str, rc: RequestContext) -> None:
    """A requested address passes the port API's rules: only an admin or the network's owner may pick one
    (`create_port:fixed_ips:ip_address`, so a member cannot take a just-freed public address on a shared
    network), and it must be a usable host address of one of the network's subnets (not the gateway, a
    DNS server, the network or the broadcast address). Whether it is free is the conductor's to find."""
    network = net["network"]
    if not (rc.is_admin or network["project_id"] == rc.project_id):
        raise ApiError(403, f"Policy doesn't allow create_port:fixed_ips:ip_address to be performed: only the "
                            f"owner of network {network['id']} may choose a fixed_ip on it.")
    try:
        plan_fixed_ips(network, net["subnets"], [{"ip_address": address}], "compute:")
    except NetworkError as exc:
        raise bad_request(f"Invalid input for field/attribute fixed_ip. Value: {address}. {exc}") from None


def check_security_groups(groups: list[dict[str, str]] | None) -> None:
    """The shape of the requested security groups, checked before anything is read (whether each exists is
    asked once the request is whole: server_secgroups.resolve_create_groups)."""
    for group in groups or []:
        name = group.get("name")
        if set(group) != {"name"} or not isinstance(name, str) or not name:
            raise bad_request("Invalid input for field/attribute security_groups. Each item is {'name': ...}.")
