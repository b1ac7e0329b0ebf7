"""Image v2 routes (Glance's shapes): versions, schemas, image records, tags, and image data."""

from __future__ import annotations

import asyncio
import errno
import uuid
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from canopy.api.errors import ApiError, bad_request, conflict, forbidden, not_found
from canopy.api.http import (
    bool_param,
    ctx,
    empty_response,
    json_response,
    page_params,
    read_json,
    read_object,
    route,
)
from canopy.api.image import schema
from canopy.clock import isotime
from canopy.context import RequestContext
from canopy.db.engine import Database
from canopy.image import members, store
from canopy.runtime import Cloud

VERSIONS = [f"v2.{n}" for n in range(16, -1, -1)]
DEFAULT_LIMIT = 25
PATCH_TYPES = ("application/openstack-images-v2.1-json-patch", "application/openstack-images-v2.0-json-patch")
LIST_PARAMS = ("limit", "marker", "sort", "sort_key", "sort_dir", "visibility", "tag", "size_min", "size_max",
               "member_status", "os_hidden", "created_at", "updated_at")


def _cloud(request: Request) -> Cloud:
    return request.app.state.cloud


def _db(request: Request) -> Database:
    return _cloud(request).dbs.global_db


def image_view(row: dict[str, Any]) -> dict[str, Any]:
    """An image as Glance shows it: base attributes, with its properties as top-level keys."""
    iid = row["id"]
    view = dict(row["properties"] or {})
    view.update({
        "id": iid, "name": row["name"], "status": row["status"], "visibility": row["visibility"],
        "protected": row["protected"], "os_hidden": False, "checksum": row["checksum"],
        "os_hash_algo": row["os_hash_algo"],
        "os_hash_value": row["os_hash_value"], "size": row["size"], "virtual_size": None,
        "min_disk": row["min_disk"], "min_ram": row["min_ram"], "disk_format": row["disk_format"],
        "container_format": row["container_format"], "owner": row["owner"], "tags": list(row["tags"] or []),
        "created_at": isotime(row["created_at"]), "updated_at": isotime(row["updated_at"]),
        "self": f"/v2/images/{iid}", "file": f"/v2/images/{iid}/file", "schema": "/v2/schemas/image",
    })
    return view


# --- versions and schemas -----------------------------------------------------------------------------------

def _versions_body(request: Request) -> dict[str, Any]:
    href = _cloud(request).settings.api.public_url.rstrip("/") + "/image/v2/"
    return {"versions": [{"id": v, "status": "CURRENT" if i == 0 else "SUPPORTED",
                          "links": [{"rel": "self", "href": href}]} for i, v in enumerate(VERSIONS)]}


async def versions_root(request: Request) -> Response:
    """GET /: the versions, as 300 Multiple Choices."""
    return json_response(_versions_body(request), status=300)


async def versions(request: Request) -> Response:
    """GET /versions."""
    return json_response(_versions_body(request))


async def get_image_schema(request: Request) -> Response:
    """GET /v2/schemas/image."""
    return json_response(schema.image_schema())


async def get_images_schema(request: Request) -> Response:
    """GET /v2/schemas/images."""
    return json_response(schema.images_schema())


def _check_policy(c: RequestContext, changes: dict[str, Any]) -> None:
    """Only admins publish images or give them to another project."""
    if changes.get("visibility") == "public" and not c.is_admin:
        raise forbidden("You are not authorized to complete publicize_image action.")
    if "owner" in changes and not c.is_admin and changes["owner"] != c.project_id:
        raise forbidden(f"You are not permitted to create images owned by '{changes['owner']}'.")


def _found(image: dict[str, Any] | None, image_id: str) -> dict[str, Any]:
    if image is None:
        raise not_found(f"No image found with ID {image_id}")
    return image


def visible(conn: Connection, c: RequestContext, image_id: str) -> dict[str, Any]:
    """The image if the caller may see it (its own, public, community, or offered to it), else 404."""
    return _found(store.get_visible_image(conn, image_id, c.project_id, c.is_admin), image_id)


def owned(conn: Connection, c: RequestContext, image_id: str) -> dict[str, Any]:
    """The image if the caller may change it: 404 when it cannot see it, 403 when it is someone else's."""
    image = visible(conn, c, image_id)
    if not c.is_admin and image["owner"] != c.project_id:
        raise forbidden(f"You are not permitted to modify image {image_id}.")
    return image


# --- image records ------------------------------------------------------------------------------------------

def _sort(qp: QueryParams) -> list[tuple[str, str]]:
    if "sort" in qp:
        if "sort_key" in qp or "sort_dir" in qp:
            raise bad_request("The 'sort' parameter cannot be combined with 'sort_key' or 'sort_dir'.")
        pairs = [p.strip().partition(":") for p in qp["sort"].split(",")]
        sort = [(k, d or "desc") for k, _, d in pairs]
    else:
        keys, dirs = qp.getlist("sort_key") or ["created_at"], qp.getlist("sort_dir") or ["desc"]
        if len(dirs) not in (1, len(keys)):
            raise bad_request("The number of sort_dir and sort_key parameters must match.")
        sort = list(zip(keys, dirs * len(keys) if len(dirs) == 1 else dirs, strict=True))
    for key, direction in sort:
        if key not in store.SORT_KEYS:
            raise bad_request(f"Invalid sort key: {key}. It should be one of: {', '.join(store.SORT_KEYS)}.")
        if direction not in ("asc", "desc"):
            raise bad_request(f"Invalid sort direction: {direction}")
    return sort


def _int_param(qp: QueryParams, name: str) -> int | None:
    raw = qp.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise bad_request(f"Invalid value for {name}: {raw}")
    return int(raw)


def _list_query(request: Request, c: RequestContext) -> tuple[store.ListQuery, str | None]:
    qp = request.query_params
    max_page = _cloud(request).settings.api.max_page_size
    limit, marker = page_params(request, max_page)
    if "limit" not in qp:
        limit = min(DEFAULT_LIMIT, max_page)
    q = store.ListQuery(project_id=c.project_id, is_admin=c.is_admin, limit=limit, sort=_sort(qp),
                        tags=qp.getlist("tag"), size_min=_int_param(qp, "size_min"),
                        size_max=_int_param(qp, "size_max"))
    q.member_status = qp.get("member_status", "accepted")
    if q.member_status not in (*members.STATUSES, "all"):
        raise bad_request(f"Invalid status value: {q.member_status}")
    q.visibility = qp.get("visibility")
    if q.visibility is not None and q.visibility not in (*store.VISIBILITIES, "all"):
        raise bad_request(f"Invalid visibility value: {q.visibility}")
    if "status" in qp and qp["status"] not in store.STATUSES:
        raise bad_request(f"Invalid status value: {qp['status']}")
    for key in store.EQUALITY_FILTERS:
        if key in qp:
            q.equals[key] = bool_param(qp[key], key) if key == "protected" else qp[key]
    q.properties = {k: v for k, v in qp.items() if k not in LIST_PARAMS and k not in store.EQUALITY_FILTERS}
    return q, marker


async def list_images(request: Request) -> Response:
    """GET /v2/images: what the caller may see, filtered, sorted (newest first) and paged by marker."""
    c = ctx(request)
    q, marker = _list_query(request, c)

    def load(conn: Connection) -> list[dict[str, Any]]:
        if marker:
            found = store.get_visible_image(conn, marker, c.project_id, c.is_admin)
            if found is None:
                raise bad_request(f"Marker {marker} could not be found.")
            q.marker = found
        return store.list_images(conn, q)

    rows = await _db(request).read(load)
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    body: dict[str, Any] = {"images": [image_view(r) for r in rows[: q.limit]], "schema": "/v2/schemas/images",
                            "first": "/v2/images" + (f"?{urlencode(params)}" if params else "")}
    if len(rows) > q.limit > 0:
        body["next"] = "/v2/images?" + urlencode([*params, ("marker", rows[q.limit - 1]["id"])])
    return json_response(body)


async def create_image(request: Request) -> Response:
    """POST /v2/images: a queued image record; keys that are not base attributes become properties."""
    c = ctx(request)
    body = await read_object(request)
    changes: dict[str, Any] = {}
    props: dict[str, str] = {}
    for key, value in body.items():
        schema.refuse_key(key)
        if key in schema.MUTABLE or key == "id":
            changes[key] = schema.check_attribute(key, value)
        elif value is not None:
            props[key] = schema.check_property(key, value)
    _check_policy(c, changes)
    now = _cloud(request).clock.now()
    record = {"id": str(uuid.uuid4()), "name": None, "owner": c.project_id, "visibility": "shared",
              "status": "queued", "container_format": None, "disk_format": None, "size": None, "checksum": None,
              "os_hash_algo": None, "os_hash_value": None, "min_disk": 0, "min_ram": 0, "protected": False,
              "tags": [], "properties": props, "created_at": now, "updated_at": now, **changes}
    row = await _db(request).write(store.create_image, record)
    if row is None:
        raise conflict(f"Image with identifier {record['id']} already exists!")
    return json_response(image_view(row), status=201)


async def get_image(request: Request) -> Response:
    """GET /v2/images/{image_id}."""
    image_id = request.path_params["image_id"]
    image = await _db(request).read_fresh(visible, ctx(request), image_id)
    return json_response(image_view(image))


def _apply_op(image: dict[str, Any], op: str, key: str, value: Any, changes: dict[str, Any]) -> None:
    schema.refuse_key(key)
    if key == "id":
        raise forbidden("Attribute 'id' is read-only.")
    props = image["properties"]
    if key in schema.MUTABLE:
        if op == "remove":
            raise forbidden(f"Attribute '{key}' is a base attribute and cannot be removed.")
        value = schema.check_attribute(key, value)
        if key in ("container_format", "disk_format") and image["status"] != "queued" and value != image[key]:
            raise forbidden(f"Attribute {key} can be only replaced for a queued image.")
        changes[key] = image[key] = value
    elif op == "add":
        props[key] = schema.check_property(key, value)
    elif key not in props:
        raise conflict(f"Property {key} does not exist.")
    elif op == "replace":
        props[key] = schema.check_property(key, value)
    else:
        del props[key]


async def update_image(request: Request) -> Response:
    """PATCH /v2/images/{image_id}: a JSON patch of add, replace and remove on attributes and properties."""
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media not in PATCH_TYPES:
        raise ApiError(415, f"Unsupported Content-Type; use {PATCH_TYPES[0]}")
    c, image_id = ctx(request), request.path_params["image_id"]
    ops = schema.patch_ops(await read_json(request), draft10=media == PATCH_TYPES[1])
    now = _cloud(request).clock.now()

    def apply(conn: Connection) -> dict[str, Any] | None:
        image = owned(conn, c, image_id)
        image["properties"] = dict(image["properties"] or {})
        changes: dict[str, Any] = {}
        for op, key, value in ops:
            _apply_op(image, op, key, value, changes)
        _check_policy(c, changes)
        return store.save_image(conn, image_id, {**changes, "properties": image["properties"], "updated_at": now})

    return json_response(image_view(_found(await _db(request).write(apply), image_id)))


async def delete_image(request: Request) -> Response:
    """DELETE /v2/images/{image_id}: the record and its data; a protected image is refused."""
    c, image_id = ctx(request), request.path_params["image_id"]
    now = _cloud(request).clock.now()

    def remove(conn: Connection) -> None:
        image = owned(conn, c, image_id)
        if image["protected"]:
            raise forbidden(f"Image {image_id} is protected and cannot be deleted.")
        store.delete_image(conn, image_id, now)

    await _db(request).write(remove)
    store.remove_data(_cloud(request).image_dir, image_id)
    return empty_response(204)


async def tag(request: Request) -> Response:
    """PUT and DELETE /v2/images/{image_id}/tags/{tag}."""
    c, image_id, name = ctx(request), request.path_params["image_id"], request.path_params["tag"]
    now = _cloud(request).clock.now()

    def apply(conn: Connection) -> None:
        tags = list(owned(conn, c, image_id)["tags"] or [])
        if request.method == "PUT":
            tags = schema.check_attribute("tags", [*tags, name])
        elif name in tags:
            tags.remove(name)
        else:
            raise not_found(f"Tag {name} not found on image {image_id}.")
        store.save_image(conn, image_id, {"tags": tags, "updated_at": now})

    await _db(request).write(apply)
    return empty_response(204)


# --- image data ---------------------------------------------------------------------------------------------

async def upload(request: Request) -> Response:
    """PUT /v2/images/{image_id}/file: stream the body into the store; queued → saving → active."""
    ctype = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    if ctype != "application/octet-stream":
        raise ApiError(415, f"Content-Type {ctype} is not supported; use application/octet-stream")
    cloud, c, image_id = _cloud(request), ctx(request), request.path_params["image_id"]

    def begin(conn: Connection) -> None:
        image = owned(conn, c, image_id)
        if image["container_format"] is None or image["disk_format"] is None:
            raise bad_request("Properties container_format, disk_format must be set prior to saving data.")
        blocked = store.start_upload(conn, image_id, cloud.clock.now())
        if blocked is not None:
            raise conflict(f"Image status transition from {blocked} to saving is not allowed")

    db = _db(request)
    await db.write(begin)
    writer = store.DataWriter(cloud.image_dir, image_id)
    try:
        async for chunk in request.stream():
            writer.write(chunk)
        size, md5, sha512 = await asyncio.to_thread(writer.commit)
    except BaseException as exc:
        writer.discard()
        await db.write(store.abort_upload, image_id, cloud.clock.now())
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise ApiError(413, "Image storage media is full") from None
        if isinstance(exc, ClientDisconnect):
            raise ApiError(400, "The client disconnected before the upload finished.") from None
        raise
    if not await db.write(store.finish_upload, image_id, size, md5, sha512, cloud.clock.now()):
        store.remove_data(cloud.image_dir, image_id)
        raise ApiError(410, f"Image {image_id} could not be found after upload. "
                            "The image may have been deleted during the upload.")
    return empty_response(204)


async def download(request: Request) -> Response:
    """GET /v2/images/{image_id}/file: the data, streamed, with its md5 as Content-MD5; 204 when there is none."""
    cloud, c, image_id = _cloud(request), ctx(request), request.path_params["image_id"]
    image = await _db(request).read_fresh(visible, c, image_id)
    if image["status"] == "deactivated" and not c.is_admin:
        raise forbidden("The requested image has been deactivated. Image data download is forbidden.")
    path = store.data_path(cloud.image_dir, image_id)
    if image["status"] not in ("active", "deactivated") or not path.is_file():
        return empty_response(204)
    headers = {"Content-Length": str(path.stat().st_size)}
    if image["checksum"]:
        headers["Content-MD5"] = image["checksum"]
    return StreamingResponse(store.read_data(path), media_type="application/octet-stream", headers=headers)


ROUTES: list[BaseRoute] = [
    route("/", versions_root, ["GET"], "image:versions_root"),
    route("/versions", versions, ["GET"], "image:versions"),
    route("/v2/schemas/image", get_image_schema, ["GET"], "image:schema_image"),
    route("/v2/schemas/images", get_images_schema, ["GET"], "image:schema_images"),
    route("/v2/images", list_images, ["GET"], "image:list_images"),
    route("/v2/images", create_image, ["POST"], "image:create_image"),
    route("/v2/images/{image_id}", get_image, ["GET"], "image:get_image"),
    route("/v2/images/{image_id}", update_image, ["PATCH"], "image:update_image"),
    route("/v2/images/{image_id}", delete_image, ["DELETE"], "image:delete_image"),
    route("/v2/images/{image_id}/tags/{tag}", tag, ["PUT", "DELETE"], "image:tag"),
    route("/v2/images/{image_id}/file", upload, ["PUT"], "image:upload"),
    route("/v2/images/{image_id}/file", download, ["GET"], "image:download"),
]


def is_public(method: str, path: str) -> bool:
    return method == "GET" and path in ("/", "/versions")


def streams_body(method: str, path: str) -> bool:
    """Whether a request's body is image data, streamed to the store (its own size limit, not JSON's)."""
    return method == "PUT" and path.endswith("/file")
