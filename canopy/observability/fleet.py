"""The fleet at a glance: hosts up/down/disabled per data center, services per binary, servers per
state, the hosts that are down with when they were last heard from, and the hosts that are up but
report failing health checks (agent/health.py), with how many hosts fail each check. A handful of
GROUP BY queries in one read, whatever the fleet's size; used by `/healthcheck/fleet` and `/metrics`.

A service is up when its last heartbeat is younger than `service_down_s` and it isn't forced down,
the same rule os-services and the scheduler apply. A down host's health is stale, so only up hosts
count as unhealthy.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, case, func, or_, select

from canopy.clock import isotime
from canopy.db import tables_cell as c

if TYPE_CHECKING:
    from canopy.runtime import Cloud

AGENT_BINARY = "canopy-agent"
DOWN_HOSTS_SHOWN = 50
UNHEALTHY_HOSTS_SHOWN = 50
h, s, i = c.hosts.c, c.services.c, c.instances.c


def _up(cutoff: dt.datetime) -> Any:
    return and_(s.forced_down.is_(False), s.last_seen_at.is_not(None), s.last_seen_at >= cutoff)


def _count_if(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def _agents() -> Any:
    return c.hosts.outerjoin(c.services, and_(s.host == h.name, s.binary == AGENT_BINARY))


def read_snapshot(conn: Connection, now: dt.datetime, down_s: float) -> dict[str, Any]:
    """Every count the fleet view shows, read in one transaction."""
    cutoff = now - dt.timedelta(seconds=down_s)
    up, disabled = _up(cutoff), or_(h.enabled.is_(False), s.disabled.is_(True))
    dcs = conn.execute(
        select(h.datacenter, func.count().label("hosts"), _count_if(up).label("up"),
               _count_if(disabled).label("disabled"), _count_if(s.forced_down.is_(True)).label("forced_down"))
        .select_from(_agents()).group_by(h.datacenter).order_by(h.datacenter)).mappings().all()
    services = conn.execute(
        select(s.binary, func.count().label("total"), _count_if(up).label("up"))
        .group_by(s.binary).order_by(s.binary)).mappings().all()
    instances = conn.execute(
        select(i.vm_state, i.task_state, func.count().label("count")).where(i.deleted.is_(False))
        .group_by(i.vm_state, i.task_state).order_by(i.vm_state, i.task_state)).mappings().all()
    down = conn.execute(
        select(h.name, h.datacenter, s.last_seen_at, s.forced_down, s.disabled, s.disabled_reason)
        .select_from(_agents()).where(~func.coalesce(up, False))
        .order_by(s.last_seen_at, h.name).limit(DOWN_HOSTS_SHOWN)).mappings().all()
    # NULL health is the common case (nothing failing): only the unhealthy hosts come back, all of them (counted)
    sick = conn.execute(
        select(h.name, h.datacenter, disabled.label("disabled"), s.health).select_from(_agents())
        .where(up, s.health.is_not(None)).order_by(h.name)).mappings().all()
    failing = Counter(check for r in sick for check in r["health"])
    return {
        "datacenters": [{"datacenter": r["datacenter"], "hosts": int(r["hosts"]), "up": int(r["up"]),
                         "down": int(r["hosts"]) - int(r["up"]), "disabled": int(r["disabled"]),
                         "forced_down": int(r["forced_down"])} for r in dcs],
        "services": [{"binary": r["binary"], "up": int(r["up"]), "down": int(r["total"]) - int(r["up"])}
                     for r in services],
        "instances": [{"vm_state": r["vm_state"], "task_state": r["task_state"], "count": int(r["count"])}
                      for r in instances],
        "down_hosts": [{"host": r["name"], "datacenter": r["datacenter"], "last_seen_at": isotime(r["last_seen_at"]),
                        "forced_down": bool(r["forced_down"]), "disabled": bool(r["disabled"]),
                        "disabled_reason": r["disabled_reason"]} for r in down],
        "unhealthy": len(sick),
        "failing_checks": dict(sorted(failing.items())),
        "unhealthy_hosts": [{"host": r["name"], "datacenter": r["datacenter"], "disabled": bool(r["disabled"]),
                             "checks": r["health"]} for r in sick[:UNHEALTHY_HOSTS_SHOWN]],
    }


def totals(datacenters: list[dict[str, Any]]) -> dict[str, int]:
    """The per-data-center counts summed over the fleet."""
    keys = ("hosts", "up", "down", "disabled", "forced_down")
    return {k: sum(dc[k] for dc in datacenters) for k in keys}


async def snapshot(cloud: Cloud) -> dict[str, Any]:
    """The fleet of this api's cell as the database sees it now."""
    now = cloud.clock.now()
    down_s = cloud.settings.scheduler.service_down_s
    data = await cloud.dbs.cell(cloud.cell_name).read(read_snapshot, now, down_s)
    unhealthy = data.pop("unhealthy")
    return {"cell": cloud.cell_name, "checked_at": isotime(now), "service_down_s": down_s,
            "totals": {**totals(data["datacenters"]), "unhealthy": unhealthy}, **data}
