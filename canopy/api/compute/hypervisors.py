"""Compute API: os-hypervisors (admin). One hypervisor per cell `hosts` row; its state is the liveness of
the host's agent service, its status the host's `enabled` flag."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, and_, func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute.common import cell_db, cloud_of
from canopy.api.compute.flavors import collection_links
from canopy.api.compute.microversion import mv
from canopy.api.compute.os_services import AGENT_BINARY, is_up, liveness
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import bool_param, is_uuid, json_response, page_params, route
from canopy.db import tables_cell as c

h, s, i = c.hosts.c, c.services.c, c.instances.c
UUID_IDS = (2, 53)


def _hosts_query() -> Any:
    d = c.hypervisor_details.c
    joined = (c.hosts.outerjoin(c.services, and_(s.host == h.name, s.binary == AGENT_BINARY))
              .outerjoin(c.hypervisor_details, d.host == h.name))
    return select(c.hosts, s.id.label("svc_id"), s.uuid.label("svc_uuid"), s.last_seen_at, s.forced_down,
                  s.disabled_reason.label("svc_reason"), d.accelerator.label("hv_accelerator"),
                  d.cpu_info.label("hv_cpu_info")).select_from(joined)


def hypervisor_not_found(hypervisor_id: str) -> ApiError:
    return ApiError(404, f"Hypervisor with ID '{hypervisor_id}' could not be found.")


def no_match(pattern: str) -> ApiError:
    return ApiError(404, f"No hypervisor matching '{pattern}' could be found.")


def cpu_info(row: dict[str, Any]) -> dict[str, Any]:
    """The host CPU as its libvirt agent reported it, with the accelerator guests run with (kvm or tcg);
    for a simulated host, a description in the same shape (we know only the count)."""
    if row.get("hv_cpu_info"):
        return {**row["hv_cpu_info"], "accelerator": row.get("hv_accelerator") or ""}
    return {"arch": "x86_64", "model": "canopy-virtual", "vendor": "Canopy", "features": [],
            "topology": {"sockets": 1, "cores": row["vcpus"], "threads": 1}}


def usage(row: dict[str, Any]) -> dict[str, int]:
    """Capacity and use as Nova reports it (the host's reservations count as used)."""
    ram_used = row["memory_mb_used"] + row["reserved_memory_mb"]
    disk_used = row["local_gb_used"] + row["reserved_disk_gb"]
    return {"vcpus": row["vcpus"], "memory_mb": row["memory_mb"], "local_gb": row["local_gb"],
            "vcpus_used": row["vcpus_used"], "memory_mb_used": ram_used, "local_gb_used": disk_used,
            "free_ram_mb": row["memory_mb"] - ram_used, "free_disk_gb": row["local_gb"] - disk_used,
            "current_workload": 0, "running_vms": row["running_vms"],
            "disk_available_least": row["local_gb"] - disk_used}


def render(request: Request, row: dict[str, Any], detail: bool, servers: list[dict[str, str]] | None) -> dict[str, Any]:
    """A hypervisor at the request's microversion; `servers` when they were asked for."""
    version = mv(request)
    now, down_s = liveness(request)
    uuid_ids = version >= UUID_IDS
    out: dict[str, Any] = {"id": row["uuid"] if uuid_ids else row["id"], "hypervisor_hostname": row["name"],
                           "state": "up" if row["svc_id"] is not None and is_up(row, now, down_s) else "down",
                           "status": "enabled" if row["enabled"] else "disabled"}
    if detail:
        out.update(usage(row))
        out.update(hypervisor_type=row["hypervisor_type"], hypervisor_version=row["hypervisor_version"],
                   host_ip=row["host_ip"])
        out["service"] = {"id": row["svc_uuid"] if uuid_ids else row["svc_id"], "host": row["name"],
                          "disabled_reason": row["svc_reason"] or row["disabled_reason"]}
        info = cpu_info(row)
        out["cpu_info"] = info if version >= (2, 28) else json.dumps(info)
    if servers or (servers is not None and version >= (2, 75)):
        out["servers"] = servers
    return out


def _servers_on(conn: Connection, names: list[str]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {name: [] for name in names}
    if names:
        q = select(i.host, i.name, i.uuid).where(i.host.in_(names), i.deleted.is_(False)).order_by(i.id)
        for row in conn.execute(q):
            found[row.host].append({"name": row.name, "uuid": row.uuid})
    return found


def _list(conn: Connection, limit: int | None, marker: str | None, pattern: str | None,
          uuid_ids: bool, with_servers: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    q = _hosts_query().order_by(h.id)
    if pattern is not None:
        q = q.where(h.name.contains(pattern, autoescape=True))
    if marker is not None:
        key = h.uuid if uuid_ids else h.id
        marker_id = conn.execute(select(h.id).where(key == (marker if uuid_ids else _int_or(marker)))).scalar()
        if marker_id is None:
            raise bad_request(f"marker [{marker}] not found")
        q = q.where(h.id > marker_id)
    if limit is not None:
        q = q.limit(limit)
    rows = [dict(r) for r in conn.execute(q).mappings()]
    servers = _servers_on(conn, [r["name"] for r in rows]) if with_servers else {}
    return rows, servers


def _int_or(value: str) -> int:
    return int(value) if value.isdigit() else -1


def _query_options(request: Request) -> tuple[str | None, bool]:
    if mv(request) < UUID_IDS:
        return None, False
    args = request.query_params
    return args.get("hypervisor_hostname_pattern"), bool(bool_param(args.get("with_servers"), "with_servers"))


async def _listing(request: Request, detail: bool) -> Response:
    pattern, with_servers = _query_options(request)
    limit: int | None = None
    marker: str | None = None
    if pattern is not None:
        if "limit" in request.query_params or "marker" in request.query_params:
            raise bad_request("Paging over hypervisors with the hypervisor_hostname_pattern query parameter is "
                              "not supported.")
    elif mv(request) >= (2, 33):
        limit, marker = page_params(request, cloud_of(request).settings.api.max_page_size)
    uuid_ids = mv(request) >= UUID_IDS
    rows, servers = await cell_db(request).read(_list, limit, marker, pattern, uuid_ids, with_servers)
    if pattern is not None and not rows:
        raise no_match(pattern)
    items = [render(request, r, detail, servers.get(r["name"]) if with_servers else None) for r in rows]
    body: dict[str, Any] = {"hypervisors": items}
    if limit is not None:
        links = collection_links(request, len(items), limit, str(items[-1]["id"]) if items else None)
        if links:
            body["hypervisors_links"] = links
    return json_response(body)


async def list_hypervisors(request: Request) -> Response:
    """GET /os-hypervisors."""
    return await _listing(request, False)


async def list_hypervisors_detail(request: Request) -> Response:
    """GET /os-hypervisors/detail."""
    return await _listing(request, True)


def _one(conn: Connection, hypervisor_id: str, uuid_ids: bool, with_servers: bool) -> tuple[Any, Any]:
    key = h.uuid == hypervisor_id if uuid_ids else h.id == int(hypervisor_id)
    row = conn.execute(_hosts_query().where(key)).mappings().first()
    if row is None:
        return None, None
    servers = _servers_on(conn, [row["name"]])[row["name"]] if with_servers else None
    return dict(row), servers


async def _load_one(request: Request, with_servers: bool = False) -> tuple[dict[str, Any], Any]:
    hypervisor_id = request.path_params["hypervisor_id"]
    uuid_ids = mv(request) >= UUID_IDS
    if uuid_ids and not is_uuid(hypervisor_id):
        raise bad_request(f"Invalid uuid {hypervisor_id}")
    if not uuid_ids and not hypervisor_id.isdigit():
        raise hypervisor_not_found(hypervisor_id)
    row, servers = await cell_db(request).read(_one, hypervisor_id, uuid_ids, with_servers)
    if row is None:
        raise hypervisor_not_found(hypervisor_id)
    return row, servers


async def show_hypervisor(request: Request) -> Response:
    """GET /os-hypervisors/{id} (with_servers from 2.53)."""
    _, with_servers = _query_options(request)
    row, servers = await _load_one(request, with_servers)
    return json_response({"hypervisor": render(request, row, True, servers)})


async def hypervisor_uptime(request: Request) -> Response:
    """GET /os-hypervisors/{id}/uptime: how long the host has been known, in `uptime`'s words."""
    row, _ = await _load_one(request)
    now, down_s = liveness(request)
    if row["svc_id"] is None or not is_up(row, now, down_s):
        raise bad_request(f"Compute service of {row['name']} is unavailable at this time.")
    up = now - row["created_at"]
    hours, rest = divmod(up.seconds, 3600)
    text = (f" {now:%H:%M:%S} up {up.days} days, {hours:2d}:{rest // 60:02d},  0 users,  "
            f"load average: 0.00, 0.00, 0.00")
    return json_response({"hypervisor": {**render(request, row, False, None), "uptime": text}})


async def _by_pattern(request: Request, with_servers: bool) -> Response:
    if mv(request) >= UUID_IDS:
        raise ApiError(404, "The resource could not be found.")
    pattern = request.path_params["pattern"]
    rows, servers = await cell_db(request).read(_list, None, None, pattern, False, with_servers)
    if not rows:
        raise no_match(pattern)
    return json_response({"hypervisors": [render(request, r, False, servers.get(r["name"])) for r in rows]})


async def search_hypervisors(request: Request) -> Response:
    """GET /os-hypervisors/{pattern}/search (before 2.53)."""
    return await _by_pattern(request, False)


async def hypervisor_servers(request: Request) -> Response:
    """GET /os-hypervisors/{pattern}/servers (before 2.53)."""
    return await _by_pattern(request, True)


def _stats(conn: Connection) -> dict[str, int]:
    cols = ("vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used", "running_vms",
            "reserved_memory_mb", "reserved_disk_gb")
    q = select(func.count(h.id).label("count"), *[func.coalesce(func.sum(h[col]), 0).label(col) for col in cols])
    return {k: int(v) for k, v in conn.execute(q).mappings().one().items()}


async def statistics(request: Request) -> Response:
    """GET /os-hypervisors/statistics: sums over every hypervisor (until 2.88 removed it)."""
    totals = await cell_db(request).read(_stats)
    body = {"count": totals["count"], **usage(totals)}
    return json_response({"hypervisor_statistics": body})


ROUTES: list[BaseRoute] = [
    route("/v2.1/os-hypervisors", list_hypervisors, ["GET"], "compute:hypervisors"),
    route("/v2.1/os-hypervisors/detail", list_hypervisors_detail, ["GET"], "compute:hypervisors:detail"),
    route("/v2.1/os-hypervisors/statistics", statistics, ["GET"], "compute:hypervisors:statistics"),
    route("/v2.1/os-hypervisors/{hypervisor_id}", show_hypervisor, ["GET"], "compute:hypervisors:show"),
    route("/v2.1/os-hypervisors/{hypervisor_id}/uptime", hypervisor_uptime, ["GET"], "compute:hypervisors:uptime"),
    route("/v2.1/os-hypervisors/{pattern}/search", search_hypervisors, ["GET"], "compute:hypervisors:search"),
    route("/v2.1/os-hypervisors/{pattern}/servers", hypervisor_servers, ["GET"], "compute:hypervisors:servers"),
]
