"""The one table of response schemas: for each route (by its name) and status, the model(s) its body must
validate against; each service's error model; and `check_response`, which the test suite runs on every
response (tests/conformance.py). The OpenAPI document is generated from the same models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from canopy.api.schemas import compute as cs
from canopy.api.schemas import identity as ids
from canopy.api.schemas import image as im
from canopy.api.schemas import network as ns
from canopy.api.schemas.base import Body, Version, at_version, fielded

NO_BODY = None  # a status answered without a body (204)
Spec = dict[int, tuple[type[Body], ...] | None]



def _crud(kind: str, one: type[Body], many: type[Body]) -> dict[str, Spec]:
    """A Neutron resource's five routes (a create answers one resource, or several for a bulk create)."""
    return {f"network.{kind}.list": {200: (many,)}, f"network.{kind}.show": {200: (one,)},
            f"network.{kind}.update": {200: (one,)}, f"network.{kind}.create": {201: (one, many)},
            f"network.{kind}.delete": {204: NO_BODY}}


COMPUTE: dict[str, Spec] = {
    "compute:servers:show": {200: (cs.ServerOne, cs.ServerDownOne)},
    "compute:servers:update": {200: (cs.ServerOne,)},
    "compute:servers:detail": {200: (cs.ServerDetails,)},
    "compute:servers:index": {200: (cs.ServerList,)},
    "compute:servers:create": {202: (cs.ServerCreatedOne,)},
    "compute:servers:delete": {204: NO_BODY},
    "compute:flavors": {200: (cs.FlavorList,)},
    "compute:flavors:detail": {200: (cs.FlavorDetails,)},
    "compute:flavors:show": {200: (cs.FlavorOne,)},
    "compute:flavors:create": {200: (cs.FlavorOne,)},
    "compute:flavors:update": {200: (cs.FlavorOne,)},
    "compute:flavors:delete": {202: NO_BODY},
    "compute:keypairs": {200: (cs.KeypairList,)},
    "compute:keypairs:show": {200: (cs.KeypairOne,)},
    "compute:keypairs:create": {200: (cs.KeypairCreatedOne,), 201: (cs.KeypairCreatedOne,)},
    "compute:keypairs:delete": {202: NO_BODY, 204: NO_BODY},
    "compute:limits": {200: (cs.LimitsOne,)},
}
NETWORK: dict[str, Spec] = {
    "network.versions": {200: (ns.Versions,)},
    "network.resources": {200: (ns.Resources,)},
    "network.extensions.list": {200: (ns.Extensions,)},
    "network.extensions.show": {200: (ns.ExtensionOne,)},
    **_crud("networks", ns.NetworkOne, ns.Networks),
    **_crud("subnets", ns.SubnetOne, ns.Subnets),
    **_crud("ports", ns.PortOne, ns.Ports),
}
IMAGE: dict[str, Spec] = {
    "image:versions_root": {300: (im.Versions,)},
    "image:versions": {200: (im.Versions,)},
    "image:schema_image": {200: (im.JsonSchema,)},
    "image:schema_images": {200: (im.JsonSchema,)},
    "image:schema_member": {200: (im.JsonSchema,)},
    "image:schema_members": {200: (im.JsonSchema,)},
    "image:list_images": {200: (im.Images,)},
    "image:create_image": {201: (im.Image,)},
    "image:get_image": {200: (im.Image,)},
    "image:update_image": {200: (im.Image,)},
    "image:delete_image": {204: NO_BODY},
    "image:tag": {204: NO_BODY},
    "image:upload": {204: NO_BODY},
    "image:download": {200: NO_BODY, 204: NO_BODY},  # the image's bytes, not JSON
    "image:list_members": {200: (im.Members,)},
    "image:create_member": {200: (im.Member,)},
    "image:get_member": {200: (im.Member,)},
    "image:update_member": {200: (im.Member,)},
    "image:delete_member": {204: NO_BODY},
    "image:deactivate": {204: NO_BODY},
    "image:reactivate": {204: NO_BODY},
    "image:info_import": {200: (im.ImportInfo,)},
    "image:info_stores": {200: (im.StoresInfo,)},
    "image:metadefs": {},  # only ever a 404
    "image:metadefs_write": {},
    "image:schema_metadefs": {},
}
IDENTITY: dict[str, Spec] = {
    "identity:issue_token": {201: (ids.TokenOne,)},
    "identity:check_token": {200: (ids.TokenOne,)},
}
RESPONSES: dict[str, Spec] = {**COMPUTE, **NETWORK, **IMAGE, **IDENTITY}


def _check_models(models: tuple[type[Body], ...], body: Any) -> None:
    errors: list[ValidationError] = []
    for model in models:
        try:
            model.model_validate(body)
            return
        except ValidationError as exc:
            errors.append(exc)
    raise errors[0]


ERRORS: dict[str, Callable[[Any], None]] = {
    "compute": cs.check_compute_error,
    "network": lambda body: _check_models((ns.NeutronError,), body),
    "image": lambda body: _check_models((im.ImageError,), body),
    "identity": lambda body: _check_models((ids.IdentityError,), body),
}
# Fields the reference defines that Canopy does not return yet, each with the work that adds it. A missing
# field listed here is tolerated (and only that one); anything else missing or mistyped fails.
PENDING: dict[str, set[str]] = {
    "compute:servers:create": {"adminPass"},  # issue 16 item 1, the compute branch
    "compute:servers:show": {"server_groups"},  # 2.71: the groups a server belongs to
    "compute:servers:update": {"server_groups"},
}


def has_schema(route: str) -> bool:
    """Whether a route's responses are checked (its errors are checked for every route)."""
    return route in RESPONSES


def _tolerated(route: str, exc: ValidationError) -> bool:
    pending = PENDING.get(route, set())
    return all(e["type"] == "missing" and str(e["loc"][-1]) in pending for e in exc.errors())


def check_response(service: str, route: str, status: int, body: Any, *, mv: Version | None = None,
                   fields: bool = False) -> str | None:
    """Why a response does not conform (None when it does). `body` is the parsed JSON (None: no body);
    `mv` the compute microversion; `fields`: the request selected fields (`fields=`), so any may be absent."""
    if status >= 400:
        try:
            ERRORS[service](body)
        except (ValidationError, ValueError) as exc:
            return f"{route} {status}: not a {service} error body: {exc}"
        return None
    spec = RESPONSES.get(route)
    if spec is None or status not in spec:
        return None if spec is None else f"{route}: status {status} is not one the reference defines"
    models = spec[status]
    if models is None:
        return None if body is None or route == "image:download" else f"{route} {status}: a body where none is due"
    versioned = tuple(at_version(m, mv) if mv is not None else m for m in models)
    try:
        _check_models(tuple(fielded(m) for m in versioned) if fields else versioned, body)
    except ValidationError as exc:
        if _tolerated(route, exc):
            return None
        return f"{route} {status}{f' at {mv[0]}.{mv[1]}' if mv else ''}: {exc}"
    return None


def json_schema(route: str, status: int, mv: Version | None = None) -> dict[str, Any] | None:
    """The JSON schema of a route's response (the first model when several are allowed), for OpenAPI."""
    models = RESPONSES.get(route, {}).get(status)
    if not models:
        return None
    return (at_version(models[0], mv) if mv else models[0]).model_json_schema(by_alias=True)
