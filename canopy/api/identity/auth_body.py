"""The shape of `POST /v3/auth/tokens` bodies, checked before anything costs: a wrong type anywhere is a
400 naming the field in Keystone's words, never a 500."""

from __future__ import annotations

from typing import Any

from canopy.api.errors import bad_request

_DOMAIN: dict[str, Any] = {"id": str, "name": str}
_USER: dict[str, Any] = {"id": str, "name": str, "password": str, "domain": _DOMAIN}
SPEC: dict[str, Any] = {
    "identity": {
        "methods": [str],
        "password": {"user": _USER},
        "token": {"id": str},
        "application_credential": {"id": str, "name": str, "secret": str, "user": _USER},
    },
    "scope": {
        "project": {"id": str, "name": str, "domain": _DOMAIN},
        "domain": _DOMAIN,
        "system": {"all": bool},
    },
}
_NAMES = {str: "string", bool: "boolean", list: "array", dict: "object"}
MAX_STRING = 4096


def check_auth_body(auth: dict[str, Any]) -> None:
    """Raise a 400 on the first field of the wrong type or missing where Keystone requires it."""
    _check(auth, SPEC, "auth")
    identity = auth.get("identity")
    if identity is None:
        raise bad_request("Invalid input for field 'auth': 'identity' is a required property")
    methods = identity.get("methods")
    if not methods:
        raise bad_request("Invalid input for field 'identity': 'methods' is a required property")
    for method in methods:
        if method in SPEC["identity"] and method not in identity:
            raise bad_request(f"Invalid input for field 'identity': '{method}' is a required property")


def _fail(path: str, value: Any, kind: type) -> None:
    raise bad_request(f"Invalid input for field '{path}': {value!r:.80} is not of type '{_NAMES[kind]}'")


def _check(value: Any, spec: Any, path: str) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            _fail(path, value, dict)
        for key, sub in spec.items():
            if key in value and value[key] is not None:
                _check(value[key], sub, f"{path}/{key}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            _fail(path, value, list)
        for i, item in enumerate(value):
            _check(item, spec[0], f"{path}/{i}")
    elif not isinstance(value, spec) or (spec is str and isinstance(value, bool)):
        _fail(path, value, spec)
    elif spec is str and len(value) > MAX_STRING:
        raise bad_request(f"Invalid input for field '{path}': longer than {MAX_STRING} characters")
