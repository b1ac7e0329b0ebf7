"""QoS policies and their bandwidth_limit rules (global tables), as Neutron's QoS API shapes them. A
policy attached to a port (cell: port_qos) or to a network (network_qos, for its ports without one of
their own) becomes OpenFlow meters on the port's host."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from canopy.clock import isotime
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network.errors import Conflict, NotFound, invalid

DIRECTIONS = ("egress", "ingress")
MAX_KBPS = 2**31 - 1


class QosPolicyNotFound(NotFound):
    """A QoS policy that does not exist or is not visible."""


class QosRuleNotFound(NotFound):
    """A QoS rule that does not exist."""


class QosPolicyInUse(Conflict):
    """A policy still attached to a port or a network."""


class QoSRulesConflict(Conflict):
    """A second bandwidth limit rule for the same direction."""


def policy_view(row: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The API's view of a policy."""
    return {"id": row["id"], "name": row["name"], "description": row["description"],
            "project_id": row["project_id"], "tenant_id": row["project_id"], "shared": row["shared"],
            "is_default": row["is_default"], "rules": [rule_view(r, typed=True) for r in rules], "tags": [],
            "created_at": isotime(row["created_at"]), "updated_at": isotime(row["updated_at"]),
            "revision_number": 1}


def rule_view(row: dict[str, Any], typed: bool = False) -> dict[str, Any]:
    """The API's view of a bandwidth limit rule (in a policy's list, with its type and policy)."""
    view = {"id": row["id"], "max_kbps": row["max_kbps"], "max_burst_kbps": row["max_burst_kbps"],
            "direction": row["direction"]}
    if typed:
        view.update(type="bandwidth_limit", qos_policy_id=row["policy_id"])
    return view


def can_use(row: dict[str, Any], project_id: str | None, is_admin: bool) -> bool:
    """Admins use any policy; a project its own and shared ones."""
    return is_admin or row["shared"] or row["project_id"] == project_id


def get_policy(conn: Connection, policy_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(g.qos_policies).where(g.qos_policies.c.id == policy_id)).mappings().first()
    return dict(row) if row else None


def rules_of(conn: Connection, policy_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """policy id -> its bandwidth limit rules."""
    out: dict[str, list[dict[str, Any]]] = {p: [] for p in policy_ids}
    if policy_ids:
        r = g.qos_bandwidth_limit_rules
        for row in conn.execute(select(r).where(r.c.policy_id.in_(policy_ids)).order_by(r.c.direction)).mappings():
            out[row["policy_id"]].append(dict(row))
    return out


def list_policies(conn: Connection, *, filters: dict[str, list[Any]], project_id: str | None, limit: int,
                  marker: str | None) -> list[dict[str, Any]]:
    """Policy rows a caller sees (admins: all; a project: its own and shared), ordered by id."""
    q = g.qos_policies
    stmt = select(q).order_by(q.c.id).limit(limit)
    for column, values in filters.items():
        stmt = stmt.where(q.c[column].in_(values))
    if project_id is not None:
        stmt = stmt.where((q.c.project_id == project_id) | q.c.shared.is_(True))
    if marker:
        stmt = stmt.where(q.c.id > marker)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def create_policy(conn: Connection, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    row = {"id": str(uuid.uuid4()), "name": "", "description": "", "shared": False, "is_default": False, **values,
           "created_at": now, "updated_at": now}
    conn.execute(g.qos_policies.insert().values(**row))
    return row


def update_policy(conn: Connection, policy_id: str, changes: dict[str, Any], now: datetime) -> None:
    conn.execute(update(g.qos_policies).where(g.qos_policies.c.id == policy_id).values(**changes, updated_at=now))


def networks_using(conn: Connection, policy_id: str) -> list[str]:
    """The networks a policy is attached to."""
    nq = g.network_qos.c
    return list(conn.execute(select(nq.network_id).where(nq.policy_id == policy_id)).scalars())


def ports_using(cell: Connection, policy_id: str) -> list[tuple[str, str]]:
    """(port id, network id) of the ports a policy is attached to (cell database)."""
    pq, p = c.port_qos.c, c.ports.c
    stmt = select(pq.port_id, p.network_id).join_from(c.port_qos, c.ports, p.id == pq.port_id)
    return [(a, b) for a, b in cell.execute(stmt.where(pq.policy_id == policy_id))]


def delete_policy(conn: Connection, policy_id: str) -> None:
    """Delete a policy (the caller checked no port uses it); 409 while a network does."""
    if networks_using(conn, policy_id):
        raise QosPolicyInUse(f"QoS Policy {policy_id} is used by network {networks_using(conn, policy_id)[0]}.")
    conn.execute(delete(g.qos_policies).where(g.qos_policies.c.id == policy_id))


def rule_values(body: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    """max_kbps, max_burst_kbps and direction of a rule, validated."""
    values: dict[str, Any] = {}
    for key, required in (("max_kbps", not partial), ("max_burst_kbps", False)):
        if key not in body:
            if required:
                raise invalid(key, "a bandwidth limit rule needs max_kbps")
            continue
        v = body[key]
        if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v <= MAX_KBPS) or (key == "max_kbps" and v < 1):
            raise invalid(key, f"'{v}' is not an integer in range {1 if key == 'max_kbps' else 0} through {MAX_KBPS}")
        values[key] = v
    if "direction" in body:
        if body["direction"] not in DIRECTIONS:
            raise invalid("direction", f"'{body['direction']}' is not in {list(DIRECTIONS)}")
        values["direction"] = body["direction"]
    elif not partial:
        values["direction"] = "egress"
    return values


def add_rule(conn: Connection, policy_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """A new bandwidth limit rule; one per direction."""
    r = g.qos_bandwidth_limit_rules.c
    if conn.execute(select(r.id).where(r.policy_id == policy_id, r.direction == values["direction"])).first():
        raise QoSRulesConflict(f"Rule bandwidth_limit with direction {values['direction']} already exists in "
                               f"QoS policy {policy_id}.")
    row = {"id": str(uuid.uuid4()), "policy_id": policy_id, "max_burst_kbps": 0, **values}
    conn.execute(g.qos_bandwidth_limit_rules.insert().values(**row))
    return row


def get_rule(conn: Connection, policy_id: str, rule_id: str) -> dict[str, Any]:
    r = g.qos_bandwidth_limit_rules
    row = conn.execute(select(r).where(r.c.id == rule_id, r.c.policy_id == policy_id)).mappings().first()
    if row is None:
        raise QosRuleNotFound(f"QoS rule {rule_id} for policy {policy_id} could not be found.")
    return dict(row)


def update_rule(conn: Connection, policy_id: str, rule_id: str, values: dict[str, Any]) -> dict[str, Any]:
    row = get_rule(conn, policy_id, rule_id)
    if "direction" in values and values["direction"] != row["direction"]:
        r = g.qos_bandwidth_limit_rules.c
        if conn.execute(select(r.id).where(r.policy_id == policy_id, r.direction == values["direction"])).first():
            raise QoSRulesConflict(f"Rule bandwidth_limit with direction {values['direction']} already exists in "
                                   f"QoS policy {policy_id}.")
    conn.execute(update(g.qos_bandwidth_limit_rules).where(g.qos_bandwidth_limit_rules.c.id == rule_id)
                 .values(**values))
    return {**row, **values}


def delete_rule(conn: Connection, policy_id: str, rule_id: str) -> None:
    get_rule(conn, policy_id, rule_id)
    conn.execute(delete(g.qos_bandwidth_limit_rules).where(g.qos_bandwidth_limit_rules.c.id == rule_id))


def network_policy(conn: Connection, network_ids: list[str]) -> dict[str, str]:
    """network id -> its QoS policy id (for those that have one)."""
    if not network_ids:
        return {}
    nq = g.network_qos.c
    return {n: p for n, p in conn.execute(select(nq.network_id, nq.policy_id).where(nq.network_id.in_(network_ids)))}


def set_network_policy(conn: Connection, network_id: str, policy_id: str | None) -> None:
    conn.execute(delete(g.network_qos).where(g.network_qos.c.network_id == network_id))
    if policy_id:
        conn.execute(g.network_qos.insert().values(network_id=network_id, policy_id=policy_id))
