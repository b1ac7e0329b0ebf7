"""Networks (global tables): rows, views, queries, and the provider segment rules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import LABEL_STYLE_TABLENAME_PLUS_COL, Connection, delete, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from canopy.clock import isotime
from canopy.db import tables_global as g
from canopy.network.errors import FlatNetworkInUse, TunnelIdInUse

VXLAN_MAX = 16777215
_SUBNET_ORDER = (g.subnets.c.created_at, g.subnets.c.id)


def load_network(conn: Connection, network_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A network row and its subnet rows (oldest first), in one query; None when it does not exist."""
    n, s = g.networks, g.subnets
    stmt = (select(n, s).select_from(n.outerjoin(s, s.c.network_id == n.c.id))
            .where(n.c.id == network_id).order_by(*_SUBNET_ORDER)
            .set_label_style(LABEL_STYLE_TABLENAME_PLUS_COL))  # keys "networks_id", "subnets_id"
    rows = conn.execute(stmt).mappings().all()
    if not rows:
        return None
    network = {c.name: rows[0][f"networks_{c.name}"] for c in n.columns}
    subnets = [{c.name: r[f"subnets_{c.name}"] for c in s.columns} for r in rows if r["subnets_id"] is not None]
    return network, subnets


def _with_qos() -> Any:
    """Network rows with their QoS policy id (`qos_policy_id`), in the same statement."""
    nq = g.network_qos
    return select(g.networks, nq.c.policy_id.label("qos_policy_id")).select_from(
        g.networks.outerjoin(nq, nq.c.network_id == g.networks.c.id))


def get_network(conn: Connection, network_id: str) -> dict[str, Any] | None:
    """One network row (with its qos_policy_id)."""
    row = conn.execute(_with_qos().where(g.networks.c.id == network_id)).mappings().first()
    return dict(row) if row else None


def visible_clause(project_id: str | None) -> ColumnElement[bool] | None:
    """Which networks a project sees: its own, shared and external ones (None: everything, for admins)."""
    if project_id is None:
        return None
    n = g.networks.c
    return or_(n.project_id == project_id, n.shared.is_(True), n.external.is_(True))


def list_networks(conn: Connection, *, filters: dict[str, list[Any]], project_id: str | None,
                  limit: int, marker: str | None) -> list[dict[str, Any]]:
    """Network rows matching column filters (any of the values), ordered by id, after `marker`."""
    stmt = _with_qos().order_by(g.networks.c.id).limit(limit)
    for column, values in filters.items():
        stmt = stmt.where(g.networks.c[column].in_(values))
    visible = visible_clause(project_id)
    if visible is not None:
        stmt = stmt.where(visible)
    if marker:
        stmt = stmt.where(g.networks.c.id > marker)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def subnet_ids_of(conn: Connection, network_ids: list[str]) -> dict[str, list[str]]:
    """network id -> its subnet ids (oldest first), for many networks in one query."""
    out: dict[str, list[str]] = {nid: [] for nid in network_ids}
    if not network_ids:
        return out
    stmt = (select(g.subnets.c.network_id, g.subnets.c.id).where(g.subnets.c.network_id.in_(network_ids))
            .order_by(*_SUBNET_ORDER))
    for network_id, subnet_id in conn.execute(stmt):
        out[network_id].append(subnet_id)
    return out


def network_view(row: dict[str, Any], subnet_ids: list[str], *, admin: bool) -> dict[str, Any]:
    """The API's view of a network; provider attributes are shown to admins only, as Neutron does."""
    view: dict[str, Any] = {
        "id": row["id"], "name": row["name"], "project_id": row["project_id"], "tenant_id": row["project_id"],
        "description": row["description"], "status": row["status"], "admin_state_up": row["admin_state_up"],
        "shared": row["shared"], "router:external": row["external"], "mtu": row["mtu"], "subnets": subnet_ids,
        "port_security_enabled": True, "is_default": False, "availability_zones": [],
        "qos_policy_id": row.get("qos_policy_id"),
        "availability_zone_hints": [], "ipv4_address_scope": None, "ipv6_address_scope": None, "tags": [],
        "created_at": isotime(row["created_at"]), "updated_at": isotime(row["updated_at"]), "revision_number": 1,
    }
    if admin:
        view["provider:network_type"] = row["network_type"]
        view["provider:physical_network"] = row["physical_network"]
        view["provider:segmentation_id"] = row["segmentation_id"]
        view["canopy:arp_responder"] = bool(row.get("arp_responder", False))
    return view


def check_segment(conn: Connection, network_type: str, physical_network: str | None,
                  segmentation_id: int | None) -> None:
    """Refuse a flat network on a physical network that has one, or a VXLAN ID already in use."""
    n = g.networks.c
    if network_type == "flat":
        taken = conn.execute(select(n.id).where(n.network_type == "flat", n.physical_network == physical_network)
                             .limit(1)).first()
        if taken:
            raise FlatNetworkInUse(f"Unable to create the flat network. Physical network {physical_network} "
                                   "is in use.")
    elif segmentation_id is not None:
        taken = conn.execute(select(n.id).where(n.network_type == "vxlan", n.segmentation_id == segmentation_id)
                             .limit(1)).first()
        if taken:
            raise TunnelIdInUse(f"Unable to create the network. The tunnel ID {segmentation_id} is in use.")


def next_vni(conn: Connection) -> int:
    """A free VXLAN ID for a tenant network: one above the highest in use."""
    top = conn.execute(select(func.max(g.networks.c.segmentation_id))
                       .where(g.networks.c.network_type == "vxlan")).scalar()
    vni = (top or 0) + 1
    if vni > VXLAN_MAX:
        raise TunnelIdInUse("Unable to create the network. No tunnel ID is available.")
    return vni


def insert_network(conn: Connection, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Create a network from column values (segment checked; a VXLAN ID chosen when none is given)."""
    row = {"id": str(uuid.uuid4()), "name": "", "description": "", "status": "ACTIVE", "admin_state_up": True,
           "shared": False, "external": False, "mtu": 1500, "network_type": "vxlan", "physical_network": None,
           "segmentation_id": None, "arp_responder": False, **values, "created_at": now, "updated_at": now}
    check_segment(conn, row["network_type"], row["physical_network"], row["segmentation_id"])
    if row["network_type"] == "vxlan" and row["segmentation_id"] is None:
        row["segmentation_id"] = next_vni(conn)
    conn.execute(g.networks.insert().values(**row))
    return row


def update_network(conn: Connection, network_id: str, changes: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """Apply column changes; the updated row, or None when the network is gone."""
    conn.execute(update(g.networks).where(g.networks.c.id == network_id).values(**changes, updated_at=now))
    return get_network(conn, network_id)


def delete_network(conn: Connection, network_id: str) -> bool:
    """Delete a network and its subnets (the caller has released its ports)."""
    conn.execute(delete(g.subnets).where(g.subnets.c.network_id == network_id))
    return conn.execute(delete(g.networks).where(g.networks.c.id == network_id)).rowcount > 0
