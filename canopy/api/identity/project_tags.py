"""Identity v3 project tags (Keystone's): `/v3/projects/{project_id}/tags[/{tag}]` — list, replace, check,
add, delete one, delete all — and the tag filters of the project list (`tags`, `tags-any`, `not-tags`,
`not-tags-any`, canopy/api/identity/tags.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.errors import bad_request, not_found
from canopy.api.http import empty_response, json_response, read_object, route
from canopy.api.identity import store
from canopy.api.identity.admin import _base, _missing, _read, _write, domain_limit
from canopy.api.identity.tags import MAX_TAGS, check_tag, check_tags, set_tags, tags_of
from canopy.db import tables_global as g


def _project(request: Request, conn: Connection) -> dict[str, Any]:
    """The path's project, if the caller may reach it (a domain's admin: its own domain only)."""
    project_id = request.path_params["project_id"]
    found = store.find_project(conn, project_id=project_id)
    limit = domain_limit(request)
    if found is None or (limit is not None and found["domain_id"] != limit):
        raise _missing("project", project_id)
    return found


async def list_tags(request: Request) -> Response:
    """GET /v3/projects/{project_id}/tags."""
    def load(conn: Connection) -> list[str]:
        return tags_of(conn, [_project(request, conn)["id"]])[request.path_params["project_id"]]

    return json_response({"tags": await _read(request, load)})


async def replace_tags(request: Request) -> Response:
    """PUT /v3/projects/{project_id}/tags: `{"tags": [...]}` replaces them all."""
    tags = check_tags((await read_object(request)).get("tags"))

    def apply(conn: Connection) -> None:
        set_tags(conn, _project(request, conn)["id"], tags)

    await _write(request, apply)
    return json_response({"tags": sorted(tags)})


async def check_one(request: Request) -> Response:
    """GET (HEAD) /v3/projects/{project_id}/tags/{tag}: 204 when the project has it, else 404."""
    tag = request.path_params["tag"]

    def load(conn: Connection) -> bool:
        return tag in tags_of(conn, [_project(request, conn)["id"]])[request.path_params["project_id"]]

    if not await _read(request, load):
        raise not_found(f"Could not find project tag: {tag}.")
    return empty_response(204)


async def add_one(request: Request) -> Response:
    """PUT /v3/projects/{project_id}/tags/{tag}: 201 with its Location (idempotent)."""
    tag = check_tag(request.path_params["tag"])

    def apply(conn: Connection) -> None:
        project_id = _project(request, conn)["id"]
        current = tags_of(conn, [project_id])[project_id]
        if tag not in current:
            if len(current) >= MAX_TAGS:
                raise bad_request(f"Invalid input for field 'tag': at most {MAX_TAGS} tags per project")
            conn.execute(insert(g.project_tags).values(project_id=project_id, tag=tag))

    await _write(request, apply)
    location = f"{_base(request)}/projects/{request.path_params['project_id']}/tags/{tag}"
    return empty_response(201, headers={"Location": location})


async def delete_one(request: Request) -> Response:
    """DELETE /v3/projects/{project_id}/tags/{tag}."""
    tag = request.path_params["tag"]

    def apply(conn: Connection) -> bool:
        project_id = _project(request, conn)["id"]
        t = g.project_tags.c
        return conn.execute(delete(g.project_tags).where(t.project_id == project_id, t.tag == tag)).rowcount > 0

    if not await _write(request, apply):
        raise not_found(f"Could not find project tag: {tag}.")
    return empty_response(204)


async def delete_all(request: Request) -> Response:
    """DELETE /v3/projects/{project_id}/tags."""
    await _write(request, lambda conn: set_tags(conn, _project(request, conn)["id"], []))
    return empty_response(204)


ROUTES: list[BaseRoute] = [
    route("/v3/projects/{project_id}/tags", list_tags, ["GET"], "identity:list_project_tags"),
    route("/v3/projects/{project_id}/tags", replace_tags, ["PUT"], "identity:update_project_tags"),
    route("/v3/projects/{project_id}/tags", delete_all, ["DELETE"], "identity:delete_project_tags"),
    route("/v3/projects/{project_id}/tags/{tag}", check_one, ["GET", "HEAD"], "identity:get_project_tag"),
    route("/v3/projects/{project_id}/tags/{tag}", add_one, ["PUT"], "identity:add_project_tag"),
    route("/v3/projects/{project_id}/tags/{tag}", delete_one, ["DELETE"], "identity:delete_project_tag"),
]
