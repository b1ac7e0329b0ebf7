"""Ports and their IP allocations (cell tables): creating, changing and deleting them.

These are synchronous functions of a cell Connection, run inside the caller's transaction (the API's or
the conductor's). An address is allocated by an INSERT that does nothing on conflict (ON CONFLICT DO
NOTHING / INSERT IGNORE), so a taken address neither raises nor aborts the transaction (PostgreSQL), and
the primary key (subnet_id, ip_address) decides between processes. A port with one automatic address
costs two statements: the port INSERT and the allocation INSERT.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, and_, bindparam, cast, delete, exists, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement

from canopy.db import tables_cell as c
from canopy.network import bindings, ipam, limits
from canopy.network.errors import (
    AddressPairAndPortSecurityRequired,
    InvalidIpForNetwork,
    InvalidIpForSubnet,
    IpAddressAlreadyAllocated,
    IpAddressGenerationFailure,
    MacAddressGenerationFailure,
    MacAddressInUse,
    NetworkError,
    PortExists,
    PortNotFound,
    invalid,
)
from canopy.network.port_record import PortRecord
from canopy.network.port_views import (
    address_pairs,
    get_port,
    network_has_server_ports,
    normalize_mac,
    port_view,
    ports_of_devices,
    random_mac,
    rows_where,
    sort_fixed_ips,
    subnet_in_use,
    views_where,
)

__all__ = [
    "NetworkError", "create_port", "delete_port", "delete_ports_of_device", "delete_ports_of_network", "get_port",
    "network_has_server_ports", "plan_fixed_ips", "ports_of_devices", "remove_ports_of_device", "subnet_in_use",
    "update_port",
]

MAX_PROBES = 16  # taken proposals in a row before the cursor is resynced from the database
MAX_RESYNCS = 3
MAC_ATTEMPTS = 8
ROUTER_OWNERS = frozenset({"network:router_interface", "network:router_gateway",
                           "network:router_interface_distributed", "network:ha_router_replicated_interface"})
Plan = list[tuple[dict[str, Any], str | None]]

_IGNORING: dict[tuple[str, str], Insert] = {}


def _insert_ignoring(conn: Connection, table: Any) -> Insert:
    """An INSERT into `table` that does nothing when a key is taken (its rowcount is then 0)."""
    key = (conn.dialect.name, table.name)
    stmt = _IGNORING.get(key)
    if stmt is None:
        if key[0] == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing()
        elif key[0] == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing()
        else:
            stmt = insert(table).prefix_with("IGNORE")
        stmt = stmt.execution_options(preserve_rowcount=True)  # psycopg reports it only when asked to
        _IGNORING[key] = stmt
    return stmt


def plan_fixed_ips(network: dict[str, Any], subnets: list[dict[str, Any]], fixed_ips: list[dict[str, Any]] | None,
                   device_owner: str = "") -> Plan:
    """The subnet of each requested address, with the specific address when one was asked for. None
    means the default: one address from the first IPv4 subnet (else the first subnet, else none)."""
    if fixed_ips is None:
        first = next((s for s in subnets if s["ip_version"] == 4), subnets[0] if subnets else None)
        return [(first, None)] if first else []
    if not isinstance(fixed_ips, list):
        raise invalid("fixed_ips", f"{fixed_ips!r} is not a list")
    by_id = {s["id"]: s for s in subnets}
    plan: Plan = []
    for entry in fixed_ips:
        if (not isinstance(entry, dict) or set(entry) - {"subnet_id", "ip_address"}
                or all(v is None for v in entry.values())):
            raise invalid("fixed_ips", f"{entry!r} must be an object with 'subnet_id' and/or 'ip_address'")
        subnet_id, ip = entry.get("subnet_id"), entry.get("ip_address")
        subnet = by_id.get(subnet_id) if subnet_id is not None else None
        if subnet_id is not None and subnet is None:
            raise invalid("fixed_ips", f"subnet {subnet_id} is not a subnet of network {network['id']}")
        if ip is None:
            plan.append((subnet, None))  # type: ignore[arg-type]
            continue
        addr = ipam.parse_ip(ip, "fixed_ips")
        if subnet is None:
            subnet = next((s for s in subnets if ipam.is_host_address(ipam.network_of(s["cidr"]), addr)), None)
            if subnet is None:
                raise InvalidIpForNetwork(f"IP address {addr} is not a valid IP for any of the subnets on the "
                                          "specified network.")
        elif not ipam.is_host_address(ipam.network_of(subnet["cidr"]), addr):
            raise InvalidIpForSubnet(f"IP address {addr} is not a valid IP for the specified subnet.")
        if str(addr) == subnet["gateway_ip"] and device_owner not in ROUTER_OWNERS:
            raise IpAddressAlreadyAllocated(f"IP address {addr} already allocated in subnet {subnet['id']}: it is "
                                            "the subnet's gateway")
        if str(addr) in (subnet.get("dns_nameservers") or []) and not device_owner.startswith("network:"):
            raise IpAddressAlreadyAllocated(f"IP address {addr} already allocated in subnet {subnet['id']}: it is "
                                            "the subnet's DNS server")
        plan.append((subnet, str(addr)))
    return plan


def create_port(
    conn: Connection,
    *,
    network: dict[str, Any],
    subnets: list[dict[str, Any]],
    project_id: str,
    device_id: str = "",
    device_owner: str = "",
    host_id: str = "",
    fixed_ips: list[dict[str, Any]] | None = None,
    name: str = "",
    now: datetime,
    port_id: str | None = None,
    description: str = "",
    admin_state_up: bool = True,
    mac_address: str | None = None,
    allowed_address_pairs: list[dict[str, Any]] | None = None,
    port_security_enabled: bool = True,
    policy: limits.AddressPolicy = limits.NO_LIMITS,
    qos_policy_id: str | None = None,
    security_groups: list[str] | None = None,
) -> PortRecord:
    """Create a port on `network` (a row from networks.load_network, with its subnet rows) and allocate
    its addresses; its record. A host binds it (an OpenFlow number there); `policy` is the project's
    quotas and the hold time of public addresses. Raises NetworkError (pool exhausted, address taken,
    over quota, bad request)."""
    plan = plan_fixed_ips(network, subnets, fixed_ips, device_owner)
    limits.check_quota(conn, policy, 1, len(plan) if policy.is_public(network["id"]) else 0)
    mac = normalize_mac(mac_address) if mac_address is not None else random_mac()
    pairs = address_pairs(allowed_address_pairs or [], mac)
    if pairs and not port_security_enabled:
        raise _pairs_need_security()
    row = {"id": port_id or str(uuid.uuid4()), "network_id": network["id"], "project_id": project_id,
           "name": name, "description": description, "mac_address": mac, "device_id": device_id,
           "device_owner": device_owner, "host_id": host_id, "status": "ACTIVE" if host_id else "DOWN",
           "admin_state_up": admin_state_up, "port_security_enabled": port_security_enabled,
           "allowed_address_pairs": pairs, "created_at": now, "updated_at": now}
    _insert_port(conn, row, mac_address is not None)
    ips = [_allocate(conn, row["id"], network["id"], subnet, address, policy, now) for subnet, address in plan]
    ofport = bindings.bind(conn, row["id"], host_id) if host_id else None
    if qos_policy_id:
        conn.execute(c.port_qos.insert().values(port_id=row["id"], policy_id=qos_policy_id))
    groups = sorted(set(security_groups or [])) if port_security_enabled else []
    if groups:  # one statement, however many groups
        conn.execute(c.port_security_groups.insert(), [{"port_id": row["id"], "security_group_id": gid}
                                                       for gid in groups])
    return PortRecord.of_row({**row, "qos_policy_id": qos_policy_id, "ofport": ofport, "security_groups": groups},
                             sort_fixed_ips(ips) if len(ips) > 1 else ips)


def _insert_port(conn: Connection, row: dict[str, Any], mac_requested: bool) -> None:
    stmt = _insert_ignoring(conn, c.ports)
    for _ in range(MAC_ATTEMPTS):
        if conn.execute(stmt, row).rowcount == 1:
            return
        if conn.execute(select(c.ports.c.id).where(c.ports.c.id == row["id"])).first() is not None:
            raise PortExists(f"Port {row['id']} already exists.")
        if mac_requested:
            raise MacAddressInUse(f"Unable to complete operation for network {row['network_id']}. "
                                  f"The mac address {row['mac_address']} is in use.")
        row["mac_address"] = random_mac()
    raise MacAddressGenerationFailure(f"Unable to generate unique mac on network {row['network_id']}.")


def _allocate(conn: Connection, port_id: str, network_id: str, subnet: dict[str, Any], address: str | None,
              policy: limits.AddressPolicy = limits.NO_LIMITS, now: datetime | None = None) -> dict[str, str]:
    stmt = _insert_ignoring(conn, c.ip_allocations)
    params = {"subnet_id": subnet["id"], "port_id": port_id, "network_id": network_id}
    if address is None:
        holds = policy if now is not None and policy.hold_s > 0 and policy.is_public(network_id) else None
        address = _allocate_auto(conn, stmt, params, subnet, holds, now)
    elif conn.execute(stmt, {**params, "ip_address": address}).rowcount != 1:
        raise IpAddressAlreadyAllocated(f"IP address {address} already allocated in subnet {subnet['id']}")
    return {"subnet_id": subnet["id"], "ip_address": address}


def _allocate_auto(conn: Connection, stmt: Insert, params: dict[str, str], subnet: dict[str, Any],
                   holds: limits.AddressPolicy | None = None, now: datetime | None = None) -> str:
    """The next free address of the subnet's pools, by the process's cursor; a few failed proposals in a
    row, or a cursor that knows of no free address, resync it from the database first. With `holds`, an
    address freed recently by another project is given back and skipped."""
    cursor = ipam.CURSORS.get(subnet)
    for attempt in range(MAX_RESYNCS + 1):
        address, ran_out = _probe(conn, stmt, params, cursor, holds, now)
        if address is not None:
            return address
        if ran_out and attempt > 0:
            break
        cursor.resync(_held(conn, subnet["id"], holds, now))
    raise IpAddressGenerationFailure(f"No more IP addresses available on network {params['network_id']}.")


def _probe(conn: Connection, stmt: Insert, params: dict[str, str], cursor: ipam.PoolCursor,
           holds: limits.AddressPolicy | None, now: datetime | None) -> tuple[str | None, bool]:
    """Try up to MAX_PROBES proposals: (the address won or None, whether the cursor ran out). With
    `holds`, one conditional INSERT also skips an address held for another project (no extra statement)."""
    extra: dict[str, Any] = {}
    if holds is not None and now is not None:
        stmt = _insert_unheld(conn)
        extra = {"h_project": holds.project_id, "h_cutoff": now - timedelta(seconds=holds.hold_s)}
    for _ in range(MAX_PROBES):
        value = cursor.propose()
        if value is None:
            return None, True
        address = cursor.ranges.text(value)
        if conn.execute(stmt, {**params, "ip_address": address, **extra}).rowcount == 1:
            return address, False
    return None, False


_UNHELD: dict[str, Insert] = {}


def _insert_unheld(conn: Connection) -> Insert:
    """An allocation INSERT that does nothing when the address is taken or held for another project."""
    stmt = _UNHELD.get(conn.dialect.name)
    if stmt is not None:
        return stmt
    h, a = c.ip_holds.c, c.ip_allocations
    cols = ("subnet_id", "ip_address", "port_id", "network_id")
    held = select(h.subnet_id).where(h.subnet_id == bindparam("subnet_id"), h.ip_address == bindparam("ip_address"),
                                     h.project_id != bindparam("h_project"), h.released_at > bindparam("h_cutoff"))
    values = select(*(cast(bindparam(n), String(64)).label(n) for n in cols)).where(~exists(held))
    base = _insert_ignoring(conn, a)
    stmt = base.from_select(list(cols), values).execution_options(preserve_rowcount=True)
    _UNHELD[conn.dialect.name] = stmt
    return stmt


def _held(conn: Connection, subnet_id: str, holds: limits.AddressPolicy | None = None,
          now: datetime | None = None) -> list[int]:
    """The subnet's taken addresses: allocated, or (with `holds`) held for another project."""
    a = c.ip_allocations.c
    taken = [int(ipaddress.ip_address(ip))
             for ip in conn.execute(select(a.ip_address).where(a.subnet_id == subnet_id)).scalars()]
    if holds is not None and now is not None:
        h = c.ip_holds.c
        stmt = select(h.ip_address).where(h.subnet_id == subnet_id, h.project_id != holds.project_id,
                                          h.released_at > now - timedelta(seconds=holds.hold_s))
        taken += [int(ipaddress.ip_address(ip)) for ip in conn.execute(stmt).scalars()]
    return taken


def _release(fixed_ips: list[dict[str, str]]) -> None:
    """Tell this process's cursors that addresses are free again (a hint; the database decides)."""
    for f in fixed_ips:
        cursor = ipam.CURSORS.peek(f["subnet_id"])
        if cursor is not None:
            cursor.release(int(ipaddress.ip_address(f["ip_address"])))


def _pairs_need_security() -> AddressPairAndPortSecurityRequired:
    return AddressPairAndPortSecurityRequired("Port Security must be enabled in order to have allowed address "
                                              "pairs on a port.")


def update_port(conn: Connection, port_id: str, changes: dict[str, Any], *, now: datetime,
                network: dict[str, Any] | None = None, subnets: list[dict[str, Any]] | None = None,
                policy: limits.AddressPolicy = limits.NO_LIMITS) -> dict[str, Any]:
    """Apply changes to a port: column values (name, description, admin_state_up, device_id, device_owner,
    host_id, port_security_enabled, allowed_address_pairs), `qos_policy_id`, and `fixed_ips`, the port's
    new complete list of addresses (which needs `network` and `subnets`); its new view."""
    found = rows_where(conn, c.ports.c.id == port_id)
    if not found:
        raise PortNotFound(f"Port {port_id} could not be found.")
    current, current_ips = found[0]
    values = {k: v for k, v in changes.items() if k not in ("fixed_ips", "qos_policy_id")}
    if "allowed_address_pairs" in values:
        values["allowed_address_pairs"] = address_pairs(values["allowed_address_pairs"], current["mac_address"])
    security = values.get("port_security_enabled", current["port_security_enabled"])
    if not security and values.get("allowed_address_pairs", current["allowed_address_pairs"]):
        raise _pairs_need_security()
    if "host_id" in values:
        values["status"] = "ACTIVE" if values["host_id"] else "DOWN"
    fixed_ips = current_ips
    if "fixed_ips" in changes:
        if network is None or subnets is None:
            raise ValueError("changing fixed_ips needs the port's network and subnets")
        owner = values.get("device_owner", current["device_owner"])
        fixed_ips = _replace_fixed_ips(conn, current, current_ips, network, subnets, changes["fixed_ips"], owner,
                                       policy, now)
    if values.get("host_id", current["host_id"]) != current["host_id"]:
        if values["host_id"]:
            current["ofport"] = bindings.bind(conn, port_id, values["host_id"], rebind=True)
        else:
            bindings.unbind(conn, port_id)
            current["ofport"] = None
    if "qos_policy_id" in changes:
        _set_port_qos(conn, port_id, changes["qos_policy_id"])
        current["qos_policy_id"] = changes["qos_policy_id"]
    conn.execute(update(c.ports).where(c.ports.c.id == port_id).values(**values, updated_at=now))
    return port_view({**current, **values, "updated_at": now}, sort_fixed_ips(fixed_ips))


def _set_port_qos(conn: Connection, port_id: str, policy_id: str | None) -> None:
    conn.execute(delete(c.port_qos).where(c.port_qos.c.port_id == port_id))
    if policy_id:
        conn.execute(c.port_qos.insert().values(port_id=port_id, policy_id=policy_id))


def _replace_fixed_ips(conn: Connection, current: dict[str, Any], current_ips: list[dict[str, str]],
                       network: dict[str, Any], subnets: list[dict[str, Any]], requested: object, device_owner: str,
                       policy: limits.AddressPolicy, now: datetime) -> list[dict[str, str]]:
    """Make the port's addresses match `requested`: addresses already held are kept, a bare subnet_id
    keeps one address the port has there, the rest are released or allocated."""
    if requested is None:
        raise invalid("fixed_ips", "None is not a list")
    plan = plan_fixed_ips(network, subnets, requested, device_owner)  # type: ignore[arg-type]
    held = list(current_ips)
    kept: list[dict[str, str]] = []
    wanted: Plan = []
    for specific in (True, False):  # exact addresses claim their match before bare subnet entries do
        for subnet, address in plan:
            if (address is not None) != specific:
                continue
            match = next((f for f in held if f["subnet_id"] == subnet["id"]
                          and (address is None or f["ip_address"] == address)), None)
            if match is not None:
                held.remove(match)
                kept.append(match)
            else:
                wanted.append((subnet, address))
    port_id = current["id"]
    if policy.is_public(network["id"]):
        limits.check_quota(conn, policy, 0, len(wanted) - len(held))
    if held:
        a = c.ip_allocations.c
        gone = or_(*(and_(a.subnet_id == f["subnet_id"], a.ip_address == f["ip_address"]) for f in held))
        conn.execute(delete(c.ip_allocations).where(a.port_id == port_id, gone))
        limits.hold_released(conn, policy, current["project_id"], network["id"], held, now)
    added = [_allocate(conn, port_id, network["id"], subnet, address, policy, now) for subnet, address in wanted]
    _release(held)
    return kept + added


def _delete_where(conn: Connection, clause: ColumnElement[bool], policy: limits.AddressPolicy = limits.NO_LIMITS,
                  now: datetime | None = None) -> list[dict[str, Any]]:
    views = views_where(conn, clause)
    if views:
        conn.execute(delete(c.ports).where(clause))  # allocations, bindings and QoS go with them (CASCADE)
        for view in views:
            if now is not None:
                limits.hold_released(conn, policy, view["project_id"], view["network_id"], view["fixed_ips"], now)
            _release(view["fixed_ips"])
    return views


def delete_port(conn: Connection, port_id: str, *, policy: limits.AddressPolicy = limits.NO_LIMITS,
                now: datetime | None = None) -> bool:
    """Delete a port and release its addresses (held for its project when `policy` says so); whether it
    existed."""
    return bool(_delete_where(conn, c.ports.c.id == port_id, policy, now))


def delete_ports_of_device(conn: Connection, device_id: str) -> list[str]:
    """Delete every port of a device (a server) with its addresses; the deleted port ids."""
    return [v["id"] for v in _delete_where(conn, c.ports.c.device_id == device_id)]


def remove_ports_of_device(conn: Connection, device_id: str, *, policy: limits.AddressPolicy = limits.NO_LIMITS,
                           now: datetime | None = None) -> list[dict[str, Any]]:
    """Delete every port of a device with its addresses (held as `policy` says); the deleted ports' views
    (with the host they were bound to, for the agents that must forget them)."""
    return _delete_where(conn, c.ports.c.device_id == device_id, policy, now)


def delete_ports_of_network(conn: Connection, network_id: str) -> list[str]:
    """Delete every port on a network with its addresses; the deleted port ids."""
    return [v["id"] for v in remove_ports_of_network(conn, network_id)]


def remove_ports_of_network(conn: Connection, network_id: str) -> list[dict[str, Any]]:
    """Delete every port on a network with its addresses; the deleted ports' views."""
    return _delete_where(conn, c.ports.c.network_id == network_id)
