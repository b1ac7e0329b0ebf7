"""Listing servers across cells: one page merged from every cell's page, in one global order.

Each cell answers the same query (filters, sort, `limit` rows after the marker) within
`[database] cell_timeout_s`; the pages are merged by (sort key, cell name, id) — the order each cell
already uses within itself — and cut to `limit`. The marker is a server's UUID: its cell comes from the
global instance mappings, its sort key from its cell, and every other cell resumes after it by comparing
the cell names (servers.after_marker). So paging is stable across cells, and with one cell the query is
the single-cell one unchanged.

A cell that errors or does not answer in time leaves the others listed: its servers are read from the
global instance mappings and shown with status UNKNOWN and only what the global database knows (as
Nova's cells v2 from microversion 2.69; before it they are left out), on the first page only, since
nothing orders them against the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, exc, select
from starlette.requests import Request

from canopy import states
from canopy.api.compute.common import cloud_of
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import bool_param, ctx
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.db.engine import Database

log = logging.getLogger(__name__)
DOWN_CELL_MV = (2, 69)
CELL_FAILURES = (exc.OperationalError, exc.InterfaceError, exc.DatabaseError, TimeoutError, OSError)
QueryFn = Callable[[Request, int, dict[str, Any] | None], Any]
FaultsFn = Callable[[Connection, list[str]], dict[str, dict[str, Any]]]


class CellDown(Exception):
    """One cell's database failed or timed out."""


async def read_cell(db: Database, timeout_s: float, fn: Callable[..., Any], *args: Any, fresh: bool = False) -> Any:
    """One read on a cell's database, bounded in time; CellDown when it fails or is late."""
    try:
        return await asyncio.wait_for((db.read_fresh if fresh else db.read)(fn, *args), timeout_s)
    except CELL_FAILURES as e:
        raise CellDown(f"{type(e).__name__}: {e}") from None


def _marker_row(cloud: Any, marker: str, cells: dict[str, Database], timeout_s: float) -> Any:
    """The marker server's row and its cell's name (400 when the caller may not see it)."""

    async def find() -> tuple[dict[str, Any], str]:
        m = g.instance_mappings.c
        cell = await cloud.dbs.global_db.read(
            lambda conn: conn.execute(select(m.cell_name).where(m.instance_uuid == marker)).scalar())
        if cell not in cells:
            raise bad_request(f"marker [{marker}] not found")
        try:
            row = await read_cell(cells[cell], timeout_s, lambda conn: conn.execute(
                select(c.instances).where(c.instances.c.uuid == marker)).mappings().first())
        except CellDown:
            raise ApiError(503, f"The cell of marker [{marker}] is unreachable; list again later.") from None
        if row is None:
            raise bad_request(f"marker [{marker}] not found")
        return dict(row), cell

    return find()


def _cell_order(cell: str, marker_cell: str, direction: str) -> int:
    if cell == marker_cell:
        return 0
    before = cell < marker_cell if direction == "asc" else cell > marker_cell
    return -1 if before else 1


async def list_across_cells(request: Request, limit: int, marker: str | None, detail: bool,
                            query: QueryFn, latest_faults: FaultsFn) -> dict[str, Any]:
    """The merged page: rows (each with `_cell`), faults, and the UNKNOWN stand-ins of down cells."""
    cloud, rc = cloud_of(request), ctx(request)
    cells, timeout_s = dict(cloud.dbs.cells), cloud.settings.database.cell_timeout_s
    key = request.query_params.get("sort_key", "created_at")
    direction = request.query_params.get("sort_dir", "desc")
    query(request, 0, None)  # checks the sort and filters once, before any cell is asked
    marker_row, marker_cell = (await _marker_row(cloud, marker, cells, timeout_s)) if marker else (None, "")
    if marker_row is not None and not rc.is_admin and marker_row["project_id"] != rc.project_id:
        raise bad_request(f"marker [{marker}] not found")

    def page(conn: Connection, cell: str) -> dict[str, Any]:
        mrow = None if marker_row is None else {**marker_row, "cell_order": _cell_order(cell, marker_cell,
                                                                                           direction)}
        rows = [{**r, "_cell": cell} for r in conn.execute(query(request, limit, mrow)).mappings()]
        errors = [r["uuid"] for r in rows if r["vm_state"] == states.ERROR]
        return {"rows": rows, "faults": latest_faults(conn, errors) if detail else {}}

    names = sorted(cells)
    answers = await asyncio.gather(*(read_cell(cells[n], timeout_s, page, n) for n in names),
                                   return_exceptions=True)
    rows, faults, down = [], {}, []
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, CellDown):
            log.warning("cell %s did not answer the servers list: %s", name, answer)
            down.append(name)
            continue
        if isinstance(answer, BaseException):
            raise answer
        rows += answer["rows"]
        faults.update(answer["faults"])
    col = key if key != "display_name" else "name"
    rows.sort(key=lambda r: (_null_first(r[col]), r["_cell"], r["id"]), reverse=direction == "desc")
    unknown = await _unknown(request, down, limit) if down and not marker and mv(request) >= DOWN_CELL_MV else []
    return {"rows": rows[:limit], "faults": faults, "unknown": unknown}


def _null_first(value: Any) -> tuple[int, Any]:
    """Sort NULL before every value, as SQLite and MariaDB do."""
    return (0, 0) if value is None else (1, value)


async def _unknown(request: Request, down: list[str], limit: int) -> list[dict[str, Any]]:
    """The servers the global mappings place in down cells, as far as the global database knows them."""
    rc, args = ctx(request), request.query_params
    m = g.instance_mappings.c
    q = select(m.instance_uuid, m.project_id, m.cell_name).where(m.cell_name.in_(down))
    all_tenants = rc.is_admin and bool_param(args.get("all_tenants"), "all_tenants") is True
    if not all_tenants:
        q = q.where(m.project_id == rc.project_id)
    elif args.get("project_id") or args.get("tenant_id"):
        q = q.where(m.project_id == (args.get("project_id") or args.get("tenant_id")))
    q = q.order_by(m.instance_uuid).limit(limit)
    found = await cloud_of(request).dbs.global_db.read(lambda conn: conn.execute(q).mappings().all())
    return [dict(r) for r in found]


def render_unknown(row: dict[str, Any], base: str, detail: bool) -> dict[str, Any]:
    """A server of an unreachable cell: Nova's minimal down-cell view (2.69)."""
    uuid = row["instance_uuid"]
    out: dict[str, Any] = {"id": uuid, "status": "UNKNOWN",
                           "links": [{"rel": "self", "href": f"{base}/v2.1/servers/{uuid}"},
                                     {"rel": "bookmark", "href": f"{base}/servers/{uuid}"}]}
    if detail:
        out["tenant_id"] = row["project_id"]
    return out


async def show_unknown(request: Request, uuid: str) -> dict[str, Any]:
    """GET /servers/{id} of a server whose cell is unreachable: the down-cell view (2.69+), else 503."""
    rc = ctx(request)
    if mv(request) < DOWN_CELL_MV:
        raise ApiError(503, f"The cell of server {uuid} is unreachable; try again later.")
    m = g.instance_mappings.c
    row = await cloud_of(request).dbs.global_db.read(
        lambda conn: conn.execute(select(m.instance_uuid, m.project_id).where(m.instance_uuid == uuid))
        .mappings().first())
    if row is None or (not rc.is_admin and row["project_id"] != rc.project_id):
        raise ApiError(404, f"Instance {uuid} could not be found.")
    base = cloud_of(request).settings.api.public_url.rstrip("/") + "/compute"
    return render_unknown(dict(row), base, detail=True)
