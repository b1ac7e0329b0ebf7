"""Image v2 members (Glance's shapes): a shared image offered to other projects, each accepting or rejecting
it; deactivate and reactivate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError, bad_request, conflict, forbidden, not_found
from canopy.api.http import ctx, empty_response, json_response, read_object, require_admin, route
from canopy.api.image.routes import owned, visible
from canopy.context import RequestContext
from canopy.db.engine import Database
from canopy.image import members, store
from canopy.runtime import Cloud

MAX_MEMBERS = 128  # Glance's image_member_quota


def _cloud(request: Request) -> Cloud:
    return request.app.state.cloud


def _db(request: Request) -> Database:
    return _cloud(request).dbs.global_db


def _member_id(body: dict[str, Any]) -> str:
    value = body.get("member")
    if not isinstance(value, str) or not 0 < len(value) <= 255 or set(body) != {"member"}:
        raise bad_request("Provided object does not match schema 'member': 'member' is a required string of "
                          "at most 255 characters")
    return value


# Keys of the member schema a client may echo back in an update (openstacksdk does); only status changes.
ECHOED = frozenset({"status", "member_id", "image_id", "created_at", "updated_at", "schema", "member"})


def _status(body: dict[str, Any]) -> str:
    value = body.get("status")
    unknown = sorted(set(body) - ECHOED)
    if unknown:
        raise bad_request(f"Provided object does not match schema 'member': unexpected attributes {unknown}")
    if value not in members.STATUSES:
        raise bad_request(f"Provided object does not match schema 'member': {value!r} is not one of "
                          f"{list(members.STATUSES)} (attribute 'status')")
    return str(value)


def _missing(image_id: str, member_id: str) -> ApiError:
    return not_found(f"Member {member_id} not found for image {image_id}.")


def _readable(conn: Connection, c: RequestContext, image_id: str, member_id: str | None) -> dict[str, Any]:
    """The image, if the caller may read its members: the owner (or an admin) all, a member its own."""
    image = visible(conn, c, image_id)
    if image["visibility"] != "shared":
        raise forbidden("Only shared images have members.")
    if not c.is_admin and image["owner"] != c.project_id and member_id not in (None, c.project_id):
        raise _missing(image_id, member_id or "")
    return image


async def create_member(request: Request) -> Response:
    """POST /v2/images/{image_id}/members: offer a shared image to a project (owner only)."""
    c, image_id = ctx(request), request.path_params["image_id"]
    member_id = _member_id(await read_object(request))
    now = _cloud(request).clock.now()

    def add(conn: Connection) -> dict[str, Any]:
        if owned(conn, c, image_id)["visibility"] != "shared":
            raise forbidden("Only shared images have members.")
        if members.count_members(conn, image_id) >= MAX_MEMBERS:
            raise ApiError(413, f"The limit has been exceeded on the number of allowed image members for this "
                                f"image. Attempted: {MAX_MEMBERS + 1}, Maximum: {MAX_MEMBERS}")
        row = members.add_member(conn, image_id, member_id, now)
        if row is None:
            raise conflict(f"The target member {member_id} is already associated with image {image_id}.")
        return row

    return json_response(members.member_view(await _db(request).write(add)))


async def list_members(request: Request) -> Response:
    """GET /v2/images/{image_id}/members: the owner sees every member, a member only itself."""
    c, image_id = ctx(request), request.path_params["image_id"]

    def load(conn: Connection) -> list[dict[str, Any]]:
        image = _readable(conn, c, image_id, None)
        mine = None if c.is_admin or image["owner"] == c.project_id else c.project_id
        return members.list_members(conn, image_id, mine)

    rows = await _db(request).read_fresh(load)
    return json_response({"members": [members.member_view(r) for r in rows], "schema": "/v2/schemas/members"})


async def show_member(request: Request) -> Response:
    """GET /v2/images/{image_id}/members/{member_id}."""
    c, image_id, member_id = ctx(request), request.path_params["image_id"], request.path_params["member_id"]

    def load(conn: Connection) -> dict[str, Any]:
        _readable(conn, c, image_id, member_id)
        row = members.get_member(conn, image_id, member_id)
        if row is None:
            raise _missing(image_id, member_id)
        return row

    return json_response(members.member_view(await _db(request).read_fresh(load)))


async def update_member(request: Request) -> Response:
    """PUT /v2/images/{image_id}/members/{member_id}: the member (only it) accepts, rejects or defers."""
    c, image_id, member_id = ctx(request), request.path_params["image_id"], request.path_params["member_id"]
    status = _status(await read_object(request))
    now = _cloud(request).clock.now()

    def answer(conn: Connection) -> dict[str, Any]:
        _readable(conn, c, image_id, member_id)
        if member_id != c.project_id and not c.is_admin:
            raise forbidden(f"You are not permitted to modify 'status' on this image member ({member_id}).")
        row = members.set_status(conn, image_id, member_id, status, now)
        if row is None:
            raise _missing(image_id, member_id)
        return row

    return json_response(members.member_view(await _db(request).write(answer)))


async def delete_member(request: Request) -> Response:
    """DELETE /v2/images/{image_id}/members/{member_id}: the owner withdraws the offer."""
    c, image_id, member_id = ctx(request), request.path_params["image_id"], request.path_params["member_id"]

    def remove(conn: Connection) -> None:
        image = _readable(conn, c, image_id, member_id)
        if not c.is_admin and image["owner"] != c.project_id:
            raise forbidden(f"You are not permitted to delete member {member_id} of image {image_id}.")
        if not members.remove_member(conn, image_id, member_id):
            raise _missing(image_id, member_id)

    await _db(request).write(remove)
    return empty_response(204)


def _transition(action: str, old: str, new: str) -> Any:
    async def handler(request: Request) -> Response:
        c, image_id = require_admin(request), request.path_params["image_id"]
        now = _cloud(request).clock.now()

        def move(conn: Connection) -> None:
            image = visible(conn, c, image_id)
            if image["status"] == new:
                return  # already there: Glance answers 204 again
            if image["status"] != old or not store.set_status(conn, image_id, old, new, now):
                raise forbidden(f"Not allowed to {action} image in status '{image['status']}'")

        await _db(request).write(move)
        return empty_response(204)

    handler.__doc__ = f"POST /v2/images/{{image_id}}/actions/{action} (admin): {old} → {new}."
    return handler


ROUTES = [
    route("/v2/images/{image_id}/members", list_members, ["GET"], "image:list_members"),
    route("/v2/images/{image_id}/members", create_member, ["POST"], "image:create_member"),
    route("/v2/images/{image_id}/members/{member_id}", show_member, ["GET"], "image:get_member"),
    route("/v2/images/{image_id}/members/{member_id}", update_member, ["PUT"], "image:update_member"),
    route("/v2/images/{image_id}/members/{member_id}", delete_member, ["DELETE"], "image:delete_member"),
    route("/v2/images/{image_id}/actions/deactivate", _transition("deactivate", "active", "deactivated"), ["POST"],
          "image:deactivate"),
    route("/v2/images/{image_id}/actions/reactivate", _transition("reactivate", "deactivated", "active"), ["POST"],
          "image:reactivate"),
]
