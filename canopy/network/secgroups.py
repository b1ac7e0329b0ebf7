"""Security groups and their rules (global tables), as Neutron's API shapes them, and which ports are in
them (cell: port_security_groups). A project gets a `default` group on first use, with Neutron's default
rules: egress anywhere, ingress from members of the same group, IPv4 and IPv6.

Each group has a `tag` and each rule a `mark`, random and unique: the flows of every host name a group by
its tag and a rule by its mark (the ct_mark of the connections it allowed), so they never change when
other groups or rules come and go.
"""

from __future__ import annotations

import ipaddress
import random
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from canopy.clock import isotime
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network.errors import BadRequest, Conflict, NotFound, invalid
from canopy.network.limits import OverQuota, quota_of

PROTOCOLS = {"ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2, "ipip": 4,
             "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60,
             "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17,
             "udplite": 136, "vrrp": 112}
PORT_PROTOCOLS = {6, 17, 33, 132, 136}
IPV6_ONLY = {"ipv6-encap", "ipv6-frag", "ipv6-icmp", "icmpv6", "ipv6-nonxt", "ipv6-opts", "ipv6-route"}
ETHERTYPES = {"IPv4": 4, "IPv6": 6}
DIRECTIONS = ("ingress", "egress")
DEFAULT = "default"
_NS = uuid.UUID("6c0e1d4e-4f5a-4c55-9d2b-5ec9709d1f15")  # the default group's id derives from its project
_rng = random.SystemRandom()


class SecurityGroupNotFound(NotFound):
    """A group that does not exist or that the caller may not see."""


class SecurityGroupRuleNotFound(NotFound):
    """A rule that does not exist or that the caller may not see."""


class SecurityGroupRuleExists(Conflict):
    """The same rule is already in the group."""


class SecurityGroupInUse(Conflict):
    """A group still used by a port."""


class SecurityGroupCannotRemoveDefault(Conflict):
    """Only admins remove a project's default group."""


class SecurityGroupCannotUpdateDefault(Conflict):
    """The default group keeps its name."""


class SecurityGroupDefaultAlreadyExists(Conflict):
    """A second group named default."""


class SecurityGroupRuleInvalidProtocol(BadRequest):
    """A protocol Neutron does not know."""


class SecurityGroupInvalidPortRange(BadRequest):
    """min > max, or half a range."""


class SecurityGroupInvalidPortValue(BadRequest):
    """Port 0, or out of range."""


class SecurityGroupProtocolRequiredWithPorts(BadRequest):
    """A port range without a protocol."""


class SecurityGroupInvalidIcmpValue(BadRequest):
    """An ICMP type or code out of 0..255."""


class SecurityGroupMissingIcmpType(BadRequest):
    """An ICMP code without a type."""


class SecurityGroupRuleParameterConflict(BadRequest):
    """A remote prefix of the other IP version."""


class SecurityGroupRemoteGroupAndRemoteIpPrefix(BadRequest):
    """Both a remote group and a remote prefix."""


class SecurityGroupEthertypeConflictWithProtocol(BadRequest):
    """An IPv6-only protocol in an IPv4 rule."""


# -- views -------------------------------------------------------------------------------------------


def group_view(row: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The API's view of a group."""
    return {"id": row["id"], "name": row["name"], "description": row["description"],
            "project_id": row["project_id"], "tenant_id": row["project_id"],
            "security_group_rules": [rule_view(r) for r in rules], "stateful": True, "shared": False, "tags": [],
            "created_at": isotime(row["created_at"]), "updated_at": isotime(row["updated_at"]),
            "revision_number": 1}


def rule_view(row: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a rule."""
    return {"id": row["id"], "security_group_id": row["security_group_id"], "direction": row["direction"],
            "ethertype": row["ethertype"], "protocol": row["protocol"], "port_range_min": row["port_range_min"],
            "port_range_max": row["port_range_max"], "remote_ip_prefix": row["remote_ip_prefix"],
            "normalized_cidr": row["remote_ip_prefix"], "remote_group_id": row["remote_group_id"],
            "remote_address_group_id": None, "description": row["description"], "project_id": row["project_id"],
            "tenant_id": row["project_id"], "created_at": isotime(row["created_at"]),
            "updated_at": isotime(row["updated_at"]), "revision_number": 0}


def protocol_number(protocol: str | None, ethertype: str) -> int | None:
    """The IP protocol number a rule matches (None: any); icmp in an IPv6 rule is ICMPv6."""
    if protocol is None:
        return None
    number = PROTOCOLS[protocol] if protocol in PROTOCOLS else int(protocol)
    return 58 if number == 1 and ethertype == "IPv6" else number


# -- rule values from a request ------------------------------------------------------------------------


def rule_values(body: dict[str, Any]) -> dict[str, Any]:
    """A rule's columns from a request body, checked as Neutron checks them (the group is checked by the
    caller)."""
    direction = body.get("direction")
    if direction not in DIRECTIONS:
        raise invalid("direction", f"{direction!r} is not in ['ingress', 'egress']")
    ethertype = body.get("ethertype", "IPv4")
    if ethertype not in ETHERTYPES:
        raise invalid("ethertype", f"{ethertype!r} is not in ['IPv4', 'IPv6']")
    protocol = _protocol(body.get("protocol"))
    if ethertype == "IPv4" and protocol in IPV6_ONLY:
        raise SecurityGroupEthertypeConflictWithProtocol(f"Invalid ethertype {ethertype} for protocol {protocol}.")
    lo, hi = _ports(protocol, body.get("port_range_min"), body.get("port_range_max"))
    prefix = _prefix(body.get("remote_ip_prefix"), ethertype)
    remote = body.get("remote_group_id")
    if remote is not None and prefix is not None:
        raise SecurityGroupRemoteGroupAndRemoteIpPrefix("Only remote_ip_prefix or remote_group_id may be provided.")
    if remote is not None and not isinstance(remote, str):
        raise invalid("remote_group_id", f"'{remote}' is not a valid UUID")
    if body.get("remote_address_group_id") is not None:
        raise invalid("remote_address_group_id", "address groups are not supported by this cloud")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 255:
        raise invalid("description", "must be a string of at most 255 characters")
    return {"direction": direction, "ethertype": ethertype, "protocol": protocol, "port_range_min": lo,
            "port_range_max": hi, "remote_ip_prefix": prefix, "remote_group_id": remote,
            "description": description}


def _protocol(value: object) -> str | None:
    if value is None or value == "any":
        return None
    text = str(value).lower() if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text is not None and (text in PROTOCOLS or (text.isdigit() and 0 <= int(text) <= 255)):
        return text
    raise SecurityGroupRuleInvalidProtocol(
        f"Security group rule protocol {value} not supported. Only protocol values "
        f"{[None, *sorted(PROTOCOLS)]} and integer representations [0 to 255] are supported.")


def _int(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
        raise invalid(field, f"'{value}' is not an integer")
    return int(value)


def _ports(protocol: str | None, raw_lo: object, raw_hi: object) -> tuple[int | None, int | None]:
    lo, hi = _int(raw_lo, "port_range_min"), _int(raw_hi, "port_range_max")
    if lo is None and hi is None:
        return None, None
    if protocol is None:
        raise SecurityGroupProtocolRequiredWithPorts("Must also specify protocol if port range is given.")
    number = protocol_number(protocol, "IPv4")
    if number in (1, 58):
        for value, attr in ((lo, "min"), (hi, "max")):
            if value is not None and not 0 <= value <= 255:
                field = "type" if attr == "min" else "code"
                raise SecurityGroupInvalidIcmpValue(
                    f"Invalid value for ICMP {field} (port-range-{attr}): {value}. It must be 0 to 255.")
        if lo is None:
            raise SecurityGroupMissingIcmpType(
                f"ICMP code (port-range-max) {hi} is provided but ICMP type (port-range-min) is missing.")
        return lo, hi
    if number not in PORT_PROTOCOLS:
        raise invalid("protocol", f"port ranges are only supported for tcp, udp, udplite, sctp and dccp, not "
                                  f"{protocol}")
    for value in (lo, hi):
        if value is not None and not 1 <= value <= 65535:
            raise SecurityGroupInvalidPortValue(f"Invalid value for port {value}.")
    if lo is None or hi is None or lo > hi:
        raise SecurityGroupInvalidPortRange("For TCP/UDP protocols, port_range_min must be <= port_range_max")
    return lo, hi


def _prefix(value: object, ethertype: str) -> str | None:
    if value is None:
        return None
    try:
        net = ipaddress.ip_network(value, strict=False) if isinstance(value, str) else None
    except ValueError:
        net = None
    if net is None:
        raise invalid("remote_ip_prefix", f"'{value}' is not a valid IP prefix")
    if net.version != ETHERTYPES[ethertype]:
        raise SecurityGroupRuleParameterConflict(f"Conflicting value ethertype {ethertype} for CIDR {value}")
    return str(net)


# -- reads ---------------------------------------------------------------------------------------------


def get_group(conn: Connection, group_id: str) -> dict[str, Any] | None:
    """A group's row."""
    row = conn.execute(select(g.security_groups).where(g.security_groups.c.id == group_id)).mappings().first()
    return dict(row) if row else None


def rules_of(conn: Connection, group_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """group id -> its rules (oldest first)."""
    ids = sorted(set(group_ids))
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        r = g.security_group_rules
        stmt = select(r).where(r.c.security_group_id.in_(ids)).order_by(r.c.created_at, r.c.id)
        for row in conn.execute(stmt).mappings():
            out[row["security_group_id"]].append(dict(row))
    return out


def list_groups(conn: Connection, *, filters: dict[str, list[Any]], project_id: str | None, limit: int,
                marker: str | None) -> list[dict[str, Any]]:
    """Group rows a caller sees (admins: all; a project: its own), ordered by id."""
    s = g.security_groups
    stmt = select(s).order_by(s.c.id).limit(limit)
    for column, values in filters.items():
        stmt = stmt.where(s.c[column].in_(values))
    if project_id is not None:
        stmt = stmt.where(s.c.project_id == project_id)
    if marker:
        stmt = stmt.where(s.c.id > marker)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def list_rules(conn: Connection, *, filters: dict[str, list[Any]], project_id: str | None, limit: int,
               marker: str | None) -> list[dict[str, Any]]:
    """Rule rows a caller sees (admins: all; a project: those of its groups), ordered by id."""
    r = g.security_group_rules
    stmt = select(r).order_by(r.c.id).limit(limit)
    for column, values in filters.items():
        stmt = stmt.where(r.c[column].in_(values))
    if project_id is not None:
        stmt = stmt.where(r.c.project_id == project_id)
    if marker:
        stmt = stmt.where(r.c.id > marker)
    return [dict(row) for row in conn.execute(stmt).mappings()]


def get_rule(conn: Connection, rule_id: str) -> dict[str, Any] | None:
    """A rule's row."""
    row = conn.execute(select(g.security_group_rules).where(g.security_group_rules.c.id == rule_id)).mappings().first()
    return dict(row) if row else None


# -- writes --------------------------------------------------------------------------------------------


def default_group_id(project_id: str) -> str:
    """The id of a project's default group: derived, so two first uses at once cannot make two."""
    return str(uuid.uuid5(_NS, project_id))


# (database, project) -> when the project's default group was last seen to exist (monotonic): a boot that
# asks for no group then costs no statement. Deleting a default group forgets it here; another API process
# learns it within DEFAULT_KNOWN_S (a boot in between binds its port to the deleted group: nothing allowed).
DEFAULT_KNOWN_S = 300.0
_DEFAULT_KNOWN: dict[tuple[str, str], float] = {}
_DEFAULT_KNOWN_MAX = 100_000


def default_known(scope: str, project_id: str) -> bool:
    """Whether this process saw the project's default group (in database `scope`) recently."""
    seen = _DEFAULT_KNOWN.get((scope, project_id))
    return seen is not None and time.monotonic() - seen < DEFAULT_KNOWN_S


def remember_default(scope: str, project_id: str) -> None:
    """The project's default group exists (it was just ensured)."""
    if len(_DEFAULT_KNOWN) >= _DEFAULT_KNOWN_MAX:
        _DEFAULT_KNOWN.clear()
    _DEFAULT_KNOWN[(scope, project_id)] = time.monotonic()


def forget_default(scope: str, project_id: str) -> None:
    """A default group was deleted: the next use makes it again."""
    _DEFAULT_KNOWN.pop((scope, project_id), None)


def ensure_default(conn: Connection, project_id: str, now: datetime) -> str:
    """The project's default group, created with Neutron's default rules on first use."""
    gid = default_group_id(project_id)
    if conn.execute(select(g.security_groups.c.id).where(g.security_groups.c.id == gid)).first() is not None:
        return gid
    try:
        # A savepoint: when many first requests of a project race (fifty parallel creates), one makes the
        # group and the others meet its primary key (the id derives from the project) and go on with it.
        with conn.begin_nested():
            _insert_group(conn, {"id": gid, "project_id": project_id, "name": DEFAULT,
                                 "description": "Default security group", "is_default": True}, now)
            for ethertype in ("IPv4", "IPv6"):
                base = {"ethertype": ethertype, "protocol": None, "port_range_min": None, "port_range_max": None,
                        "remote_ip_prefix": None, "description": ""}
                insert_rule(conn, {"id": gid, "project_id": project_id},
                            {**base, "direction": "egress", "remote_group_id": None}, now)
                insert_rule(conn, {"id": gid, "project_id": project_id},
                            {**base, "direction": "ingress", "remote_group_id": gid}, now)
    except IntegrityError:
        pass  # made by a request that raced this one: it exists now
    return gid


def _insert_group(conn: Connection, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    row = {"id": str(uuid.uuid4()), "name": "", "description": "", "is_default": False, **values,
           "tag": _rng.randrange(1, 2**31), "created_at": now, "updated_at": now}
    conn.execute(g.security_groups.insert().values(**row))
    return row


def create_group(conn: Connection, values: dict[str, Any], now: datetime, quotas: dict[str, int]) -> dict[str, Any]:
    """A new group, with the two egress rules Neutron gives every new group (quota `security_group`)."""
    project_id = values["project_id"]
    ensure_default(conn, project_id, now)
    if values.get("name") == DEFAULT:
        raise SecurityGroupDefaultAlreadyExists("Default security group already exists.")
    _check_quota(conn, g.security_groups, project_id, quotas, "security_group")
    row = _insert_group(conn, values, now)
    for ethertype in ("IPv4", "IPv6"):
        insert_rule(conn, row, {"direction": "egress", "ethertype": ethertype, "protocol": None,
                                "port_range_min": None, "port_range_max": None, "remote_ip_prefix": None,
                                "remote_group_id": None, "description": ""}, now)
    return row


def _check_quota(conn: Connection, table: Any, project_id: str, quotas: dict[str, int] | None, name: str) -> None:
    """409 OverQuota when the project holds its limit of `name` (its own limit, else the default)."""
    if quotas is None:
        return
    limit = quota_of(conn, project_id, quotas)[name]
    if limit < 0:
        return
    used = conn.execute(select(func.count()).select_from(table).where(table.c.project_id == project_id)).scalar_one()
    if used + 1 > limit:
        raise OverQuota(f"Quota exceeded for resources: ['{name}'].")


def update_group(conn: Connection, row: dict[str, Any], changes: dict[str, Any], now: datetime) -> None:
    """Rename or describe a group (the default group keeps its name)."""
    if row["is_default"] and "name" in changes and changes["name"] != DEFAULT:
        raise SecurityGroupCannotUpdateDefault("Updating default security group not allowed.")
    if not row["is_default"] and changes.get("name") == DEFAULT:
        raise SecurityGroupDefaultAlreadyExists("Default security group already exists.")
    s = g.security_groups
    conn.execute(update(s).where(s.c.id == row["id"]).values(**changes, updated_at=now))


def delete_group(conn: Connection, group_id: str) -> None:
    """Delete a group and its rules (the caller checked that no port uses it)."""
    conn.execute(delete(g.security_group_rules).where(g.security_group_rules.c.security_group_id == group_id))
    conn.execute(delete(g.security_groups).where(g.security_groups.c.id == group_id))


def referencing(conn: Connection, group_id: str) -> list[str]:
    """The other groups with a rule naming this one as its remote group."""
    r = g.security_group_rules.c
    stmt = select(r.security_group_id).where(r.remote_group_id == group_id, r.security_group_id != group_id)
    return sorted(set(conn.execute(stmt).scalars()))


def insert_rule(conn: Connection, group: dict[str, Any], values: dict[str, Any], now: datetime,
                quotas: dict[str, int] | None = None) -> dict[str, Any]:
    """Add a rule to a group: 409 SecurityGroupRuleExists for a duplicate (quota `security_group_rule`)."""
    same = _duplicate(conn, group["id"], values)
    if same is not None:
        raise SecurityGroupRuleExists(f"Security group rule already exists. Rule id is {same}.")
    _check_quota(conn, g.security_group_rules, group["project_id"], quotas, "security_group_rule")
    row = {"id": str(uuid.uuid4()), **values, "security_group_id": group["id"], "project_id": group["project_id"],
           "mark": _rng.randrange(1, 2**31), "created_at": now, "updated_at": now}
    conn.execute(g.security_group_rules.insert().values(**row))
    return row


def _duplicate(conn: Connection, group_id: str, values: dict[str, Any]) -> str | None:
    key = _rule_key(values)
    r = g.security_group_rules
    for row in conn.execute(select(r).where(r.c.security_group_id == group_id,
                                            r.c.direction == values["direction"])).mappings():
        if _rule_key(dict(row)) == key:
            return str(row["id"])
    return None


def _rule_key(v: dict[str, Any]) -> tuple[Any, ...]:
    return (v["direction"], v["ethertype"], protocol_number(v["protocol"], v["ethertype"]), v["port_range_min"],
            v["port_range_max"], v["remote_ip_prefix"], v["remote_group_id"])


def delete_rule(conn: Connection, rule_id: str) -> None:
    """Remove a rule."""
    conn.execute(delete(g.security_group_rules).where(g.security_group_rules.c.id == rule_id))


# -- ports (cell) ------------------------------------------------------------------------------------


def groups_of_ports(conn: Connection, port_ids: list[str]) -> dict[str, list[str]]:
    """port id -> its group ids (sorted)."""
    out: dict[str, list[str]] = {p: [] for p in port_ids}
    if port_ids:
        b = c.port_security_groups.c
        for port_id, group_id in conn.execute(select(b.port_id, b.security_group_id).where(b.port_id.in_(port_ids))
                                              .order_by(b.security_group_id)):
            out[port_id].append(group_id)
    return out


def set_port_groups(conn: Connection, port_id: str, group_ids: list[str]) -> None:
    """Replace a port's groups."""
    b = c.port_security_groups
    conn.execute(delete(b).where(b.c.port_id == port_id))
    for gid in sorted(set(group_ids)):
        conn.execute(b.insert().values(port_id=port_id, security_group_id=gid))


def ports_in(conn: Connection, group_ids: list[str]) -> list[tuple[str, str, str]]:
    """(port id, network id, host) of the ports in any of these groups."""
    b, p = c.port_security_groups.c, c.ports.c
    stmt = (select(p.id, p.network_id, p.host_id).join_from(c.port_security_groups, c.ports, p.id == b.port_id)
            .where(b.security_group_id.in_(group_ids)).distinct())
    return [tuple(r) for r in conn.execute(stmt)]


def group_in_use(conn: Connection, group_id: str) -> str | None:
    """A port in the group, if any."""
    b = c.port_security_groups.c
    return conn.execute(select(b.port_id).where(b.security_group_id == group_id).limit(1)).scalar()
