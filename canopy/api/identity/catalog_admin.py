"""Identity v3 catalog administration (Keystone's shapes): `/v3/services`, `/v3/endpoints`, `/v3/regions`.

Every token issued after a change carries the changed catalog (canopy/api/identity/catalog.py reads these
tables at issue time). An endpoint's URL may say `$(public_url)s` for the api's public URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import Connection, Table, delete, insert, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.errors import bad_request, conflict
from canopy.api.http import bool_param, empty_response, json_response, read_object, route
from canopy.api.identity import store
from canopy.api.identity.admin import _Body, _changes, _cloud, _collection, _missing, _parse, _read, _write
from canopy.api.identity.catalog import endpoint_url
from canopy.db import tables_global as g

Interface = Literal["public", "internal", "admin"]


class ServiceCreate(_Body):
    type: str = Field(min_length=1, max_length=255)
    name: str = Field(default="", max_length=255)
    description: str = ""
    enabled: bool = True


class ServiceUpdate(_Body):
    type: str = Field(default="", min_length=1, max_length=255)
    name: str = Field(default="", max_length=255)
    description: str = ""
    enabled: bool = True


class EndpointCreate(_Body):
    service_id: str = Field(min_length=1, max_length=64)
    interface: Interface
    url: str = Field(min_length=1, max_length=2048)
    region_id: str | None = Field(default=None, max_length=255)
    region: str | None = Field(default=None, max_length=255)  # the v2-era name clients still send
    enabled: bool = True


class EndpointUpdate(_Body):
    service_id: str = Field(default="", min_length=1, max_length=64)
    interface: Interface = "public"
    url: str = Field(default="", min_length=1, max_length=2048)
    region_id: str | None = Field(default=None, max_length=255)
    enabled: bool = True


class RegionCreate(_Body):
    id: str | None = Field(default=None, min_length=1, max_length=255)
    description: str = ""
    parent_region_id: str | None = Field(default=None, max_length=255)


class RegionUpdate(_Body):
    description: str = ""
    parent_region_id: str | None = Field(default=None, max_length=255)


def _base(request: Request) -> str:
    return _cloud(request).settings.api.public_url.rstrip("/") + "/identity/v3"


def _row(conn: Connection, table: Table, ident: str) -> dict[str, Any] | None:
    # str(k): a column named like a keyword (`type`) comes back as a quoted_name, which orjson refuses
    row = conn.execute(select(table).where(table.c.id == ident)).mappings().first()
    return {str(k): v for k, v in row.items()} if row else None


def service_view(base: str, r: dict[str, Any]) -> dict[str, Any]:
    """A service as Keystone shows it."""
    return {"id": r["id"], "type": r["type"], "name": r["name"], "description": r["description"],
            "enabled": bool(r["enabled"]), "links": {"self": f"{base}/services/{r['id']}"}}


def endpoint_view(base: str, public_url: str, r: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as Keystone shows it (`region` is the older name of `region_id`)."""
    return {"id": r["id"], "service_id": r["service_id"], "interface": r["interface"], "region_id": r["region_id"],
            "region": r["region_id"], "url": endpoint_url(r["url"], public_url), "enabled": bool(r["enabled"]),
            "links": {"self": f"{base}/endpoints/{r['id']}"}}


def region_view(base: str, r: dict[str, Any]) -> dict[str, Any]:
    """A region as Keystone shows it."""
    return {"id": r["id"], "description": r["description"], "parent_region_id": r["parent_region_id"],
            "links": {"self": f"{base}/regions/{r['id']}"}}


def _views(request: Request) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    base, public = _base(request), str(_cloud(request).settings.api.public_url)
    return {"service": lambda r: service_view(base, r), "endpoint": lambda r: endpoint_view(base, public, r),
            "region": lambda r: region_view(base, r)}


TABLES = {"service": g.services, "endpoint": g.endpoints, "region": g.regions}
FILTERS = {"service": ("type", "name"), "endpoint": ("interface", "service_id", "region_id"), "region": ()}


async def _list(request: Request, kind: str) -> Response:
    table, q = TABLES[kind], request.query_params
    wanted = {f: q[f] for f in FILTERS[kind] if q.get(f) is not None}
    if kind == "endpoint" and q.get("region") and "region_id" not in wanted:
        wanted["region_id"] = q["region"]
    enabled = bool_param(q.get("enabled"), "enabled") if kind != "region" else None

    def load(conn: Connection) -> list[dict[str, Any]]:
        s = select(table).where(*(table.c[f] == v for f, v in wanted.items())).order_by(table.c.id)
        if enabled is not None:
            s = s.where(table.c.enabled == enabled)
        return [{str(k): v for k, v in r.items()} for r in conn.execute(s).mappings()]

    view = _views(request)[kind]
    return _collection(request, f"{kind}s", [view(r) for r in await _read(request, load)])


async def _get(request: Request, kind: str) -> Response:
    ident = request.path_params[f"{kind}_id"]
    found = await _read(request, lambda conn: _row(conn, TABLES[kind], ident))
    if found is None:
        raise _missing(kind, ident)
    return json_response({kind: _views(request)[kind](found)})


def _check_refs(conn: Connection, values: dict[str, Any]) -> None:
    """A referenced service or region must exist: a 400 naming the field, as Keystone's."""
    if values.get("service_id") and _row(conn, g.services, values["service_id"]) is None:
        raise bad_request(f"Invalid input for field 'service_id': could not find service: {values['service_id']}.")
    for field in ("region_id", "parent_region_id"):
        if values.get(field) and _row(conn, g.regions, values[field]) is None:
            raise bad_request(f"Invalid input for field '{field}': could not find region: {values[field]}.")


async def _create(request: Request, kind: str, values: dict[str, Any]) -> Response:
    table = TABLES[kind]

    def create(conn: Connection) -> dict[str, Any]:
        _check_refs(conn, values)
        if _row(conn, table, values["id"]) is not None:
            raise conflict(f"Conflict occurred attempting to store {kind} - Duplicate ID, {values['id']}.")
        conn.execute(insert(table).values(**values))
        return _row(conn, table, values["id"]) or values

    row = await _write(request, create)
    return json_response({kind: _views(request)[kind](row)}, status=201)


async def _update(request: Request, kind: str, changes: dict[str, Any]) -> Response:
    table, ident = TABLES[kind], request.path_params[f"{kind}_id"]

    def apply(conn: Connection) -> dict[str, Any]:
        if _row(conn, table, ident) is None:
            raise _missing(kind, ident)
        _check_refs(conn, changes)
        if changes.get("parent_region_id") == ident:
            raise bad_request("Invalid input for field 'parent_region_id': a region cannot be its own parent.")
        if changes:
            conn.execute(update(table).where(table.c.id == ident).values(**changes))
        return _row(conn, table, ident) or {}

    return json_response({kind: _views(request)[kind](await _write(request, apply))})


async def _delete(request: Request, kind: str) -> Response:
    table, ident = TABLES[kind], request.path_params[f"{kind}_id"]

    def apply(conn: Connection) -> None:
        if _row(conn, table, ident) is None:
            raise _missing(kind, ident)
        if kind == "region" and conn.execute(select(g.regions.c.id).where(
                g.regions.c.parent_region_id == ident)).first() is not None:
            raise conflict(f"Unable to delete region {ident} because it or its child regions have associated "
                           "endpoints.")
        if kind == "region":
            conn.execute(update(g.endpoints).where(g.endpoints.c.region_id == ident).values(region_id=None))
        if kind == "service":
            conn.execute(delete(g.endpoints).where(g.endpoints.c.service_id == ident))
        conn.execute(delete(table).where(table.c.id == ident))

    await _write(request, apply)
    return empty_response(204)


async def list_services(request: Request) -> Response:
    """GET /v3/services, filtered by type and name."""
    return await _list(request, "service")


async def get_service(request: Request) -> Response:
    """GET /v3/services/{service_id}."""
    return await _get(request, "service")


async def create_service(request: Request) -> Response:
    """POST /v3/services."""
    body = _parse(ServiceCreate, await read_object(request, "service"))
    return await _create(request, "service", {"id": store.new_id(), "type": body.type,
                                              "name": body.name, "description": body.description,
                                              "enabled": body.enabled})


async def update_service(request: Request) -> Response:
    """PATCH /v3/services/{service_id}."""
    return await _update(request, "service", _changes(_parse(ServiceUpdate, await read_object(request, "service"))))


async def delete_service(request: Request) -> Response:
    """DELETE /v3/services/{service_id}, with its endpoints."""
    return await _delete(request, "service")


async def list_endpoints(request: Request) -> Response:
    """GET /v3/endpoints, filtered by interface, service_id and region_id."""
    return await _list(request, "endpoint")


async def get_endpoint(request: Request) -> Response:
    """GET /v3/endpoints/{endpoint_id}."""
    return await _get(request, "endpoint")


async def create_endpoint(request: Request) -> Response:
    """POST /v3/endpoints."""
    body = _parse(EndpointCreate, await read_object(request, "endpoint"))
    return await _create(request, "endpoint", {
        "id": store.new_id(), "service_id": body.service_id, "interface": body.interface, "url": body.url,
        "region_id": body.region_id or body.region, "enabled": body.enabled})


async def update_endpoint(request: Request) -> Response:
    """PATCH /v3/endpoints/{endpoint_id}."""
    changes = _changes(_parse(EndpointUpdate, await read_object(request, "endpoint")))
    return await _update(request, "endpoint", changes)


async def delete_endpoint(request: Request) -> Response:
    """DELETE /v3/endpoints/{endpoint_id}."""
    return await _delete(request, "endpoint")


async def list_regions(request: Request) -> Response:
    """GET /v3/regions."""
    return await _list(request, "region")


async def get_region(request: Request) -> Response:
    """GET /v3/regions/{region_id}."""
    return await _get(request, "region")


async def create_region(request: Request) -> Response:
    """POST /v3/regions (an id of the caller's choosing, or a generated one)."""
    body = _parse(RegionCreate, await read_object(request, "region"))
    return await _create(request, "region", {"id": body.id or store.new_id(), "description": body.description,
                                             "parent_region_id": body.parent_region_id})


async def update_region(request: Request) -> Response:
    """PATCH /v3/regions/{region_id}."""
    return await _update(request, "region", _changes(_parse(RegionUpdate, await read_object(request, "region"))))


async def delete_region(request: Request) -> Response:
    """DELETE /v3/regions/{region_id} (409 while it has child regions; its endpoints lose their region)."""
    return await _delete(request, "region")


ROUTES: list[BaseRoute] = [
    route("/v3/services", list_services, ["GET"], "identity:list_services"),
    route("/v3/services", create_service, ["POST"], "identity:create_service"),
    route("/v3/services/{service_id}", get_service, ["GET"], "identity:get_service"),
    route("/v3/services/{service_id}", update_service, ["PATCH"], "identity:update_service"),
    route("/v3/services/{service_id}", delete_service, ["DELETE"], "identity:delete_service"),
    route("/v3/endpoints", list_endpoints, ["GET"], "identity:list_endpoints"),
    route("/v3/endpoints", create_endpoint, ["POST"], "identity:create_endpoint"),
    route("/v3/endpoints/{endpoint_id}", get_endpoint, ["GET"], "identity:get_endpoint"),
    route("/v3/endpoints/{endpoint_id}", update_endpoint, ["PATCH"], "identity:update_endpoint"),
    route("/v3/endpoints/{endpoint_id}", delete_endpoint, ["DELETE"], "identity:delete_endpoint"),
    route("/v3/regions", list_regions, ["GET"], "identity:list_regions"),
    route("/v3/regions", create_region, ["POST"], "identity:create_region"),
    route("/v3/regions/{region_id}", get_region, ["GET"], "identity:get_region"),
    route("/v3/regions/{region_id}", update_region, ["PATCH"], "identity:update_region"),
    route("/v3/regions/{region_id}", delete_region, ["DELETE"], "identity:delete_region"),
]
