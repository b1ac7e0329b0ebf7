"""Project tags: their checks (1-255 characters without `/` or `,`, at most 80 a project), storage, and
Keystone's four tag filters of the project list."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from starlette.requests import Request

from canopy.api.errors import bad_request
from canopy.db import tables_global as g

MAX_TAGS = 80
MAX_TAG_LENGTH = 255


def check_tags(tags: Any, field: str = "tags") -> list[str]:
    """The tags of a body, checked: a list of at most 80 distinct strings of 1-255 characters, no `/` or `,`."""
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise bad_request(f"Invalid input for field '{field}': {tags!r} is not an array of strings")
    if len(tags) > MAX_TAGS:
        raise bad_request(f"Invalid input for field '{field}': at most {MAX_TAGS} tags per project")
    for tag in tags:
        check_tag(tag, field)
    return list(dict.fromkeys(tags))


def check_tag(tag: str, field: str = "tag") -> str:
    """One tag, checked."""
    if not 1 <= len(tag) <= MAX_TAG_LENGTH or "/" in tag or "," in tag:
        raise bad_request(f"Invalid input for field '{field}': {tag!r} must be 1-{MAX_TAG_LENGTH} characters "
                          "without '/' or ','")
    return tag


def tags_of(conn: Connection, project_ids: Iterable[str]) -> dict[str, list[str]]:
    """The tags of each project, in one query."""
    ids = list(project_ids)
    out: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        t = g.project_tags.c
        for row in conn.execute(select(t.project_id, t.tag).where(t.project_id.in_(ids)).order_by(t.tag)):
            out[row.project_id].append(row.tag)
    return out


def set_tags(conn: Connection, project_id: str, tags: list[str]) -> None:
    """Replace a project's tags."""
    conn.execute(delete(g.project_tags).where(g.project_tags.c.project_id == project_id))
    if tags:
        conn.execute(insert(g.project_tags), [{"project_id": project_id, "tag": t} for t in tags])


def with_tags(conn: Connection, projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The projects with their `tags`."""
    found = tags_of(conn, [p["id"] for p in projects])
    return [{**p, "tags": found[p["id"]]} for p in projects]


def tag_filter(request: Request) -> dict[str, list[str]]:
    """The project list's tag filters from the query string (comma-separated lists), checked."""
    q = request.query_params
    return {name: [check_tag(t, name) for t in q[name].split(",")]
            for name in ("tags", "tags-any", "not-tags", "not-tags-any") if q.get(name)}


def matches(tags: list[str], wanted: dict[str, list[str]]) -> bool:
    """Whether a project's tags pass Keystone's four tag filters."""
    have = set(tags)
    if "tags" in wanted and not set(wanted["tags"]) <= have:
        return False
    if "tags-any" in wanted and not have & set(wanted["tags-any"]):
        return False
    if "not-tags" in wanted and set(wanted["not-tags"]) <= have:
        return False
    return not ("not-tags-any" in wanted and have & set(wanted["not-tags-any"]))


