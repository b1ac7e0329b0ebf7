"""The Compute API's images proxy (`/v2.1/images`: list, detail, show, delete), deprecated by Nova at
2.36 (404 from there on, as Nova) but still used by older clients. It reads the Image API's store and
shows images in Nova's shape: status ACTIVE/SAVING/DELETED/ERROR, minDisk, minRam, metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute.common import cloud_of
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request, forbidden
from canopy.api.http import ctx, empty_response, json_response, page_params, route
from canopy.clock import isotime
from canopy.image import store

MAX_PROXY_VERSION = (2, 35)
# Glance status → (Nova's status, progress)
_STATUS = {"active": ("ACTIVE", 100), "queued": ("SAVING", 25), "saving": ("SAVING", 50),
           "importing": ("SAVING", 50), "uploading": ("SAVING", 50), "deleted": ("DELETED", 0),
           "pending_delete": ("DELETED", 0), "killed": ("ERROR", 0), "deactivated": ("ERROR", 0)}


def _check_version(request: Request) -> None:
    if mv(request) > MAX_PROXY_VERSION:
        raise ApiError(404, "The resource could not be found.")


def _links(request: Request, image_id: str) -> list[dict[str, str]]:
    base = cloud_of(request).settings.api.public_url.rstrip("/")
    return [{"rel": "self", "href": f"{base}/compute/v2.1/images/{image_id}"},
            {"rel": "bookmark", "href": f"{base}/compute/images/{image_id}"},
            {"rel": "alternate", "type": "application/vnd.openstack.image",
             "href": f"{base}/image/v2/images/{image_id}"}]


def render_image(request: Request, image: dict[str, Any]) -> dict[str, Any]:
    """One image in Nova's detailed shape."""
    status, progress = _STATUS.get(image["status"], ("UNKNOWN", 0))
    props = image["properties"] or {}
    body: dict[str, Any] = {
        "id": image["id"], "name": image["name"], "status": status, "progress": progress,
        "minDisk": image["min_disk"], "minRam": image["min_ram"], "created": isotime(image["created_at"]),
        "updated": isotime(image["updated_at"]), "OS-EXT-IMG-SIZE:size": image["size"],
        "metadata": {k: str(v) for k, v in props.items()}, "links": _links(request, image["id"])}
    if props.get("instance_uuid"):
        base = cloud_of(request).settings.api.public_url.rstrip("/")
        uuid = props["instance_uuid"]
        body["server"] = {"id": uuid, "links": [{"rel": "self", "href": f"{base}/compute/v2.1/servers/{uuid}"},
                                                {"rel": "bookmark", "href": f"{base}/compute/servers/{uuid}"}]}
    return body


async def _list(request: Request) -> list[dict[str, Any]]:
    _check_version(request)
    rc, cloud = ctx(request), cloud_of(request)
    limit, marker = page_params(request, cloud.settings.api.max_page_size)
    marker_row = await cloud.dbs.global_db.read(store.get_image, marker) if marker else None
    if marker and (marker_row is None or not store.is_visible(marker_row, rc.project_id, rc.is_admin)):
        raise bad_request(f"marker [{marker}] not found")
    q = store.ListQuery(project_id=rc.project_id, is_admin=rc.is_admin, limit=limit, marker=marker_row)
    name = request.query_params.get("name")
    if name:
        q.equals["name"] = name
    status = request.query_params.get("status")
    if status:
        q.equals["status"] = {"ACTIVE": "active", "SAVING": "saving"}.get(status.upper(), status.lower())
    rows = await cloud.dbs.global_db.read(store.list_images, q)
    return rows[:limit]


async def list_images(request: Request) -> Response:
    """GET /images: id, name and links."""
    rows = await _list(request)
    return json_response({"images": [{"id": r["id"], "name": r["name"], "links": _links(request, r["id"])}
                                     for r in rows]})


async def list_images_detail(request: Request) -> Response:
    """GET /images/detail."""
    return json_response({"images": [render_image(request, r) for r in await _list(request)]})


async def _visible(request: Request) -> dict[str, Any]:
    _check_version(request)
    rc, image_id = ctx(request), request.path_params["image_id"]
    image = await cloud_of(request).dbs.global_db.read(store.get_image, image_id)
    if image is None or not store.is_visible(image, rc.project_id, rc.is_admin):
        raise ApiError(404, "Image not found.")
    return image


async def show_image(request: Request) -> Response:
    """GET /images/{id}."""
    return json_response({"image": render_image(request, await _visible(request))})


async def delete_image(request: Request) -> Response:
    """DELETE /images/{id}: as the Image API's delete (the owner or an admin; protected images refused)."""
    image, rc, cloud = await _visible(request), ctx(request), cloud_of(request)
    if not rc.is_admin and image["owner"] != rc.project_id:
        raise forbidden(f"You are not allowed to delete image {image['id']}.")
    if image["protected"]:
        raise forbidden(f"Image {image['id']} is protected and cannot be deleted.")

    def remove(conn: Connection) -> None:
        store.delete_image(conn, image["id"])

    await cloud.dbs.global_db.write(remove)
    store.remove_data(cloud.image_dir, image["id"])
    return empty_response(204)


ROUTES: list[BaseRoute] = [
    route("/v2.1/images", list_images, ["GET"], "compute:images:index"),
    route("/v2.1/images/detail", list_images_detail, ["GET"], "compute:images:detail"),
    route("/v2.1/images/{image_id}", show_image, ["GET"], "compute:images:show"),
    route("/v2.1/images/{image_id}", delete_image, ["DELETE"], "compute:images:delete"),
]
