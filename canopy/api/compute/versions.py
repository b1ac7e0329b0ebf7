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


async def versions(request: Request) -> Response:
    return json_response({"versions": [v21_document(_base(request))]})


async def version_v21(request: Request) -> Response:
    return json_response({"version": v21_document(_base(request))})
