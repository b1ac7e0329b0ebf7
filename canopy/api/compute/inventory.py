"""Compute API extension (admin): the physical inventory under `/v2.1/canopy-inventory/`.

    GET    /v2.1/canopy-inventory/{kind}            list (limit/marker, exact filters, `{kind}_links`)
    POST   /v2.1/canopy-inventory/{kind}            create ({"datacenter": {...}}, {"row": …}, {"rack": …}, {"host": …})
    GET    /v2.1/canopy-inventory/{kind}/{id}       show
    PUT    /v2.1/canopy-inventory/{kind}/{id}       change
    DELETE /v2.1/canopy-inventory/{kind}/{id}       remove (409 while it holds anything)

with kind one of datacenters, rows, racks, hosts. The rules live in canopy.db.inventory, shared with
`canopy inventory`. A host's rack, once changed here, is written onto the host's row in its cell too
(when the host is mapped to one), so the scheduler's index sees the new rack at its next refresh.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.common import cloud_of
from canopy.api.errors import ApiError
from canopy.api.http import empty_response, json_response, page_params, read_object, require_admin, route
from canopy.clock import isotime
from canopy.db import inventory as inv
from canopy.db import tables_cell as c
from canopy.db import tables_global as g

PREFIX = "/v2.1/canopy-inventory"


def render(kind: inv.Kind, row: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it: its columns, times in ISO 8601."""
    # str(): column names come as SQLAlchemy's quoted_name, a str subclass orjson refuses as a key.
    out = {str(k): v for k, v in row.items() if k not in ("created_at", "updated_at")}
    out.update(created_at=isotime(row["created_at"]), updated_at=isotime(row["updated_at"]))
    return out


def _kind(request: Request) -> inv.Kind:
    kind = inv.KINDS.get(request.path_params["kind"])
    if kind is None:
        raise ApiError(404, f"The resource could not be found: {request.url.path}")
    return kind


async def _run(request: Request, fn: Any, *args: Any, write: bool = False) -> Any:
    db = cloud_of(request).dbs.global_db
    try:
        return await (db.write(fn, *args) if write else db.read(fn, *args))
    except inv.InventoryError as e:
        raise ApiError(e.status, e.message) from None


async def list_records(request: Request) -> Response:
    """GET /v2.1/canopy-inventory/{kind}."""
    require_admin(request)
    kind = _kind(request)
    limit, marker = page_params(request, cloud_of(request).settings.api.max_page_size)
    args = request.query_params
    unknown = sorted(set(args) - set(kind.filters) - {"limit", "marker"})
    if unknown:
        raise ApiError(400, f"Invalid input for query parameters {unknown[0]}: not a filter of {kind.name} "
                            f"(filters: {', '.join(kind.filters)}).")
    filters = {f: args[f] for f in kind.filters if f in args}
    rows = await _run(request, inv.list_records, kind, filters, limit, marker)
    body: dict[str, Any] = {kind.name: [render(kind, r) for r in rows]}
    if rows and len(rows) == limit:
        base = cloud_of(request).settings.api.public_url.rstrip("/") + "/compute"
        query = "&".join(f"{k}={v}" for k, v in {**filters, "limit": str(limit),
                                                  "marker": rows[-1][kind.key]}.items())
        body[f"{kind.name}_links"] = [{"rel": "next", "href": f"{base}{PREFIX}/{kind.name}?{query}"}]
    return json_response(body)


async def show_record(request: Request) -> Response:
    """GET /v2.1/canopy-inventory/{kind}/{id}."""
    require_admin(request)
    kind = _kind(request)
    row = await _run(request, inv.get_record, kind, request.path_params["key"])
    return json_response({kind.member: render(kind, row)})


async def create_record(request: Request) -> Response:
    """POST /v2.1/canopy-inventory/{kind}."""
    require_admin(request)
    kind = _kind(request)
    values = _parsed(kind, await read_object(request, kind.member), creating=True)
    row = await _run(request, inv.create_record, kind, values, cloud_of(request).clock.now(), write=True)
    if kind.name == "hosts":
        await _place_in_cell(request, row["name"])
    return json_response({kind.member: render(kind, row)}, status=201)


async def update_record(request: Request) -> Response:
    """PUT /v2.1/canopy-inventory/{kind}/{id}."""
    require_admin(request)
    kind = _kind(request)
    values = _parsed(kind, await read_object(request, kind.member), creating=False)
    key = request.path_params["key"]
    row = await _run(request, inv.update_record, kind, key, values, cloud_of(request).clock.now(), write=True)
    if kind.name == "hosts" and "rack_id" in values:
        await _place_in_cell(request, key)
    return json_response({kind.member: render(kind, row)})


async def delete_record(request: Request) -> Response:
    """DELETE /v2.1/canopy-inventory/{kind}/{id}."""
    require_admin(request)
    kind = _kind(request)
    await _run(request, inv.delete_record, kind, request.path_params["key"], write=True)
    return empty_response(204)


def _parsed(kind: inv.Kind, body: dict[str, Any], creating: bool) -> dict[str, Any]:
    try:
        return inv.parse_body(kind, body, creating)
    except inv.InventoryError as e:
        raise ApiError(e.status, e.message) from None


async def _place_in_cell(request: Request, host: str) -> None:
    """Write the inventory's rack onto the host's row in its cell (if it has registered there)."""
    cloud = cloud_of(request)

    def where(conn: Connection) -> tuple[str | None, tuple[str, str] | None]:
        cell = conn.execute(select(g.host_mappings.c.cell_name).where(g.host_mappings.c.host == host)).scalar()
        return cell, inv.host_placement(conn, host)

    cell, placement = await cloud.dbs.global_db.read_fresh(where)
    if cell is None or placement is None or cell not in cloud.dbs.cells:
        return

    def write(conn: Connection) -> None:
        conn.execute(update(c.hosts).where(c.hosts.c.name == host).values(
            datacenter=placement[0], rack=placement[1], updated_at=cloud.clock.now()))

    await cloud.dbs.cell(cell).write(write)


ROUTES = [
    route(PREFIX + "/{kind}", list_records, ["GET"], "compute:canopy-inventory:index"),
    route(PREFIX + "/{kind}", create_record, ["POST"], "compute:canopy-inventory:create"),
    route(PREFIX + "/{kind}/{key}", show_record, ["GET"], "compute:canopy-inventory:show"),
    route(PREFIX + "/{kind}/{key}", update_record, ["PUT"], "compute:canopy-inventory:update"),
    route(PREFIX + "/{kind}/{key}", delete_record, ["DELETE"], "compute:canopy-inventory:delete"),
]
