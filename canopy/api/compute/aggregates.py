"""Compute API: os-aggregates (admin). Create, rename, delete; add and remove hosts; metadata such as
`availability_zone` and `filter_tenant_id`. The scheduler reads aggregates through its change feed
(every change stamps the aggregate's `updated_at`).

An aggregate's availability zone is its hosts' zone: adding a host writes the zone onto the host's row
(so os-availability-zone, os-hypervisors and server views agree), and a host may be in only one zone.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.common import cell_db, cloud_of
from canopy.api.compute.microversion import mv
from canopy.api.compute.zones import DEFAULT_ZONE
from canopy.api.errors import ApiError, bad_request, conflict
from canopy.api.http import json_response, read_object, route
from canopy.clock import isotime_us
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.db.records import inserted_id

a, ah, h = g.aggregates.c, g.aggregate_hosts.c, c.hosts.c
UUID_FIELD = (2, 41)
AZ_KEY = "availability_zone"


def not_found(agg_id: str) -> ApiError:
    return ApiError(404, f"Aggregate {agg_id} could not be found.")


def render(row: dict[str, Any], hosts: list[str] | None, version: tuple[int, int]) -> dict[str, Any]:
    """An aggregate as Nova shows it (`hosts` None: the create response, which has neither hosts nor metadata)."""
    out: dict[str, Any] = {"availability_zone": row["availability_zone"], "created_at": isotime_us(row["created_at"]),
                           "deleted": False, "deleted_at": None, "id": row["id"], "name": row["name"],
                           "updated_at": isotime_us(row["updated_at"]) if row["updated_at"] != row["created_at"]
                           else None}
    if hosts is not None:
        out.update(hosts=hosts, metadata=row["metadata"] or {})
    if version >= UUID_FIELD:
        out["uuid"] = row["uuid"]
    return out


def _load(conn: Connection, agg_id: str) -> tuple[dict[str, Any], list[str]]:
    key = a.id == int(agg_id) if agg_id.isdigit() else a.uuid == agg_id
    row = conn.execute(select(g.aggregates).where(key, a.deleted == 0)).mappings().first()
    if row is None:
        raise not_found(agg_id)
    hosts = [r[0] for r in conn.execute(select(ah.host).where(ah.aggregate_id == row["id"]).order_by(ah.host))]
    return dict(row), hosts


def _check_name(conn: Connection, name: Any, exclude_id: int | None = None) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise bad_request(f"Invalid input for field/attribute name. Value: {name}. "
                          "'name' must be a non-empty string of at most 255 characters")
    q = select(a.id).where(a.name == name, a.deleted == 0)
    if exclude_id is not None:
        q = q.where(a.id != exclude_id)
    if conn.execute(q).first():
        raise conflict(f"Aggregate {name} already exists.")
    return name


def _check_zone(zone: Any) -> str | None:
    if zone is None:
        return None
    if not isinstance(zone, str) or not zone.strip() or len(zone) > 255 or ":" in zone:
        raise bad_request(f"Invalid input for field/attribute availability_zone. Value: {zone}. "
                          "It must be a non-empty string of at most 255 characters without ':'")
    return zone


def _zone_conflicts(conn: Connection, hosts: list[str], zone: str | None, agg_id: int) -> None:
    """A host is in one zone only: refuse a zone that differs from one another aggregate gives it."""
    if not zone or not hosts:
        return
    q = (select(ah.host, a.availability_zone).select_from(g.aggregate_hosts.join(g.aggregates,
                                                                                   a.id == ah.aggregate_id))
         .where(ah.host.in_(hosts), a.id != agg_id, a.deleted == 0, a.availability_zone.is_not(None),
                a.availability_zone != zone))
    clash = conn.execute(q).all()
    if clash:
        zones = sorted({r[1] for r in clash})
        raise conflict(f"Cannot add host to aggregate {agg_id}. Reason: One or more hosts already in "
                       f"availability zone(s) {zones}.")


async def list_aggregates(request: Request) -> Response:
    """GET /os-aggregates."""

    def read(conn: Connection) -> list[tuple[dict[str, Any], list[str]]]:
        rows = [dict(r) for r in conn.execute(select(g.aggregates).where(a.deleted == 0).order_by(a.id)).mappings()]
        hosts: dict[int, list[str]] = {r["id"]: [] for r in rows}
        for agg_id, host in conn.execute(select(ah.aggregate_id, ah.host).order_by(ah.host)):
            if agg_id in hosts:
                hosts[agg_id].append(host)
        return [(r, hosts[r["id"]]) for r in rows]

    found = await cloud_of(request).dbs.global_db.read(read)
    version = mv(request)
    return json_response({"aggregates": [render(r, hs, version) for r, hs in found]})


async def create_aggregate(request: Request) -> Response:
    """POST /os-aggregates."""
    body = await read_object(request, "aggregate")
    extra = sorted(set(body) - {"name", AZ_KEY})
    if extra:
        raise bad_request(f"Invalid input for field/attribute aggregate. Additional properties are not allowed "
                          f"('{extra[0]}' was unexpected)")
    zone = _check_zone(body.get(AZ_KEY))
    cloud = cloud_of(request)
    now = cloud.clock.now()

    def write(conn: Connection) -> dict[str, Any]:
        name = _check_name(conn, body.get("name"))
        row = {"uuid": str(uuidlib.uuid4()), "name": name, AZ_KEY: zone, "metadata": {AZ_KEY: zone} if zone else {},
               "created_at": now, "updated_at": now, "deleted": 0}
        row["id"] = inserted_id(conn.execute(insert(g.aggregates).values(**row)))
        return row

    row = await cloud.dbs.global_db.write(write)
    return json_response({"aggregate": render(row, None, mv(request))})


async def show_aggregate(request: Request) -> Response:
    """GET /os-aggregates/{id}."""
    row, hosts = await cloud_of(request).dbs.global_db.read(_load, request.path_params["aggregate_id"])
    return json_response({"aggregate": render(row, hosts, mv(request))})


async def update_aggregate(request: Request) -> Response:
    """PUT /os-aggregates/{id}: a new name and/or availability zone."""
    body = await read_object(request, "aggregate")
    extra = sorted(set(body) - {"name", AZ_KEY})
    if extra or not body:
        raise bad_request("Invalid input for field/attribute aggregate. " + (
            f"Additional properties are not allowed ('{extra[0]}' was unexpected)" if extra
            else "At least one of 'name' and 'availability_zone' is required"))
    changes: dict[str, Any] = {}
    if AZ_KEY in body:
        changes[AZ_KEY] = _check_zone(body[AZ_KEY])
    return await _change(request, name=body.get("name"), metadata=changes)


async def _change(request: Request, *, name: Any = None, metadata: dict[str, Any] | None = None,
                  add: str | None = None, remove: str | None = None) -> Response:
    """Apply one change in the global database, then put the hosts' zones right in the cell's."""
    cloud, agg_id = cloud_of(request), request.path_params["aggregate_id"]
    now = cloud.clock.now()
    if add is not None and not await cell_db(request).read(_host_exists, add):
        raise ApiError(404, f"Compute host {add} could not be found.")

    def write(conn: Connection) -> tuple[dict[str, Any], list[str], dict[str, str]]:
        row, hosts = _load(conn, agg_id)
        old_zone = row[AZ_KEY]
        values: dict[str, Any] = {"updated_at": now}
        if name is not None:
            values["name"] = _check_name(conn, name, row["id"])
        if metadata:
            values.update(_new_metadata(conn, row, hosts, metadata))
        if add is not None:
            hosts = _add_host(conn, row, hosts, add)
        if remove is not None:
            hosts = _remove_host(conn, row, hosts, remove)
        conn.execute(update(g.aggregates).where(a.id == row["id"]).values(**values))
        row.update(values)
        return row, hosts, _zone_writes(old_zone, row[AZ_KEY], hosts, add, remove)

    row, hosts, zones = await cloud.dbs.global_db.write(write)
    if zones:
        await cell_db(request).write(_set_host_zones, zones, now)
    return json_response({"aggregate": render(row, hosts, mv(request))})


def _zone_writes(old: str | None, new: str | None, hosts: list[str], added: str | None,
                 removed: str | None) -> dict[str, str]:
    """The hosts whose zone changes, and to what: a host leaving its zone's aggregate goes back to the default."""
    zones = {host: new or DEFAULT_ZONE for host in hosts} if new != old else {}
    if added is not None and new:
        zones[added] = new
    if removed is not None and old:
        zones[removed] = DEFAULT_ZONE
    return zones


def _new_metadata(conn: Connection, row: dict[str, Any], hosts: list[str], changes: dict[str, Any]) -> dict[str, Any]:
    meta = dict(row["metadata"] or {})
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    zone = meta.get(AZ_KEY)
    _zone_conflicts(conn, hosts, zone, row["id"])
    return {"metadata": meta, AZ_KEY: zone}


def _add_host(conn: Connection, row: dict[str, Any], hosts: list[str], host: str) -> list[str]:
    if host in hosts:
        raise conflict(f"Aggregate {row['id']} already has host {host}.")
    _zone_conflicts(conn, [host], row[AZ_KEY], row["id"])
    conn.execute(insert(g.aggregate_hosts).values(aggregate_id=row["id"], host=host))
    return sorted([*hosts, host])


def _remove_host(conn: Connection, row: dict[str, Any], hosts: list[str], host: str) -> list[str]:
    if host not in hosts:
        raise ApiError(404, f"Aggregate {row['id']} has no host {host}.")
    conn.execute(delete(g.aggregate_hosts).where(ah.aggregate_id == row["id"], ah.host == host))
    return [x for x in hosts if x != host]


def _host_exists(conn: Connection, host: str) -> bool:
    return conn.execute(select(h.id).where(h.name == host)).first() is not None


def _set_host_zones(conn: Connection, zones: dict[str, str], now: Any) -> None:
    for host, zone in zones.items():
        conn.execute(update(c.hosts).where(h.name == host).values(availability_zone=zone, updated_at=now))


async def aggregate_action(request: Request) -> Response:
    """POST /os-aggregates/{id}/action: add_host, remove_host or set_metadata."""
    body = await read_object(request)
    if len(body) != 1 or next(iter(body)) not in ("add_host", "remove_host", "set_metadata"):
        raise bad_request("Invalid input for field/attribute action. Exactly one of 'add_host', 'remove_host' "
                          "or 'set_metadata' is required")
    action, args = next(iter(body.items()))
    if not isinstance(args, dict):
        raise bad_request(f"Invalid input for field/attribute {action}. Value: {args!r}. It is not of type 'object'")
    if action == "set_metadata":
        return await _change(request, metadata=_metadata_arg(args))
    host = args.get("host")
    if not isinstance(host, str) or not host or set(args) != {"host"}:
        raise bad_request(f"Invalid input for field/attribute {action}. 'host' (a string) is required")
    return await _change(request, add=host) if action == "add_host" else await _change(request, remove=host)


def _metadata_arg(args: dict[str, Any]) -> dict[str, Any]:
    meta = args.get("metadata")
    if set(args) != {"metadata"} or not isinstance(meta, dict) or not meta:
        raise bad_request("Invalid input for field/attribute set_metadata. 'metadata' (an object) is required")
    for key, value in meta.items():
        if not 1 <= len(key) <= 255 or (value is not None and (not isinstance(value, str) or len(value) > 255)):
            raise bad_request(f"Invalid input for field/attribute metadata. Value: {key}={value!r}. Keys and "
                              "values must be strings of 1 to 255 characters (null removes a key)")
    if AZ_KEY in meta:
        _check_zone(meta[AZ_KEY])
    return meta


async def delete_aggregate(request: Request) -> Response:
    """DELETE /os-aggregates/{id}: only an aggregate without hosts."""
    cloud = cloud_of(request)
    now = cloud.clock.now()

    def write(conn: Connection) -> None:
        row, hosts = _load(conn, request.path_params["aggregate_id"])
        if hosts:
            raise bad_request(f"Cannot remove aggregate {row['id']}. Reason: Host aggregate is not empty.")
        # Soft delete: the scheduler's change feed must see it go.
        conn.execute(update(g.aggregates).where(a.id == row["id"]).values(deleted=row["id"], deleted_at=now,
                                                                           updated_at=now))

    await cloud.dbs.global_db.write(write)
    return Response(status_code=200)


ROUTES = [
    route("/v2.1/os-aggregates", list_aggregates, ["GET"], "compute:aggregates"),
    route("/v2.1/os-aggregates", create_aggregate, ["POST"], "compute:aggregates:create"),
    route("/v2.1/os-aggregates/{aggregate_id}", show_aggregate, ["GET"], "compute:aggregates:show"),
    route("/v2.1/os-aggregates/{aggregate_id}", update_aggregate, ["PUT"], "compute:aggregates:update"),
    route("/v2.1/os-aggregates/{aggregate_id}", delete_aggregate, ["DELETE"], "compute:aggregates:delete"),
    route("/v2.1/os-aggregates/{aggregate_id}/action", aggregate_action, ["POST"], "compute:aggregates:action"),
]
