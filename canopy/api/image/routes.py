"""Image v2 routes."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []


def is_public(method: str, path: str) -> bool:
    return method == "GET" and path in ("/", "/versions")
