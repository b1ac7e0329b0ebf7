"""Nova's limits on what a server carries, applied on every path that takes it (create, the metadata
API, rename, rebuild, snapshot): metadata items and their key/value lengths, tags, names (printable,
no control or terminal-escape characters), personality files, access addresses. Each check is a 400
naming the field, except too many metadata items or files, which Nova answers as a quota (403)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import unicodedata
from typing import Any

from canopy.api.errors import ApiError, bad_request

MAX_METADATA_ITEMS = 128  # Nova's default quota of metadata_items
MAX_METADATA_LENGTH = 255  # keys and values
METADATA_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")
MAX_TAGS = 50  # Nova's instance.MAX_TAG_COUNT
MAX_TAG_LENGTH = 60
MAX_NAME_LENGTH = 255
MAX_FILES = 5  # Nova's default quotas: injected_files, their path length and content bytes
MAX_FILE_PATH = 255
MAX_FILE_BYTES = 10240


def _unprintable(text: str, newlines: bool = False) -> str | None:
    """The first character Nova's printable-name pattern refuses (controls, format, separators but a space)."""
    for ch in text:
        if newlines and ch in "\n\r\t":
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "C" or (cat[0] == "Z" and ch != " "):
            return ch
    return None


def check_name(value: Any, field: str = "name") -> str:
    """A display name: a string of 1-255 printable characters, without white space at either end."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise bad_request(f"Invalid input for field/attribute {field}. Value: {str(value)[:64]!r}. "
                          f"It must be a string of 1-{MAX_NAME_LENGTH} characters.")
    bad = _unprintable(value)
    if bad is not None:
        raise bad_request(f"Invalid input for field/attribute {field}. Value: {value[:64]!r}. "
                          f"It contains the unprintable character {bad!r}.")
    if value != value.strip():
        raise bad_request(f"Invalid input for field/attribute {field}. Value: {value[:64]!r}. "
                          "It must not start or end with white space.")
    return value


def check_description(value: Any, field: str = "description") -> str | None:
    """A description: null, or up to 255 characters with no control characters but new lines and tabs."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise bad_request(f"Invalid input for field/attribute {field}. It must be null or a string of at "
                          "most 255 characters.")
    bad = _unprintable(value, newlines=True)
    if bad is not None:
        raise bad_request(f"Invalid input for field/attribute {field}. It contains the unprintable "
                          f"character {bad!r}.")
    return value


def check_metadata(meta: Any, field: str = "metadata") -> dict[str, str]:
    """Server metadata: keys of Nova's pattern, string values of at most 255 characters, at most 128 items."""
    if not isinstance(meta, dict):
        raise bad_request(f"Invalid input for field/attribute {field}. Value must be an object.")
    if len(meta) > MAX_METADATA_ITEMS:
        raise ApiError(403, f"Quota exceeded for metadata_items: at most {MAX_METADATA_ITEMS} items")
    for key, value in meta.items():
        if not isinstance(key, str) or not METADATA_KEY.match(key):
            raise bad_request(f"Invalid input for field/attribute {field}. Metadata key {str(key)[:64]!r} does "
                              "not match '^[a-zA-Z0-9-_:. ]{1,255}$'.")
        if not isinstance(value, str) or len(value) > MAX_METADATA_LENGTH:
            raise bad_request(f"Invalid input for field/attribute {field}. Value for {key!r} must be a string "
                              f"of at most {MAX_METADATA_LENGTH} characters.")
    return meta


def check_metadata_count(meta: dict[str, str]) -> None:
    """The item limit on a server's metadata after a change merged it."""
    if len(meta) > MAX_METADATA_ITEMS:
        raise ApiError(403, f"Quota exceeded for metadata_items: at most {MAX_METADATA_ITEMS} items")


def check_tags(tags: Any, field: str = "tags") -> list[str]:
    """Server tags: at most 50, each 1-60 characters without '/' or ',' (Nova's tag schema)."""
    if not isinstance(tags, list):
        raise bad_request(f"Invalid input for field/attribute {field}. It must be a list of strings.")
    if len(tags) > MAX_TAGS:
        raise bad_request(f"Invalid input for field/attribute {field}. At most {MAX_TAGS} tags are allowed.")
    for tag in tags:
        if (not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_LENGTH or "/" in tag or "," in tag
                or _unprintable(tag) is not None):
            raise bad_request(f"Invalid input for field/attribute {field}. Tag {str(tag)[:64]!r} must be 1-"
                              f"{MAX_TAG_LENGTH} printable characters without '/' or ','.")
    return tags


def check_personality(files: Any) -> list[dict[str, str]]:
    """Personality files (before 2.57): at most 5, paths of at most 255 bytes, base64 contents of at most
    10240 bytes decoded."""
    if not isinstance(files, list):
        raise bad_request("Invalid input for field/attribute personality. It must be a list.")
    if len(files) > MAX_FILES:
        raise ApiError(403, f"Personality file limit exceeded: at most {MAX_FILES} files")
    for item in files:
        if not isinstance(item, dict) or set(item) != {"path", "contents"}:
            raise bad_request("Invalid input for field/attribute personality. Each file is "
                              "{'path': ..., 'contents': ...}.")
        path, contents = item["path"], item["contents"]
        if not isinstance(path, str) or not path or len(path.encode()) > MAX_FILE_PATH:
            raise ApiError(403, f"Personality file path too long: at most {MAX_FILE_PATH} bytes")
        if not isinstance(contents, str) or len(contents) > (MAX_FILE_BYTES + 2) // 3 * 4:
            raise ApiError(403, f"Personality file content too long: at most {MAX_FILE_BYTES} bytes")
        try:
            base64.b64decode(contents, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"Personality content for {path} cannot be decoded") from None
    return files


def check_access_ip(value: Any, version: int) -> str | None:
    """accessIPv4 / accessIPv6: null, empty, or an address of that version."""
    field = f"accessIPv{version}"
    if value is None or value == "":
        return value
    try:
        addr = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        raise bad_request(f"Invalid input for field/attribute {field}. Value: {str(value)[:64]}. "
                          f"'{str(value)[:64]}' is not a 'ipv{version}'")
    return str(addr)  # the canonical spelling (2001:DB8:0::1 is stored and shown as 2001:db8::1)
