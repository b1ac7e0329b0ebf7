"""Network v2.0 routes."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []


def is_public(method: str, path: str) -> bool:
    return method == "GET" and path in ("/", "/v2.0", "/v2.0/")
