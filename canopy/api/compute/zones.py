"""Compute API: os-availability-zone. The zones are the hosts' availability zones; a zone is available
while at least one of its hosts is enabled. The detail view (admin) adds each zone's services."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, case, func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute.common import cell_db
from canopy.api.compute.os_services import AGENT_BINARY, INTERNAL_ZONE, is_up, liveness, services_with_zone
from canopy.api.http import json_response, route
from canopy.clock import isotime
from canopy.db import tables_cell as c

h = c.hosts.c
DEFAULT_ZONE = "nova"


def _zones(conn: Connection) -> dict[str, bool]:
    """Each zone and whether any of its hosts is enabled."""
    q = (select(h.availability_zone, func.max(case((h.enabled.is_(True), 1), else_=0)).label("up"))
         .group_by(h.availability_zone).order_by(h.availability_zone))
    return {row.availability_zone: bool(row.up) for row in conn.execute(q)} or {DEFAULT_ZONE: True}


def _zone_and_services(conn: Connection) -> tuple[dict[str, bool], list[dict[str, Any]]]:
    return _zones(conn), [dict(r) for r in conn.execute(services_with_zone().order_by(c.services.c.id)).mappings()]


def _entry(zone: str, available: bool, hosts: dict[str, Any] | None) -> dict[str, Any]:
    return {"zoneName": zone, "zoneState": {"available": available}, "hosts": hosts}


def _ordered(zones: dict[str, bool]) -> list[tuple[str, bool]]:
    """Available zones first, then the unavailable ones, as Nova lists them."""
    return sorted(zones.items(), key=lambda kv: (not kv[1], kv[0]))


async def list_zones(request: Request) -> Response:
    """GET /os-availability-zone."""
    zones = await cell_db(request).read(_zones)
    return json_response({"availabilityZoneInfo": [_entry(z, up, None) for z, up in _ordered(zones)]})


def zone_hosts(request: Request, services: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{zone: {host: {binary: {available, active, updated_at}}}} from service rows."""
    now, down_s = liveness(request)
    out: dict[str, dict[str, Any]] = {}
    for row in services:
        zone = (row["availability_zone"] or DEFAULT_ZONE) if row["binary"] == AGENT_BINARY else INTERNAL_ZONE
        out.setdefault(zone, {}).setdefault(row["host"], {})[row["binary"]] = {
            "available": is_up(row, now, down_s), "active": not row["disabled"],
            "updated_at": isotime(row["last_seen_at"] or row["updated_at"])}
    return out


async def list_zones_detail(request: Request) -> Response:
    """GET /os-availability-zone/detail (admin): each zone with its hosts and their services."""
    zones, services = await cell_db(request).read(_zone_and_services)
    hosts = zone_hosts(request, services)
    info = []
    if INTERNAL_ZONE in hosts:
        info.append(_entry(INTERNAL_ZONE, True, hosts[INTERNAL_ZONE]))
    info += [_entry(z, up, hosts.get(z) if up else None) for z, up in _ordered(zones)]
    return json_response({"availabilityZoneInfo": info})


ROUTES: list[BaseRoute] = [
    route("/v2.1/os-availability-zone", list_zones, ["GET"], "compute:availability-zones"),
    route("/v2.1/os-availability-zone/detail", list_zones_detail, ["GET"], "compute:availability-zones:detail"),
]
