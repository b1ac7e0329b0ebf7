"""Compute API: `os-simple-tenant-usage`, what each project used over a period, in Nova's shape.

Usage is counted from when a server was launched (ACTIVE the first time) until it was terminated
(deleted), clipped to the period and to now; its flavor (vCPUs, RAM, root + ephemeral disk) times
those hours gives the totals a hosting business bills from. A server that never launched used
nothing. (Nova charges a running server up to the period's end even when that is in the future; a
bill should not hold hours not yet used, so Canopy stops at now.)

    GET /os-simple-tenant-usage?start=…&end=…[&detailed=1]     every project (admin)
    GET /os-simple-tenant-usage/{tenant_id}?start=…&end=…       one project (its members, or admin)

From 2.40 both page over servers with `limit` and `marker` (a server UUID) and give a `next` link.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, or_, select
from starlette.requests import Request
from starlette.responses import Response

from canopy import states
from canopy.api.compute.common import cell_db, cloud_of
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, json_response, page_params, route
from canopy.clock import parse_isotime
from canopy.db import tables_cell as c

i = c.instances.c
PAGED = (2, 40)


def hours_in(launched_at: dt.datetime | None, terminated_at: dt.datetime | None, start: dt.datetime,
             stop: dt.datetime, now: dt.datetime | None = None) -> float:
    """Hours a server ran within [start, stop]: from launch (or start) to termination (or stop, or now)."""
    if launched_at is None or launched_at > stop or (terminated_at is not None and terminated_at < start):
        return 0.0
    begin = max(launched_at, start)
    end = terminated_at if terminated_at is not None else (min(stop, now) if now is not None else stop)
    return max((min(end, stop) - begin).total_seconds(), 0.0) / 3600.0


def server_usage(row: dict[str, Any], start: dt.datetime, stop: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """One server's line in a usage report."""
    flavor = row["flavor"] or {}
    launched, terminated = row["launched_at"], row["terminated_at"]
    state = "terminated" if row["vm_state"] == states.DELETED else row["vm_state"]
    ran_until = terminated if state == "terminated" and terminated else now
    return {
        "instance_id": row["uuid"], "name": row["name"], "tenant_id": row["project_id"],
        "hours": hours_in(launched, terminated, start, stop, now), "vcpus": flavor.get("vcpus", 0),
        "memory_mb": flavor.get("ram", 0), "local_gb": flavor.get("disk", 0) + flavor.get("ephemeral", 0),
        "flavor": flavor.get("name"), "state": state,
        "started_at": launched.isoformat() if launched else None,
        "ended_at": terminated.isoformat() if terminated else None,
        "uptime": int((ran_until - launched).total_seconds()) if launched else 0,
    }


def summarize(tenant_id: str, servers: list[dict[str, Any]], start: dt.datetime, stop: dt.datetime,
              detailed: bool) -> dict[str, Any]:
    """A project's totals over the period (vCPU-hours, MB-hours, GB-hours, hours), with its servers if asked."""
    out: dict[str, Any] = {
        "tenant_id": tenant_id, "start": start.isoformat(), "stop": stop.isoformat(),
        "total_hours": sum(s["hours"] for s in servers),
        "total_vcpus_usage": sum(s["vcpus"] * s["hours"] for s in servers),
        "total_memory_mb_usage": sum(s["memory_mb"] * s["hours"] for s in servers),
        "total_local_gb_usage": sum(s["local_gb"] * s["hours"] for s in servers),
    }
    if detailed:
        out["server_usages"] = servers
    return out


def _period(request: Request, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """`start` and `end` from the query string (each defaults to now, as in Nova)."""
    args = request.query_params
    values = []
    for name in ("start", "end"):
        raw = args.get(name)
        if raw is None:
            values.append(now)
            continue
        try:
            values.append(parse_isotime(raw))
        except ValueError:
            raise bad_request(f"Invalid input for query parameters {name}. Value: {raw}. "
                              "Datetime is in invalid format") from None
    start, stop = values
    if start > stop or (start == stop and ("start" in args or "end" in args)):
        raise bad_request("Invalid start time. The start time cannot occur after the end time.")
    return start, stop


def _servers(conn: Connection, start: dt.datetime, stop: dt.datetime, project_id: str | None, limit: int,
             marker: str | None) -> list[dict[str, Any]]:
    """Servers that ran at some point of the period (deleted ones too), in creation order."""
    q = select(i.id, i.uuid, i.name, i.project_id, i.vm_state, i.flavor, i.launched_at, i.terminated_at).where(
        i.launched_at.is_not(None), i.launched_at < stop, or_(i.terminated_at.is_(None), i.terminated_at > start))
    if project_id is not None:
        q = q.where(i.project_id == project_id)
    if marker:
        marker_id = conn.execute(select(i.id).where(i.uuid == marker)).scalar()
        if marker_id is None:
            raise bad_request(f"marker [{marker}] not found")
        q = q.where(i.id > marker_id)
    return [dict(r) for r in conn.execute(q.order_by(i.id).limit(limit)).mappings()]


def _paging(request: Request) -> tuple[int, str | None]:
    max_page = cloud_of(request).settings.api.max_page_size
    if mv(request) >= PAGED:
        return page_params(request, max_page)
    return max_page, None  # before 2.40 there is no paging: a report stops at the configured page size


def _next_link(request: Request, rows: list[dict[str, Any]], limit: int, path: str) -> list[dict[str, str]]:
    if mv(request) < PAGED or not rows or len(rows) < limit:
        return []
    params = {**request.query_params, "limit": str(limit), "marker": rows[-1]["uuid"]}
    base = cloud_of(request).settings.api.public_url.rstrip("/") + "/compute/v2.1"
    return [{"rel": "next", "href": f"{base}/{path}?{urlencode(sorted(params.items()))}"}]


async def _report(request: Request, project_id: str | None) -> tuple[list[dict[str, Any]], dt.datetime,
                                                                     dt.datetime, int]:
    now = cloud_of(request).clock.now()
    start, stop = _period(request, now)
    limit, marker = _paging(request)
    rows = await cell_db(request).read(_servers, start, stop, project_id, limit, marker)
    for row in rows:
        row["usage"] = server_usage(row, start, stop, now)
    return rows, start, stop, limit


async def list_usage(request: Request) -> Response:
    """GET /os-simple-tenant-usage (admin): one summary per project that used anything."""
    detailed = request.query_params.get("detailed") == "1"
    rows, start, stop, limit = await _report(request, None)
    by_project: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_project.setdefault(row["project_id"], []).append(row["usage"])
    body: dict[str, Any] = {"tenant_usages": [summarize(p, servers, start, stop, detailed)
                                              for p, servers in by_project.items()]}
    links = _next_link(request, rows, limit, "os-simple-tenant-usage")
    if links:
        body["tenant_usages_links"] = links
    return json_response(body)


async def show_usage(request: Request) -> Response:
    """GET /os-simple-tenant-usage/{tenant_id}: one project's usage, with each server's line."""
    tenant_id, rc = request.path_params["tenant_id"], ctx(request)
    if not rc.is_admin and tenant_id != rc.project_id:
        raise ApiError(403, "Policy doesn't allow os_compute_api:os-simple-tenant-usage:show to be performed.")
    rows, start, stop, limit = await _report(request, tenant_id)
    usage = summarize(tenant_id, [r["usage"] for r in rows], start, stop, True) if rows else {}
    body: dict[str, Any] = {"tenant_usage": usage}
    links = _next_link(request, rows, limit, f"os-simple-tenant-usage/{tenant_id}")
    if links:
        body["tenant_usage_links"] = links
    return json_response(body)


ROUTES = [
    route("/v2.1/os-simple-tenant-usage", list_usage, ["GET"], "compute:usage:index"),
    route("/v2.1/os-simple-tenant-usage/{tenant_id}", show_usage, ["GET"], "compute:usage:show"),
]
