"""Server tags (2.26+): `/servers/{id}/tags` list, replace, delete all; `/tags/{tag}` check, add, delete.
Nova's limits: at most 50 tags per server, each 1-60 characters without '/' or ','."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, update
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.common import cell_db, check_unlocked, cloud_of, load_visible_instance
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, empty_response, json_response, read_object, route
from canopy.db import tables_cell as c

MAX_TAGS = 50
MAX_TAG_LENGTH = 60


def check_tag(tag: Any, field: str = "tags") -> str:
    """A tag as Nova's schema allows it, else 400 naming it."""
    if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_LENGTH or "/" in tag or "," in tag:
        raise bad_request(f"Invalid input for field/attribute {field}. Value: {tag!r}. A tag must be a string of "
                          f"1-{MAX_TAG_LENGTH} characters without '/' or ','.")
    return tag


def check_tags(tags: Any) -> list[str]:
    """A list of tags (duplicates dropped, order kept), at most MAX_TAGS."""
    if not isinstance(tags, list):
        raise bad_request(f"Invalid input for field/attribute tags. Value: {tags!r}. It is not of type 'array'")
    unique = list(dict.fromkeys(check_tag(t) for t in tags))
    if len(unique) > MAX_TAGS:
        raise bad_request(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
    return unique


def _require_version(request: Request) -> None:
    if mv(request) < (2, 26):
        raise ApiError(404, "The resource could not be found.")


async def _read_tags(request: Request) -> list[str]:
    _require_version(request)
    uuid, rc = request.path_params["server_id"], ctx(request)
    inst = await cell_db(request).read(load_visible_instance, uuid, rc.project_id, rc.is_admin)
    return list(inst["tags"] or [])


async def _change(request: Request, change: Callable[[list[str]], list[str]]) -> list[str]:
    """Apply `change` to the server's tags in one write (a locked server refuses its owner)."""
    _require_version(request)
    uuid, rc, now = request.path_params["server_id"], ctx(request), cloud_of(request).clock.now()

    def write(conn: Connection) -> list[str]:
        inst = load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        check_unlocked(inst, rc.is_admin)
        tags = change(list(inst["tags"] or []))
        if len(tags) > MAX_TAGS:
            raise bad_request(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
        conn.execute(update(c.instances).where(c.instances.c.uuid == uuid).values(tags=tags, updated_at=now))
        return tags

    return await cell_db(request).write(write)


async def list_tags(request: Request) -> Response:
    return json_response({"tags": await _read_tags(request)})


async def replace_tags(request: Request) -> Response:
    body = await read_object(request)
    if set(body) != {"tags"}:
        raise bad_request("Invalid input for field/attribute tags. 'tags' is a required property")
    tags = check_tags(body["tags"])
    return json_response({"tags": await _change(request, lambda _: tags)})


async def delete_all_tags(request: Request) -> Response:
    await _change(request, lambda _: [])
    return empty_response(204)


async def check_tag_exists(request: Request) -> Response:
    tag = request.path_params["tag"]
    if tag not in await _read_tags(request):
        raise ApiError(404, f"Tag {tag} could not be found.")
    return empty_response(204)


async def add_tag(request: Request) -> Response:
    """201 with a Location when the tag is new, 204 when the server had it already (as Nova)."""
    tag = check_tag(request.path_params["tag"], "tag")
    had: list[bool] = []

    def add(tags: list[str]) -> list[str]:
        had.append(tag in tags)
        return tags if tag in tags else [*tags, tag]

    await _change(request, add)
    if had[0]:
        return empty_response(204)
    return empty_response(201, headers={"Location": str(request.url)})


async def delete_tag(request: Request) -> Response:
    tag = request.path_params["tag"]

    def drop(tags: list[str]) -> list[str]:
        if tag not in tags:
            raise ApiError(404, f"Tag {tag} could not be found.")
        return [t for t in tags if t != tag]

    await _change(request, drop)
    return empty_response(204)


ROUTES = [
    route("/v2.1/servers/{server_id}/tags", list_tags, ["GET"], "compute:server_tags:index"),
    route("/v2.1/servers/{server_id}/tags", replace_tags, ["PUT"], "compute:server_tags:update_all"),
    route("/v2.1/servers/{server_id}/tags", delete_all_tags, ["DELETE"], "compute:server_tags:delete_all"),
    route("/v2.1/servers/{server_id}/tags/{tag}", check_tag_exists, ["GET"], "compute:server_tags:show"),
    route("/v2.1/servers/{server_id}/tags/{tag}", add_tag, ["PUT"], "compute:server_tags:update"),
    route("/v2.1/servers/{server_id}/tags/{tag}", delete_tag, ["DELETE"], "compute:server_tags:delete"),
]
