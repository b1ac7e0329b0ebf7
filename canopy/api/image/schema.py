"""The image schema: the JSON schemas Glance publishes, and the checks a request body gets against them."""

from __future__ import annotations

import uuid
from typing import Any

from canopy.api.errors import ApiError, bad_request, forbidden
from canopy.image import store

# Keys the server owns, and keys Glance keeps for itself: neither can be set by a client.
READ_ONLY = ("status", "checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size", "created_at",
             "updated_at", "self", "file", "schema", "direct_url", "locations", "stores", "os_hidden")
RESERVED = ("location", "deleted", "deleted_at")
RESERVED_PREFIX = "os_glance"
# Base attributes a client may set (`id` only when creating).
MUTABLE = ("name", "visibility", "protected", "container_format", "disk_format", "min_disk", "min_ram", "tags",
           "owner")


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": ["null", kind], **extra}


def image_schema() -> dict[str, Any]:
    """A JSON schema of an image (the attributes Glance documents; other properties are strings)."""
    ro = {"readOnly": True}
    props: dict[str, Any] = {
        "id": {"type": "string", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
                                            "-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
        "name": _nullable("string", maxLength=255),
        "status": {"type": "string", "enum": list(store.STATUSES), **ro},
        "visibility": {"type": "string", "enum": list(store.VISIBILITIES)},
        "protected": {"type": "boolean"},
        "checksum": _nullable("string", maxLength=32, **ro),
        "os_hash_algo": _nullable("string", maxLength=64, **ro),
        "os_hash_value": _nullable("string", maxLength=128, **ro),
        "owner": _nullable("string", maxLength=255),
        "size": _nullable("integer", **ro),
        "virtual_size": _nullable("integer", **ro),
        "container_format": _nullable("string", enum=[None, *store.CONTAINER_FORMATS]),
        "disk_format": _nullable("string", enum=[None, *store.DISK_FORMATS]),
        "created_at": {"type": "string", "format": "date-time", **ro},
        "updated_at": {"type": "string", "format": "date-time", **ro},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
        "min_ram": {"type": "integer"},
        "min_disk": {"type": "integer"},
        "self": {"type": "string", **ro},
        "file": {"type": "string", **ro},
        "schema": {"type": "string", **ro},
    }
    return {"name": "image", "properties": props, "additionalProperties": {"type": "string"},
            "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                      {"rel": "describedby", "href": "{schema}"}]}

def images_schema() -> dict[str, Any]:
    """A JSON schema of an image list."""
    props = {"images": {"type": "array", "items": image_schema()}, "schema": {"type": "string"},
             "first": {"type": "string"}, "next": {"type": "string"}}
    return {"name": "images", "properties": props, "links": [
        {"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
        {"rel": "describedby", "href": "{schema}"}]}


def _invalid(key: str, reason: str) -> ApiError:
    return bad_request(f"Provided object does not match schema 'image': {reason} (attribute '{key}')")


def check_attribute(key: str, value: Any) -> Any:
    """A base attribute's value checked against the image schema; returns it normalized."""
    if key in ("name", "owner"):
        limit = 255 if key == "name" else 32
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise _invalid(key, f"{value!r} is not a string of at most {limit} characters")
    elif key in ("container_format", "disk_format"):
        allowed = store.CONTAINER_FORMATS if key == "container_format" else store.DISK_FORMATS
        if value is not None and value not in allowed:
            raise _invalid(key, f"{value!r} is not one of {list(allowed)}")
    elif key == "visibility" and value not in store.VISIBILITIES:
        raise _invalid(key, f"{value!r} is not one of {list(store.VISIBILITIES)}")
    elif key == "protected" and not isinstance(value, bool):
        raise _invalid(key, f"{value!r} is not of type 'boolean'")
    elif key in ("min_disk", "min_ram") and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise _invalid(key, f"{value!r} is not a non-negative integer")
    elif key == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in value):
            raise _invalid(key, f"{value!r} is not an array of strings of at most 255 characters")
        return list(dict.fromkeys(value))
    elif key == "id":
        try:
            return str(uuid.UUID(value))
        except (ValueError, TypeError, AttributeError):
            raise _invalid(key, f"{value!r} is not a valid UUID") from None
    return value


def check_property(key: str, value: Any) -> str:
    """An extra property: a string of at most 65535 characters, under a key of at most 255."""
    if len(key) > 255 or not key:
        raise _invalid(key, "property names are 1 to 255 characters")
    if not isinstance(value, str) or len(value) > 65535:
        raise _invalid(key, f"{value!r} is not of type 'string'")
    return value


def refuse_key(key: str) -> None:
    """403 for a key no client may set (Glance keeps `os_glance_*` for itself)."""
    if key in RESERVED or key.startswith(RESERVED_PREFIX):
        raise forbidden(f"Attribute '{key}' is reserved.")
    if key in READ_ONLY:
        raise forbidden(f"Attribute '{key}' is read-only.")


def _draft10_op(item: Any) -> tuple[Any, Any]:
    """The op and path of Glance's older patch ({"replace": "/name", "value": ...}): one op key per item."""
    if not isinstance(item, dict):
        return None, None
    named = [k for k in ("add", "replace", "remove") if k in item]
    if len(named) != 1 or set(item) - {named[0], "value"}:
        return None, None
    return named[0], item[named[0]]


def patch_ops(body: Any, draft10: bool = False) -> list[tuple[str, str, Any]]:
    """(op, key, value) for each operation of a JSON patch on an image's top-level keys: RFC 6902
    (openstack-images-v2.1-json-patch) or, with `draft10`, Glance's openstack-images-v2.0-json-patch."""
    if not isinstance(body, list):
        raise bad_request("Request body must be a JSON array of operation objects.")
    ops = []
    for item in body:
        if draft10:
            op, path = _draft10_op(item)
        else:
            op, path = (item.get("op"), item.get("path")) if isinstance(item, dict) else (None, None)
        if op not in ("add", "replace", "remove"):
            wanted = ("exactly one member named add, remove or replace" if draft10
                      else "an 'op' of add, replace or remove")
            raise bad_request(f"Operation objects must contain {wanted}: {str(item)[:200]}")
        if not isinstance(path, str) or not path.startswith("/") or path.count("/") != 1 or path == "/":
            raise bad_request(f"Invalid JSON pointer for this resource: '{path}'")
        if op != "remove" and "value" not in item:
            raise bad_request(f"Operation object requires a 'value' member: {item!r}")
        ops.append((op, path[1:].replace("~1", "/").replace("~0", "~"), item.get("value")))
    return ops


