"""Image v2 discovery (Glance's shapes): import methods and stores, the member schemas, and the metadata
definitions catalog this cloud does not serve (a clear 404)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import not_found
from canopy.api.http import json_response, route
from canopy.image.members import STATUSES

UUID_PATTERN = ("^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$")
STORE = {"id": "local", "description": "Image data in the API's image folder", "default": True}


def member_schema() -> dict[str, Any]:
    """The JSON schema of an image member, as Glance publishes it."""
    text = {"type": "string"}
    return {"name": "member", "properties": {
        "created_at": {**text, "description": "Date and time of image member creation"},
        "image_id": {**text, "pattern": UUID_PATTERN, "description": "An identifier for the image"},
        "member_id": {**text, "description": "An identifier for the image member (tenantId)"},
        "schema": {**text, "readOnly": True},
        "status": {**text, "enum": list(STATUSES), "description": "The status of this image member"},
        "updated_at": {**text, "description": "Date and time of last modification of image member"},
    }}


def members_schema() -> dict[str, Any]:
    """The JSON schema of an image's member list."""
    return {"name": "members", "properties": {"members": {"type": "array", "items": member_schema()},
                                              "schema": {"type": "string"}},
            "links": [{"href": "{schema}", "rel": "describedby"}]}


async def get_member_schema(request: Request) -> Response:
    """GET /v2/schemas/member."""
    return json_response(member_schema())


async def get_members_schema(request: Request) -> Response:
    """GET /v2/schemas/members."""
    return json_response(members_schema())


async def import_info(request: Request) -> Response:
    """GET /v2/info/import: no interoperable import; images are uploaded with PUT .../file."""
    return json_response({"import-methods": {"description": "Import methods available.", "type": "array",
                                             "value": []}})


async def stores_info(request: Request) -> Response:
    """GET /v2/info/stores: the one store."""
    return json_response({"stores": [STORE]})


async def metadefs(request: Request) -> Response:
    """/v2/metadefs/… and /v2/schemas/metadefs/…: not served, said plainly."""
    raise not_found("Metadata definitions (metadefs) are not supported by this cloud.")


ROUTES = [
    route("/v2/schemas/member", get_member_schema, ["GET"], "image:schema_member"),
    route("/v2/schemas/members", get_members_schema, ["GET"], "image:schema_members"),
    route("/v2/info/import", import_info, ["GET"], "image:info_import"),
    route("/v2/info/stores", stores_info, ["GET"], "image:info_stores"),
    route("/v2/metadefs/{rest:path}", metadefs, ["GET"], "image:metadefs"),
    route("/v2/metadefs/{rest:path}", metadefs, ["POST", "PUT", "DELETE"], "image:metadefs_write"),
    route("/v2/schemas/metadefs/{rest:path}", metadefs, ["GET"], "image:schema_metadefs"),
]
