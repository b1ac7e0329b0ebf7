"""Compute API microversions: parse the request's version, refuse one above the maximum (406), and let
handlers ask `mv(request) >= (2, 47)`."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from canopy.api.errors import ApiError

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 87)
_VERSION = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


def format_version(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def parse_requested(headers: dict[str, str]) -> tuple[int, int]:
    """The microversion a request asks for (2.1 when it names none)."""
    raw = None
    new = headers.get("openstack-api-version")
    if new:
        for part in new.split(","):
            service, _, value = part.strip().partition(" ")
            if service.lower() == "compute":
                raw = value.strip()
    if raw is None:
        raw = headers.get("x-openstack-nova-api-version")
    if not raw:
        return MIN_VERSION
    if raw.lower() == "latest":
        return MAX_VERSION
    m = _VERSION.match(raw.strip())
    if not m:
        raise ApiError(400, f"API Version String {raw} is of invalid format. Must be of format MajorNum.MinorNum.")
    version = (int(m.group(1)), int(m.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ApiError(406, f"Version {raw} is not supported by the API. Minimum is {format_version(MIN_VERSION)} "
                            f"and maximum is {format_version(MAX_VERSION)}.")
    return version


def prepare(scope: Any) -> dict[str, str]:
    """Middleware hook: settle the version for a versioned path and return the headers to answer with."""
    path = scope["path"][len(scope.get("root_path", "")):]
    if not path.startswith("/v2.1/") or path == "/v2.1/":
        scope["canopy.mv"] = MIN_VERSION
        return {}
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
    version = parse_requested(headers)
    scope["canopy.mv"] = version
    text = format_version(version)
    return {"OpenStack-API-Version": f"compute {text}", "X-OpenStack-Nova-API-Version": text,
            "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version"}


def mv(request: Request) -> tuple[int, int]:
    """The microversion this request is served at."""
    return request.scope.get("canopy.mv", MIN_VERSION)
