"""The test-time response validator: every response an ApiClient receives is checked against its route's
schema (canopy/api/schemas/registry.py) — a missing or mistyped field fails the request that got it — and
every error against its service's error shape. Routes without a schema are recorded in UNCHECKED."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import orjson
from starlette.routing import Match, Route

from canopy.api.schemas.base import Version
from canopy.api.schemas.registry import check_response, has_schema

UNCHECKED: set[str] = set()  # routes answered in this run that have no response schema
SERVICES = ("identity", "compute", "network", "image")
MAX_COMPUTE = (2, 87)


@functools.cache
def _routes() -> dict[str, list[Route]]:
    from canopy.api import compute, identity, image, network

    return {"identity": identity.service().routes, "compute": compute.service().routes,
            "network": network.service().routes, "image": image.service().routes}


def route_of(method: str, path: str) -> tuple[str, str] | None:
    """(service, route name) of a request path, as the app would dispatch it; None for no route."""
    service, _, rest = path.lstrip("/").partition("/")
    if service not in SERVICES:
        return None
    scope = {"type": "http", "method": method, "path": "/" + rest}
    for route in _routes()[service]:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return service, route.name
    return None


def microversion(headers: httpx.Headers) -> Version:
    """The compute microversion a request asked for (2.1 when none)."""
    raw = headers.get("openstack-api-version", "")
    value = raw.split()[-1] if raw.lower().startswith("compute ") else headers.get("x-openstack-nova-api-version")
    if not value:
        return (2, 1)
    if value == "latest":
        return MAX_COMPUTE
    major, _, minor = value.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return (2, 1)  # a malformed version: the answer is an error, checked as one
    return int(major), int(minor)


async def check(response: httpx.Response) -> None:
    """httpx response hook: fail on a body that does not match its route's schema."""
    request = response.request
    found = route_of(request.method, request.url.path)
    if found is None or request.method == "HEAD":  # HEAD answers carry no body
        return
    service, name = found
    await response.aread()
    body: Any = None
    if response.content and "json" in response.headers.get("content-type", ""):
        body = orjson.loads(response.content)
    elif response.content and name != "image:download":
        body = response.content
    if not has_schema(name):
        UNCHECKED.add(name)
    problem = check_response(service, name, response.status_code, body,
                             mv=microversion(request.headers) if service == "compute" else None,
                             fields="fields" in request.url.params)
    if problem:
        raise AssertionError(f"{request.method} {request.url.path}: response does not conform: {problem}")
