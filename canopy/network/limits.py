"""What limits a project's ports and addresses: per-project quotas on ports and on public addresses
(addresses on external networks, the scarce resource), and the hold time before a freed public address
goes to another project (hosting addresses carry reputation, and neighbours' ARP caches go stale).

The limits are read from the global database (`load_policy`) and applied inside the cell transaction
that creates or changes the port (`check_quota`, `hold_released`, `held_by_other`). Counting happens
under a per-project row lock, so two creations of one project cannot both slip under the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network.errors import NetworkError

UNLIMITED = -1
RESOURCES = ("port", "public_ip", "security_group", "security_group_rule")


class OverQuota(NetworkError):
    """A project at its limit of ports or public addresses."""

    status = 409


@dataclass(frozen=True)
class AddressPolicy:
    """The limits that apply to one project's port changes (-1: no limit; hold 0: no hold)."""

    project_id: str = ""
    port_limit: int = UNLIMITED
    public_ip_limit: int = UNLIMITED
    public_networks: frozenset[str] = frozenset()
    hold_s: float = 0.0

    @property
    def limited(self) -> bool:
        return self.port_limit >= 0 or self.public_ip_limit >= 0

    def is_public(self, network_id: str) -> bool:
        return network_id in self.public_networks


NO_LIMITS = AddressPolicy()


def quota_of(conn: Connection, project_id: str, defaults: dict[str, int]) -> dict[str, int]:
    """A project's limits: {"port": n, "public_ip": n}, the defaults where none is set (-1: unlimited)."""
    row = conn.execute(select(g.network_quotas).where(g.network_quotas.c.project_id == project_id)).mappings().first()
    return {r: (row[r] if row is not None and row[r] is not None else defaults.get(r, UNLIMITED)) for r in RESOURCES}


def load_policy(conn: Connection, project_id: str, defaults: dict[str, int], hold_s: float) -> AddressPolicy:
    """The policy of a project (global database): its quotas, which networks are public, the hold time."""
    limits = quota_of(conn, project_id, defaults)
    public = frozenset(conn.execute(select(g.networks.c.id).where(g.networks.c.external.is_(True))).scalars())
    return AddressPolicy(project_id, limits["port"], limits["public_ip"], public, hold_s)


def set_quota(conn: Connection, project_id: str, values: dict[str, int | None]) -> None:
    """Set (or with None, reset to the default) some of a project's limits."""
    q = g.network_quotas
    exists = conn.execute(select(q.c.project_id).where(q.c.project_id == project_id)).first()
    if exists:
        conn.execute(q.update().where(q.c.project_id == project_id).values(**values))
    else:
        conn.execute(q.insert().values(project_id=project_id, **{**dict.fromkeys(RESOURCES), **values}))


def reset_quota(conn: Connection, project_id: str) -> None:
    """Every limit of the project back to the default."""
    conn.execute(delete(g.network_quotas).where(g.network_quotas.c.project_id == project_id))


def usage(conn: Connection, project_id: str, public_networks: frozenset[str]) -> dict[str, int]:
    """How many ports and public addresses a project holds (cell database)."""
    p, a = c.ports.c, c.ip_allocations.c
    ports = conn.execute(select(func.count()).select_from(c.ports).where(p.project_id == project_id)).scalar_one()
    public = 0
    if public_networks:
        stmt = (select(func.count()).select_from(c.ip_allocations.join(c.ports, a.port_id == p.id))
                .where(p.project_id == project_id, a.network_id.in_(sorted(public_networks))))
        public = conn.execute(stmt).scalar_one()
    return {"port": int(ports), "public_ip": int(public)}


def check_quota(conn: Connection, policy: AddressPolicy, new_ports: int, new_public_ips: int) -> None:
    """Refuse (409 OverQuota) when `new_ports` more ports or `new_public_ips` more public addresses would
    take the project past its limits. Call it before the change, in the same transaction."""
    if not policy.limited or (new_ports <= 0 and new_public_ips <= 0):
        return
    _lock_project(conn, policy.project_id)
    used = usage(conn, policy.project_id, policy.public_networks)
    over = [name for name, limit, extra in (("port", policy.port_limit, new_ports),
                                            ("public_ip", policy.public_ip_limit, new_public_ips))
            if limit >= 0 and extra > 0 and used[name] + extra > limit]
    if over:
        raise OverQuota(f"Quota exceeded for resources: {over}.")


def _lock_project(conn: Connection, project_id: str) -> None:
    from canopy.network.bindings import take_lock

    take_lock(conn, f"project:{project_id}")


def hold_released(conn: Connection, policy: AddressPolicy, project_id: str, network_id: str,
                  fixed_ips: list[dict[str, Any]], now: datetime) -> None:
    """Record freed public addresses as held for their project (when a hold time is configured)."""
    if policy.hold_s <= 0 or not fixed_ips or not policy.is_public(network_id):
        return
    h = c.ip_holds
    keys = or_(*(and_(h.c.subnet_id == f["subnet_id"], h.c.ip_address == f["ip_address"]) for f in fixed_ips))
    conn.execute(delete(h).where(keys))
    conn.execute(h.insert(), [{"subnet_id": f["subnet_id"], "ip_address": f["ip_address"], "project_id": project_id,
                               "released_at": now} for f in fixed_ips])


def held_by_other(conn: Connection, policy: AddressPolicy, subnet_id: str, address: str, now: datetime) -> bool:
    """Whether a freed address is still held for another project than the policy's."""
    h = c.ip_holds.c
    stmt = select(h.project_id).where(h.subnet_id == subnet_id, h.ip_address == address,
                                      h.released_at > now - timedelta(seconds=policy.hold_s))
    holder = conn.execute(stmt).scalar()
    return holder is not None and holder != policy.project_id


def purge_holds(conn: Connection, older_than: datetime, limit: int = 1000) -> int:
    """Forget expired holds (bounded per call); how many were removed."""
    h = c.ip_holds
    old = select(h.c.subnet_id, h.c.ip_address).where(h.c.released_at < older_than).limit(limit)
    rows = conn.execute(old).all()
    if rows:
        conn.execute(delete(h).where(or_(*(and_(h.c.subnet_id == s, h.c.ip_address == ip) for s, ip in rows))))
    return len(rows)


def drop_holds(conn: Connection, subnet_ids: list[str]) -> int:
    """Forget every hold on the given subnets (their network is being deleted); how many were removed."""
    if not subnet_ids:
        return 0
    return int(conn.execute(delete(c.ip_holds).where(c.ip_holds.c.subnet_id.in_(subnet_ids))).rowcount)
