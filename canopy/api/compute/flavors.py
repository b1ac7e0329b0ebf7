"""Compute API: flavors (list, detail, show, create, describe, delete) and their extra specs."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from sqlalchemy import Connection, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute.common import cloud_of, link
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request, conflict
from canopy.api.http import ctx, empty_response, json_response, page_params, read_object, route, validate
from canopy.db import tables_global as g

f = g.flavors.c
MAX_INT = 2147483647
SORT_KEYS = {"flavorid": f.id, "id": f.id, "name": f.name, "memory_mb": f.ram_mb, "root_gb": f.disk_gb,
             "vcpus": f.vcpus, "swap": f.swap_mb, "ephemeral_gb": f.ephemeral_gb, "rxtx_factor": f.rxtx_factor,
             "is_public": f.is_public, "created_at": f.created_at, "description": f.description}
_FLAVOR_ID = re.compile(r"^(?! )[a-zA-Z0-9. _-]+(?<! )$")
_SPEC_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")


def collection_links(request: Request, count: int, limit: int, marker: str | None) -> list[dict[str, str]]:
    """Nova's `*_links` for a full page: a `next` link carrying the last item as the marker."""
    if not count or count != limit or marker is None:
        return []
    params = {k: v for k, v in request.query_params.items() if k not in ("limit", "marker")}
    params.update(limit=str(limit), marker=marker)
    base = cloud_of(request).settings.api.public_url.rstrip("/")
    return [{"rel": "next", "href": f"{base}{request.url.path}?{urlencode(params)}"}]


def flavor_not_found(flavor_id: str) -> ApiError:
    return ApiError(404, f"Flavor {flavor_id} could not be found.")


def _int_like(value: Any) -> Any:
    if isinstance(value, bool) or (isinstance(value, str) and not re.fullmatch(r"-?[0-9]+", value.strip())):
        raise ValueError(f"{value!r} is not of type 'integer', 'string'")
    return int(value) if isinstance(value, str) else value


Positive = Annotated[int, BeforeValidator(_int_like), Field(ge=1, le=MAX_INT)]
NonNegative = Annotated[int, BeforeValidator(_int_like), Field(ge=0, le=MAX_INT)]


_TRUE_WORDS = {"true", "1", "yes", "on", "y", "t"}
_FALSE_WORDS = {"false", "0", "no", "off", "n", "f"}


class FlavorCreate(BaseModel):
    """The body of POST /flavors."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    id: str | int | float | None = None
    ram: Positive
    vcpus: Positive
    disk: NonNegative
    ephemeral: NonNegative = Field(default=0, alias="OS-FLV-EXT-DATA:ephemeral")
    swap: NonNegative = 0
    rxtx_factor: float = Field(default=1.0, gt=0, le=3.40282e38)
    is_public: bool = Field(default=True, alias="os-flavor-access:is_public", strict=True)
    description: str | None = Field(default=None, max_length=65535)

    @field_validator("is_public", mode="before")
    @classmethod
    def _boolean_as_nova(cls, v: Any) -> Any:
        """Nova's boolean parameter type: also the strings clients send ("True", "false", "1", "off"…)."""
        if isinstance(v, str) and v.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return v.strip().lower() in _TRUE_WORDS
        return v

    @field_validator("name")
    @classmethod
    def _no_outer_space(cls, v: str) -> str:
        if v != v.strip():
            raise ValueError(f"{v!r} does not match the pattern (no leading or trailing whitespace)")
        return v

    @field_validator("id")
    @classmethod
    def _id_pattern(cls, v: str | int | float | None) -> str | None:
        if v is None:
            return None
        text = str(v)
        if not 1 <= len(text) <= 255 or (isinstance(v, str) and not _FLAVOR_ID.match(v)):
            raise ValueError(f"{v!r} does not match '^(?! )[a-zA-Z0-9. _-]+(?<! )$'")
        return text


class FlavorUpdate(BaseModel):
    """The body of PUT /flavors/{id} (2.55+): only the description changes."""

    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(max_length=65535)


def render_brief(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    """The flavor as GET /flavors lists it."""
    out: dict[str, Any] = {"id": row["id"], "name": row["name"], "links": link(request, "flavors", row["id"])}
    if mv(request) >= (2, 55):
        out["description"] = row["description"]
    return out


def render_flavor(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    """The full flavor view at the request's microversion."""
    version = mv(request)
    swap: int | str = row["swap_mb"] if version >= (2, 75) else (row["swap_mb"] or "")
    out: dict[str, Any] = {
        "id": row["id"], "name": row["name"], "ram": row["ram_mb"], "disk": row["disk_gb"], "swap": swap,
        "OS-FLV-EXT-DATA:ephemeral": row["ephemeral_gb"], "OS-FLV-DISABLED:disabled": False,
        "vcpus": row["vcpus"], "os-flavor-access:is_public": row["is_public"],
        "rxtx_factor": float(row["rxtx_factor"] or 1.0), "links": link(request, "flavors", row["id"]),
    }
    if version >= (2, 55):
        out["description"] = row["description"]
    if version >= (2, 61):
        out["extra_specs"] = dict(row["extra_specs"] or {})
    return out


def _is_public_filter(request: Request) -> bool | None:
    if not ctx(request).is_admin:
        return True
    raw = request.query_params.get("is_public")
    if raw is None:
        return True
    low = raw.strip().lower()
    if low == "none":
        return None
    if low in ("1", "t", "true", "on", "y", "yes"):
        return True
    if low in ("0", "f", "false", "off", "n", "no"):
        return False
    raise bad_request(f"Invalid is_public filter [{raw}]")


def _min_filter(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"Invalid {name} filter [{raw}]") from None


def _list_query(request: Request, limit: int) -> tuple[Any, Any, bool]:
    args = request.query_params
    sort_col = SORT_KEYS.get(args.get("sort_key") or "flavorid")
    if sort_col is None:
        raise bad_request("Sort key supplied is invalid: " + str(args.get("sort_key")))
    sort_dir = args.get("sort_dir") or "asc"
    if sort_dir not in ("asc", "desc"):
        raise bad_request("Unknown sort direction, must be 'desc' or 'asc'")
    q = select(g.flavors)
    public = _is_public_filter(request)
    if public is not None:
        q = q.where(f.is_public.is_(public))
    for name, col in (("minRam", f.ram_mb), ("minDisk", f.disk_gb)):
        value = _min_filter(request, name)
        if value is not None:
            q = q.where(col >= value)
    desc = sort_dir == "desc"
    order = [sort_col.desc(), f.id.desc()] if desc else [sort_col.asc(), f.id.asc()]
    return q.order_by(*order).limit(limit), sort_col, desc


def _list_flavors(conn: Connection, q: Any, sort_col: Any, desc: bool, marker: str | None) -> list[dict[str, Any]]:
    if marker is not None:
        mrow = conn.execute(select(sort_col.label("k"), f.id).where(f.id == marker)).first()
        if mrow is None:
            raise bad_request(f"marker [{marker}] not found")
        after = (sort_col < mrow.k) if desc else (sort_col > mrow.k)
        tie = (f.id < mrow.id) if desc else (f.id > mrow.id)
        q = q.where(or_(after, and_(sort_col == mrow.k, tie)))
    return [dict(r) for r in conn.execute(q).mappings()]


async def _listing(request: Request, view: Any) -> Response:
    limit, marker = page_params(request, cloud_of(request).settings.api.max_page_size)
    q, sort_col, desc = _list_query(request, limit)
    rows = await cloud_of(request).dbs.global_db.read(_list_flavors, q, sort_col, desc, marker)
    body: dict[str, Any] = {"flavors": [view(request, r) for r in rows]}
    links = collection_links(request, len(rows), limit, rows[-1]["id"] if rows else None)
    if links:
        body["flavors_links"] = links
    return json_response(body)


async def list_flavors(request: Request) -> Response:
    """GET /flavors."""
    return await _listing(request, render_brief)


async def list_flavors_detail(request: Request) -> Response:
    """GET /flavors/detail."""
    return await _listing(request, render_flavor)


def _get_flavor(conn: Connection, flavor_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(g.flavors).where(f.id == flavor_id)).mappings().first()
    return dict(row) if row else None


async def load_flavor(request: Request, flavor_id: str) -> dict[str, Any]:
    """The flavor if the caller may see it (private flavors are admin-only), else 404."""
    row = await cloud_of(request).dbs.global_db.read(_get_flavor, flavor_id)
    if row is None or (not row["is_public"] and not ctx(request).is_admin):
        raise flavor_not_found(flavor_id)
    return row


async def show_flavor(request: Request) -> Response:
    """GET /flavors/{flavor_id}."""
    row = await load_flavor(request, request.path_params["flavor_id"])
    return json_response({"flavor": render_flavor(request, row)})


def _insert_flavor(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    if conn.execute(select(f.id).where(f.id == values["id"])).first():
        raise conflict(f"Flavor with ID {values['id']} already exists.")
    if conn.execute(select(f.id).where(f.name == values["name"])).first():
        raise conflict(f"Flavor with name {values['name']} already exists.")
    conn.execute(insert(g.flavors).values(**values))
    return values


async def create_flavor(request: Request) -> Response:
    """POST /flavors (admin)."""
    raw = await read_object(request, "flavor")
    if "description" in raw and mv(request) < (2, 55):
        raise bad_request("Invalid input for field/attribute flavor. Additional properties are not allowed "
                          "('description' was unexpected)")
    body = validate(FlavorCreate, raw, "flavor")
    cloud = cloud_of(request)
    values: dict[str, Any] = {
        "id": body.id or str(uuid.uuid4()), "name": body.name, "vcpus": body.vcpus, "ram_mb": body.ram,
        "disk_gb": body.disk, "ephemeral_gb": body.ephemeral, "swap_mb": body.swap,
        "rxtx_factor": repr(float(body.rxtx_factor)), "is_public": body.is_public,
        "description": body.description, "extra_specs": {}, "created_at": cloud.clock.now()}
    try:
        row = await cloud.dbs.global_db.write(_insert_flavor, values)
    except IntegrityError:
        raise conflict(f"Flavor with name {body.name} already exists.") from None
    return json_response({"flavor": render_flavor(request, row)})


def _set_description(conn: Connection, flavor_id: str, description: str | None) -> dict[str, Any]:
    if conn.execute(update(g.flavors).where(f.id == flavor_id).values(description=description)).rowcount == 0:
        raise flavor_not_found(flavor_id)
    return _get_flavor(conn, flavor_id) or {}


async def update_flavor(request: Request) -> Response:
    """PUT /flavors/{flavor_id} (2.55+, admin): change the description."""
    if mv(request) < (2, 55):
        raise ApiError(404, "The resource could not be found.")
    body = validate(FlavorUpdate, await read_object(request, "flavor"), "flavor")
    row = await cloud_of(request).dbs.global_db.write(_set_description, request.path_params["flavor_id"],
                                                      body.description)
    return json_response({"flavor": render_flavor(request, row)})


def _delete_flavor(conn: Connection, flavor_id: str) -> None:
    if conn.execute(delete(g.flavors).where(f.id == flavor_id)).rowcount == 0:
        raise flavor_not_found(flavor_id)


async def delete_flavor(request: Request) -> Response:
    """DELETE /flavors/{flavor_id} (admin)."""
    await cloud_of(request).dbs.global_db.write(_delete_flavor, request.path_params["flavor_id"])
    return empty_response(202)


async def list_access(request: Request) -> Response:
    """GET /flavors/{flavor_id}/os-flavor-access (admin): private flavors have no per-project grants yet."""
    row = await load_flavor(request, request.path_params["flavor_id"])
    if row["is_public"]:
        raise ApiError(404, "Access list not available for public flavors.")
    return json_response({"flavor_access": []})


def _check_specs(specs: Any) -> dict[str, str]:
    """Validate extra specs as Nova does: safe keys, string/number/boolean values up to 255 characters."""
    if not isinstance(specs, dict):
        raise bad_request(f"Invalid input for field/attribute extra_specs. Value: {specs!r}. "
                          f"{specs!r} is not of type 'object'")
    out: dict[str, str] = {}
    for key, value in specs.items():
        if not _SPEC_KEY.match(key):
            raise bad_request(f"Invalid input for field/attribute extra_specs. Value: {specs!r}. "
                              f"'{key}' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{{1,255}}$'")
        if not isinstance(value, str | int | float):
            raise bad_request(f"Invalid input for field/attribute {key}. Value: {value!r}. "
                              f"{value!r} is not of type 'string', 'number', 'boolean'")
        text = value if isinstance(value, str) else str(value)
        if len(text) > 255:
            raise bad_request(f"Invalid input for field/attribute {key}. Value: {text}. "
                              f"'{text}' is too long")
        out[key] = text
    return out


def _merge_specs(conn: Connection, flavor_id: str, add: dict[str, str], remove: str | None) -> dict[str, str]:
    row = conn.execute(select(f.extra_specs).where(f.id == flavor_id).with_for_update()).first()
    if row is None:
        raise flavor_not_found(flavor_id)
    specs = dict(row.extra_specs or {})
    if remove is not None:
        if remove not in specs:
            raise ApiError(404, f"Flavor {flavor_id} has no extra specs with key {remove}.")
        del specs[remove]
    specs.update(add)
    conn.execute(update(g.flavors).where(f.id == flavor_id).values(extra_specs=specs))
    return specs


async def list_specs(request: Request) -> Response:
    """GET /flavors/{flavor_id}/os-extra_specs."""
    row = await load_flavor(request, request.path_params["flavor_id"])
    return json_response({"extra_specs": dict(row["extra_specs"] or {})})


async def create_specs(request: Request) -> Response:
    """POST /flavors/{flavor_id}/os-extra_specs (admin): add or replace keys."""
    specs = _check_specs(await read_object(request, "extra_specs"))
    await cloud_of(request).dbs.global_db.write(_merge_specs, request.path_params["flavor_id"], specs, None)
    return json_response({"extra_specs": specs})


async def show_spec(request: Request) -> Response:
    """GET /flavors/{flavor_id}/os-extra_specs/{key}."""
    flavor_id, key = request.path_params["flavor_id"], request.path_params["key"]
    specs = (await load_flavor(request, flavor_id))["extra_specs"] or {}
    if key not in specs:
        raise ApiError(404, f"Flavor {flavor_id} has no extra specs with key {key}.")
    return json_response({key: specs[key]})


async def update_spec(request: Request) -> Response:
    """PUT /flavors/{flavor_id}/os-extra_specs/{key} (admin): the body is `{key: value}`."""
    key = request.path_params["key"]
    body = await read_object(request)
    if key not in body:
        raise bad_request("Request body and URI mismatch")
    if len(body) > 1:
        raise bad_request("Request body contains too many items")
    specs = _check_specs(body)
    await cloud_of(request).dbs.global_db.write(_merge_specs, request.path_params["flavor_id"], specs, None)
    return json_response(specs)


async def delete_spec(request: Request) -> Response:
    """DELETE /flavors/{flavor_id}/os-extra_specs/{key} (admin)."""
    await cloud_of(request).dbs.global_db.write(_merge_specs, request.path_params["flavor_id"], {},
                                                request.path_params["key"])
    return empty_response(202)


ROUTES: list[BaseRoute] = [
    route("/v2.1/flavors", list_flavors, ["GET"], "compute:flavors"),
    route("/v2.1/flavors", create_flavor, ["POST"], "compute:flavors:create"),
    route("/v2.1/flavors/detail", list_flavors_detail, ["GET"], "compute:flavors:detail"),
    route("/v2.1/flavors/{flavor_id}", show_flavor, ["GET"], "compute:flavors:show"),
    route("/v2.1/flavors/{flavor_id}", update_flavor, ["PUT"], "compute:flavors:update"),
    route("/v2.1/flavors/{flavor_id}", delete_flavor, ["DELETE"], "compute:flavors:delete"),
    route("/v2.1/flavors/{flavor_id}/os-flavor-access", list_access, ["GET"], "compute:flavor-access"),
    route("/v2.1/flavors/{flavor_id}/os-extra_specs", list_specs, ["GET"], "compute:flavor-specs"),
    route("/v2.1/flavors/{flavor_id}/os-extra_specs", create_specs, ["POST"], "compute:flavor-specs:create"),
    route("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}", show_spec, ["GET"], "compute:flavor-specs:show"),
    route("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}", update_spec, ["PUT"], "compute:flavor-specs:update"),
    route("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}", delete_spec, ["DELETE"], "compute:flavor-specs:delete"),
]
