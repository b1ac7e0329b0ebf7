"""os-instance_usage_audit_log (admin): the state of Nova's periodic instance-usage audit over the last
complete audit period (a month, Nova's default). Canopy runs no such audit task (Nova's
`instance_usage_audit` is off by default too): every compute host is reported as not run, with no
instances and no errors, in Nova's exact shape, so monitoring that polls it reads a valid answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute.common import cell_db, cloud_of
from canopy.api.compute.os_services import AGENT_BINARY
from canopy.api.errors import bad_request
from canopy.api.http import json_response, require_admin, route
from canopy.db import tables_cell as c

MAX_HOSTS_LISTED = 10000
_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S")


def audit_period(before: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The last complete month before `before`: [its first day, the next month's first day)."""
    end = before.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    begin = (end - dt.timedelta(days=1)).replace(day=1)
    return begin, end


def parse_before(raw: str) -> dt.datetime:
    """Nova's before_timestamp: "YYYY-MM-DD HH:MM:SS[.ffffff]"."""
    for fmt in _FORMATS:
        try:
            return dt.datetime.strptime(raw, fmt)
        except ValueError:
            continue
    raise bad_request(f"Invalid timestamp for date {raw}")


def _agent_hosts(conn: Connection) -> list[str]:
    s = c.services.c
    return [r[0] for r in conn.execute(select(s.host).where(s.binary == AGENT_BINARY)
                                       .order_by(s.host).limit(MAX_HOSTS_LISTED))]


def render_audit(hosts: list[str], begin: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Nova's audit-log body when no host has run the audit for the period."""
    n = len(hosts)
    return {"hosts_not_run": hosts, "log": {}, "num_hosts": n, "num_hosts_done": 0, "num_hosts_not_run": n,
            "num_hosts_running": 0, "overall_status": f"0 of {n} hosts done. 0 errors.",
            "period_beginning": begin.strftime("%Y-%m-%d %H:%M:%S"),
            "period_ending": end.strftime("%Y-%m-%d %H:%M:%S"), "total_errors": 0, "total_instances": 0}


async def _body(request: Request, before: dt.datetime) -> dict[str, Any]:
    require_admin(request)
    hosts = await cell_db(request).read(_agent_hosts)
    return render_audit(hosts, *audit_period(before))


async def index(request: Request) -> Response:
    """GET /os-instance_usage_audit_log: the last complete period before now."""
    now = cloud_of(request).clock.now().replace(tzinfo=None)
    return json_response({"instance_usage_audit_logs": await _body(request, now)})


async def show(request: Request) -> Response:
    """GET /os-instance_usage_audit_log/{before_timestamp}."""
    require_admin(request)
    before = parse_before(request.path_params["before_timestamp"])
    return json_response({"instance_usage_audit_log": await _body(request, before)})


ROUTES: list[BaseRoute] = [
    route("/v2.1/os-instance_usage_audit_log", index, ["GET"], "compute:usage-audit-log:index"),
    route("/v2.1/os-instance_usage_audit_log/{before_timestamp}", show, ["GET"], "compute:usage-audit-log:show"),
]
