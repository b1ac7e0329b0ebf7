"""Compute version discovery: `GET /compute/` and `GET /compute/v2.1`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.microversion import MAX_VERSION, MIN_VERSION, format_version
from canopy.api.http import json_response

UPDATED = "2013-07-23T11:33:21Z"


def _base(request: Request) -> str:
    return request.app.state.cloud.settings.api.public_url.rstrip("/") + "/compute"


def v21_document(base: str) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": format_version(MAX_VERSION),
        "min_version": format_version(MIN_VERSION),
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{base}/v2.1/"},
                  {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    }


def v20_document(base: str) -> dict[str, Any]:
    """The legacy v2.0 entry Nova lists first (clients pick by id; it has no microversions)."""
    return {
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base}/v2/"}],
    }


async def versions(request: Request) -> Response:
    """`GET /compute/`: v2.0 then v2.1, in Nova's order."""
    base = _base(request)
    return json_response({"versions": [v20_document(base), v21_document(base)]})


async def version_v21(request: Request) -> Response:
    return json_response({"version": v21_document(_base(request))})
