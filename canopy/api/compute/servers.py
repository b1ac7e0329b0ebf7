"""Servers: create, list (brief and detail, filtered and paginated), show, rename, delete, metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, desc, or_, select
from starlette.requests import Request
from starlette.responses import Response

from canopy import states
from canopy.api.compute import field_limits, server_actions, server_list_cells
from canopy.api.compute.common import (
    admin_password,
    cell_db,
    cloud_of,
    instance_db,
    load_visible_instance,
    password_body,
)
from canopy.api.compute.microversion import mv
from canopy.api.compute.server_create import create_servers, parse_create
from canopy.api.compute.server_secgroups import attach_names
from canopy.api.compute.server_views import render_brief, render_server
from canopy.api.errors import bad_request
from canopy.api.http import bool_param, ctx, empty_response, json_response, page_params, read_object, route
from canopy.clock import parse_isotime
from canopy.db import tables_cell as c

i = c.instances.c
SORT_KEYS = {"created_at": i.created_at, "updated_at": i.updated_at, "display_name": i.name, "uuid": i.uuid,
             "vm_state": i.vm_state, "task_state": i.task_state, "host": i.host, "launched_at": i.launched_at}


def compute_base(request: Request) -> str:
    return cloud_of(request).settings.api.public_url.rstrip("/") + "/compute"


async def create(request: Request) -> Response:
    req = parse_create(await read_object(request), mv(request))
    server = req.server
    server.adminPass = admin_password(request, server.adminPass)
    uuids, reservation_id = await create_servers(request, req)
    if server.return_reservation_id:
        return json_response({"reservation_id": reservation_id}, status=202)
    base = compute_base(request)
    body_out = {"server": {**render_brief({"uuid": uuids[0], "name": server.name}, base),
                           "OS-DCF:diskConfig": server.disk_config or "MANUAL",
                           "security_groups": [{"name": g["name"]} for g in server.security_groups or []]
                           or [{"name": "default"}]}}
    del body_out["server"]["name"]
    body_out["server"].update(password_body(request, server.adminPass))
    return json_response(body_out, status=202, headers={"Location": f"{base}/v2.1/servers/{uuids[0]}"})


def _list_query(request: Request, limit: int, marker_row: dict[str, Any] | None) -> Any:
    q, rc, args = select(c.instances), ctx(request), request.query_params
    all_tenants = rc.is_admin and bool_param(args.get("all_tenants"), "all_tenants") is True
    if not all_tenants:
        q = q.where(i.project_id == rc.project_id)
    elif args.get("project_id") or args.get("tenant_id"):
        q = q.where(i.project_id == (args.get("project_id") or args.get("tenant_id")))
    since, before = args.get("changes-since"), args.get("changes-before")
    deleted = bool_param(args.get("deleted"), "deleted") if rc.is_admin else None
    if since:
        q = q.where(i.updated_at >= _time_param(since, "changes-since"))
    if before:
        q = q.where(i.updated_at <= _time_param(before, "changes-before"))
    if not (since or before or deleted):
        q = q.where(i.deleted.is_(False))
    elif deleted:
        q = q.where(i.deleted.is_(True))
    if args.get("status"):
        vm_states = states.STATUS_TO_VM_STATES.get(args["status"].upper())
        if vm_states is None:
            raise bad_request(f"Invalid status value: {args['status']}")
        q = q.where(i.vm_state.in_(vm_states))
    for param, col in (("name", i.name),):
        if args.get(param):
            q = q.where(col.contains(args[param], autoescape=True))
    for param, col in (("image", i.image_ref), ("flavor", i.flavor_id), ("reservation_id", i.reservation_id),
                       ("availability_zone", i.availability_zone)):
        if args.get(param):
            q = q.where(col == args[param])
    if args.get("host") and rc.is_admin:
        q = q.where(i.host == args["host"])
    return _sorted(q, request, limit, marker_row)


def _time_param(value: str, name: str) -> Any:
    try:
        return parse_isotime(value)
    except ValueError:
        raise bad_request(f"Invalid input for query parameters {name}. Value: {value}. "
                          f"'{value}' is not a 'date-time'") from None


def _sorted(q: Any, request: Request, limit: int, marker_row: dict[str, Any] | None) -> Any:
    key = request.query_params.get("sort_key", "created_at")
    direction = request.query_params.get("sort_dir", "desc")
    if key not in SORT_KEYS or direction not in ("asc", "desc"):
        raise bad_request(f"Invalid sort: sort_key {key!r} or sort_dir {direction!r} is not supported.")
    col = SORT_KEYS[key]
    if marker_row is not None:
        q = q.where(after_marker(col, direction, marker_row))
    order = (desc(col), desc(i.id)) if direction == "desc" else (col, i.id)
    return q.order_by(*order).limit(limit)


def after_marker(col: Any, direction: str, marker_row: dict[str, Any]) -> Any:
    """Rows after the marker in (sort key, cell, id) order. `marker_row["cell_order"]` says where this
    cell's rows stand in the listing against the marker's cell's rows of the same sort key (0: the same
    cell, -1: listed before them, so already passed; 1: listed after them), so that a page across cells
    resumes exactly where the last one stopped (one cell: always 0)."""
    mval, mid, rel = marker_row[col.key], marker_row["id"], marker_row.get("cell_order", 0)
    col_after, id_after = (col > mval, i.id > mid) if direction == "asc" else (col < mval, i.id < mid)
    if rel == 0:
        return or_(col_after, and_(col == mval, id_after))
    return or_(col_after, col == mval) if rel > 0 else col_after


def _list(conn: Connection, request: Request, limit: int, marker: str | None, detail: bool) -> dict[str, Any]:
    marker_row: dict[str, Any] | None = None
    if marker:
        found = conn.execute(select(c.instances).where(i.uuid == marker)).mappings().first()
        marker_row = dict(found) if found is not None else None
        rc = ctx(request)
        if marker_row is None or (not rc.is_admin and marker_row["project_id"] != rc.project_id):
            raise bad_request(f"marker [{marker}] not found")
    rows = [dict(r) for r in conn.execute(_list_query(request, limit, marker_row)).mappings().all()]
    faults = _latest_faults(conn, [r["uuid"] for r in rows if r["vm_state"] == states.ERROR]) if detail else {}
    return {"rows": rows, "faults": faults}


def _latest_faults(conn: Connection, uuids: list[str]) -> dict[str, dict[str, Any]]:
    """The newest fault of each instance named, in one query."""
    if not uuids:
        return {}
    rows = conn.execute(select(c.instance_faults).where(c.instance_faults.c.instance_uuid.in_(uuids))
                        .order_by(desc(c.instance_faults.c.id))).mappings().all()
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest.setdefault(row["instance_uuid"], dict(row))
    return latest


async def _index(request: Request, detail: bool) -> Response:
    max_page = cloud_of(request).settings.api.max_page_size
    limit, marker = page_params(request, max_page)
    if len(cloud_of(request).dbs.cells) > 1:  # issue 19: one page merged from every cell's
        found = await server_list_cells.list_across_cells(request, limit, marker, detail, _list_query,
                                                          _latest_faults)
    else:
        found = await cell_db(request).read(_list, request, limit, marker, detail)
    if detail:
        await attach_names(request, found["rows"])
    base, rc, version = compute_base(request), ctx(request), mv(request)
    if detail:
        servers = [render_server(r, mv=version, is_admin=rc.is_admin, base=base, fault=found["faults"].get(r["uuid"]))
                   for r in found["rows"]]
    else:
        servers = [render_brief(r, base) for r in found["rows"]]
    servers += [server_list_cells.render_unknown(r, base, detail) for r in found.get("unknown", ())]
    body: dict[str, Any] = {"servers": servers}
    if found["rows"] and len(found["rows"]) == limit:
        path = "servers/detail" if detail else "servers"
        params = dict(request.query_params)
        params.update(limit=str(limit), marker=found["rows"][-1]["uuid"])
        query = "&".join(f"{k}={v}" for k, v in params.items())
        body["servers_links"] = [{"rel": "next", "href": f"{base}/v2.1/{path}?{query}"}]
    return json_response(body)


async def index(request: Request) -> Response:
    return await _index(request, detail=False)


async def detail(request: Request) -> Response:
    return await _index(request, detail=True)


def _show(conn: Connection, uuid: str, project_id: str | None, is_admin: bool) -> dict[str, Any]:
    inst = load_visible_instance(conn, uuid, project_id, is_admin)
    inst["fault"] = _latest_faults(conn, [uuid]).get(uuid)
    return inst


async def show_server_body(request: Request, uuid: str) -> dict[str, Any]:
    rc = ctx(request)
    db = await instance_db(request, uuid)
    try:
        inst = await server_list_cells.read_cell(db, cloud_of(request).settings.database.cell_timeout_s,
                                                 _show, uuid, rc.project_id, rc.is_admin, fresh=True)
    except server_list_cells.CellDown:
        return {"server": await server_list_cells.show_unknown(request, uuid)}
    await attach_names(request, [inst])
    return {"server": render_server(inst, mv=mv(request), is_admin=rc.is_admin, base=compute_base(request),
                                    fault=inst["fault"])}


async def show(request: Request) -> Response:
    return json_response(await show_server_body(request, request.path_params["server_id"]))


async def update(request: Request) -> Response:
    uuid, rc = request.path_params["server_id"], ctx(request)
    body = await read_object(request, "server")
    allowed = {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"} | (
        {"description"} if mv(request) >= (2, 19) else set())
    extra = set(body) - allowed
    if extra:
        raise bad_request(f"Invalid input for field/attribute server. Additional properties are not allowed "
                          f"({', '.join(sorted(extra))} was unexpected)")
    values: dict[str, Any] = {}
    if "name" in body:
        values["name"] = field_limits.check_name(body["name"])
    if "description" in body:
        values["description"] = field_limits.check_description(body["description"])
    for version in (4, 6):
        if f"accessIPv{version}" in body:
            values[f"access_ip_v{version}"] = field_limits.check_access_ip(body[f"accessIPv{version}"], version)
    cloud = cloud_of(request)

    def write(conn: Connection) -> None:
        load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        if values:
            conn.execute(c.instances.update().where(i.uuid == uuid).values(updated_at=cloud.clock.now(), **values))

    await (await instance_db(request, uuid)).write(write)
    return json_response(await show_server_body(request, uuid))


async def delete(request: Request) -> Response:
    await server_actions.start_action(request, request.path_params["server_id"], "delete")
    return empty_response(204)


ROUTES = [
    route("/v2.1/servers", index, ["GET"], "compute:servers:index"),
    route("/v2.1/servers", create, ["POST"], "compute:servers:create"),
    route("/v2.1/servers/detail", detail, ["GET"], "compute:servers:detail"),
    route("/v2.1/servers/{server_id}", show, ["GET"], "compute:servers:show"),
    route("/v2.1/servers/{server_id}", update, ["PUT"], "compute:servers:update"),
    route("/v2.1/servers/{server_id}", delete, ["DELETE"], "compute:servers:delete"),
]
