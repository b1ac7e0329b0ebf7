"""Port views and reads (cell tables): the API's port shape, MAC addresses, address pairs, queries."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, literal, select, union_all
from sqlalchemy.sql.elements import ColumnElement

from canopy.clock import isotime
from canopy.db import tables_cell as c
from canopy.network.errors import invalid

ADMIN_ONLY = ("binding:host_id", "binding:profile", "binding:vif_details")
CHUNK = 500
_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$", re.IGNORECASE)
_rng = random.Random()


def random_mac() -> str:
    """A MAC address in OpenStack's fa:16:3e prefix."""
    v = _rng.getrandbits(24)
    return f"fa:16:3e:{v >> 16:02x}:{(v >> 8) & 255:02x}:{v & 255:02x}"


def normalize_mac(value: object, field: str = "mac_address") -> str:
    """A unicast MAC address as lower-case, colon-separated text."""
    if not isinstance(value, str) or not _MAC.match(value):
        raise invalid(field, f"'{value}' is not a valid MAC address")
    mac = value.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise invalid(field, f"'{value}' is a multicast MAC address")
    return mac


def address_pairs(value: object, port_mac: str) -> list[dict[str, str]]:
    """Allowed address pairs [{"ip_address": ip or cidr, "mac_address"}], the MAC defaulting to the port's."""
    if not isinstance(value, list):
        raise invalid("allowed_address_pairs", f"{value!r} is not a list")
    out: list[dict[str, str]] = []
    for pair in value:
        if not isinstance(pair, dict) or "ip_address" not in pair or set(pair) - {"ip_address", "mac_address"}:
            raise invalid("allowed_address_pairs", f"{pair!r} must be an object with 'ip_address' and an "
                                                   "optional 'mac_address'")
        ip = pair["ip_address"]
        try:
            net = ipaddress.ip_network(ip, strict=False) if isinstance(ip, str) else None
        except ValueError:
            net = None
        if net is None:
            raise invalid("allowed_address_pairs", f"'{ip}' is not a valid IP address or CIDR")
        text = str(net.network_address) if "/" not in ip else str(net)
        mac = normalize_mac(pair.get("mac_address", port_mac), "allowed_address_pairs")
        entry = {"ip_address": text, "mac_address": mac}
        if entry in out:
            raise invalid("allowed_address_pairs", f"duplicate address pair {entry}")
        out.append(entry)
    return out


def sort_fixed_ips(fixed_ips: list[dict[str, str]]) -> list[dict[str, str]]:
    """IPv4 first, then by address: a stable order whatever the order of allocation."""
    return sorted(fixed_ips, key=lambda f: (":" in f["ip_address"], int(ipaddress.ip_address(f["ip_address"]))))


def port_view(row: dict[str, Any], fixed_ips: list[dict[str, str]]) -> dict[str, Any]:
    """The API's view of a port (all attributes; `public_view` hides the admin-only ones)."""
    return {
        "id": row["id"], "name": row["name"], "network_id": row["network_id"], "project_id": row["project_id"],
        "tenant_id": row["project_id"], "mac_address": row["mac_address"], "fixed_ips": fixed_ips,
        "device_id": row["device_id"], "device_owner": row["device_owner"], "status": row["status"],
        "admin_state_up": row["admin_state_up"], "allowed_address_pairs": row["allowed_address_pairs"],
        "port_security_enabled": row["port_security_enabled"], "binding:host_id": row["host_id"],
        "binding:vif_type": "ovs", "binding:vnic_type": "normal", "binding:profile": {},
        "binding:vif_details": vif_details(row),
        "security_groups": list(row.get("security_groups") or []), "extra_dhcp_opts": [], "ip_allocation": "immediate",
        "qos_policy_id": row.get("qos_policy_id"), "qos_network_policy_id": row.get("qos_network_policy_id"),
        "description": row["description"], "tags": [], "created_at": isotime(row["created_at"]),
        "updated_at": isotime(row["updated_at"]), "revision_number": 1,
    }


def vif_details(row: dict[str, Any]) -> dict[str, Any]:
    """How the port is plugged on its host (admin only): its OpenFlow port on the integration bridge."""
    if row.get("ofport") is None:
        return {}
    return {"port_filter": True, "bridge_name": "br-int", "ofport": row["ofport"]}


def public_view(view: dict[str, Any]) -> dict[str, Any]:
    """A port view without the attributes only admins may see."""
    return {k: v for k, v in view.items() if k not in ADMIN_ONLY}


def chunks(items: list[str]) -> Iterator[list[str]]:
    """`items` in slices small enough for one IN list."""
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def rows_where(conn: Connection, clause: ColumnElement[bool]) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
    """Rows of the ports matching `clause` with their fixed IPs, in one query (oldest port first)."""
    p, a, q, b, s = c.ports, c.ip_allocations, c.port_qos, c.port_bindings, c.port_security_groups
    stmt = (select(p, a.c.subnet_id.label("alloc_subnet_id"), a.c.ip_address.label("alloc_ip"),
                   q.c.policy_id.label("qos_policy_id"), b.c.ofport.label("ofport"),
                   s.c.security_group_id.label("sg_id"))
            .select_from(p.outerjoin(a, a.c.port_id == p.c.id).outerjoin(q, q.c.port_id == p.c.id)
                         .outerjoin(b, b.c.port_id == p.c.id).outerjoin(s, s.c.port_id == p.c.id))
            .where(clause).order_by(p.c.created_at, p.c.id))
    rows: dict[str, tuple[dict[str, Any], list[dict[str, str]]]] = {}
    for r in conn.execute(stmt).mappings():
        entry = rows.get(r["id"])
        if entry is None:
            entry = rows[r["id"]] = ({**{col.name: r[col.name] for col in p.columns},
                                      "qos_policy_id": r["qos_policy_id"], "ofport": r["ofport"],
                                      "security_groups": []}, [])
        if r["alloc_ip"] is not None:
            ip = {"subnet_id": r["alloc_subnet_id"], "ip_address": r["alloc_ip"]}
            if ip not in entry[1]:  # a port in several groups: each address once
                entry[1].append(ip)
        if r["sg_id"] is not None and r["sg_id"] not in entry[0]["security_groups"]:
            entry[0]["security_groups"].append(r["sg_id"])
    return [({**row, "security_groups": sorted(row["security_groups"])}, sort_fixed_ips(ips))
            for row, ips in rows.values()]


def views_where(conn: Connection, clause: ColumnElement[bool]) -> list[dict[str, Any]]:
    """Views of the ports matching `clause`, with their fixed IPs, in one query (oldest port first)."""
    return [port_view(row, ips) for row, ips in rows_where(conn, clause)]


def get_port(conn: Connection, port_id: str) -> dict[str, Any] | None:
    """One port's view."""
    views = views_where(conn, c.ports.c.id == port_id)
    return views[0] if views else None


def ports_of_devices(conn: Connection, device_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """device_id -> views of its ports (oldest first), for many devices in one query per 500 devices."""
    out: dict[str, list[dict[str, Any]]] = {d: [] for d in device_ids}
    for part in chunks(list(out)):
        for view in views_where(conn, c.ports.c.device_id.in_(part)):
            out[view["device_id"]].append(view)
    return out


def list_ports(conn: Connection, *, filters: dict[str, list[Any]], ip_filters: list[tuple[str, str]],
               project_id: str | None, limit: int, marker: str | None) -> list[dict[str, Any]]:
    """Port views matching column filters (any of the values) and fixed-IP filters (all of them),
    ordered by id after `marker`; with `project_id`, only that project's ports."""
    p, a, q, b = c.ports, c.ip_allocations, c.port_qos, c.port_bindings
    stmt = (select(p, q.c.policy_id.label("qos_policy_id"), b.c.ofport.label("ofport"))
            .select_from(p.outerjoin(q, q.c.port_id == p.c.id).outerjoin(b, b.c.port_id == p.c.id))
            .order_by(p.c.id).limit(limit))
    for column, values in filters.items():
        stmt = stmt.where(p.c[column].in_(values))
    for key, value in ip_filters:
        if key == "ip_address_substr":  # Neutron's substring match on the address text
            match = a.c.ip_address.contains(value, autoescape=True)
        else:
            match = a.c[key] == value
        stmt = stmt.where(p.c.id.in_(select(a.c.port_id).where(match)))
    if project_id is not None:
        stmt = stmt.where(p.c.project_id == project_id)
    if marker:
        stmt = stmt.where(p.c.id > marker)
    rows = [{**r, "security_groups": []} for r in conn.execute(stmt).mappings()]
    by_id = {r["id"]: r for r in rows}
    ips: dict[str, list[dict[str, str]]] = {r["id"]: [] for r in rows}
    s = c.port_security_groups.c
    for part in chunks(list(ips)):
        # addresses and groups in one statement (a group comes as a row without subnet)
        both = union_all(select(a.c.port_id, a.c.subnet_id, a.c.ip_address).where(a.c.port_id.in_(part)),
                         select(s.port_id, literal(None), s.security_group_id).where(s.port_id.in_(part)))
        for port_id, subnet_id, value in conn.execute(both):
            if subnet_id is None:
                by_id[port_id]["security_groups"].append(value)
            else:
                ips[port_id].append({"subnet_id": subnet_id, "ip_address": value})
    return [port_view({**r, "security_groups": sorted(r["security_groups"])}, sort_fixed_ips(ips[r["id"]]))
            for r in rows]


def network_has_server_ports(conn: Connection, network_id: str) -> bool:
    """Whether a server (device_owner compute:*) still has a port on the network."""
    p = c.ports.c
    stmt = select(p.id).where(p.network_id == network_id, p.device_owner.like("compute:%")).limit(1)
    return conn.execute(stmt).first() is not None


def subnet_in_use(conn: Connection, subnet_id: str) -> bool:
    """Whether any port holds an address of the subnet."""
    a = c.ip_allocations.c
    return conn.execute(select(a.port_id).where(a.subnet_id == subnet_id).limit(1)).first() is not None


def holder_of(conn: Connection, subnet_id: str, ip_address: str) -> str | None:
    """The port holding an address of a subnet, if any."""
    a = c.ip_allocations.c
    stmt = select(a.port_id).where(a.subnet_id == subnet_id, a.ip_address == ip_address)
    return conn.execute(stmt).scalar()
