"""What the network API's handlers share: errors in Neutron's shape, request bodies read attribute by
attribute, list filters, `fields=`, and pagination links."""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError
from canopy.api.http import json_response, page_params, read_json, read_object
from canopy.context import RequestContext
from canopy.db.engine import Database
from canopy.network.errors import NetworkError
from canopy.runtime import Cloud

log = logging.getLogger("canopy.api.network")
Handler = Callable[[Request], Awaitable[Response]]
Converter = Callable[[str, str], Any]


def cloud_of(request: Request) -> Cloud:
    """The Cloud the app serves."""
    return request.app.state.cloud


def global_db(request: Request) -> Database:
    """The database of the global tables (networks, subnets)."""
    return cloud_of(request).dbs.global_db


def cell_db(request: Request) -> Database:
    """The database of this cell's tables (ports, ip_allocations)."""
    cloud = cloud_of(request)
    return cloud.dbs.cell(cloud.cell_name)


def neutron_errors(fn: Handler) -> Handler:
    """Render NetworkError raised by the networking code as the API error it names."""

    @functools.wraps(fn)
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except NetworkError as err:
            raise ApiError(err.status, err.message, neutron_type=err.neutron_type) from None

    return wrapped


def bad(message: str, neutron_type: str = "InvalidInput") -> ApiError:
    """A 400 with a Neutron type name."""
    return ApiError(400, message, neutron_type=neutron_type)


def invalid(field: str, reason: str) -> ApiError:
    """A 400 naming the attribute, as Neutron words attribute errors."""
    return bad(f"Invalid input for {field}. Reason: {reason}")


def policy(rule: str) -> ApiError:
    """A 403 for an action or attribute the caller's role does not allow."""
    return ApiError(403, f"({rule}) is disallowed by policy", neutron_type="PolicyNotAuthorized")


def missing(kind: str, ident: str) -> ApiError:
    """The 404 of a resource that does not exist or is not visible (NetworkNotFound, ...)."""
    name = kind.capitalize()
    return ApiError(404, f"{name} {ident} could not be found.", neutron_type=f"{name}NotFound")


async def body_of(request: Request, root: str, allowed: frozenset[str]) -> dict[str, Any]:
    """The object under `root`; an attribute not in `allowed` is a 400."""
    body = await read_object(request, root)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad(f"Unrecognized attribute(s) '{', '.join(unknown)}'", "HTTPBadRequest")
    return body


MAX_BULK = 100  # resources one bulk create may make: bounded before any of them costs a query


async def bodies_of(request: Request, root: str, allowed: frozenset[str]) -> tuple[list[dict[str, Any]], bool]:
    """The objects of a create: `{root: {...}}` (one) or `{root + "s": [...]}` (bulk); and whether it was
    bulk. Each object is checked as body_of checks one."""
    body = await read_json(request)
    plural = f"{root}s"
    if not isinstance(body, dict) or plural not in body or root in body:
        return [await body_of(request, root, allowed)], False
    items = body[plural]
    if not isinstance(items, list) or not items:
        raise bad(f"Invalid input for {plural}: a non-empty list of {root} objects was expected", "HTTPBadRequest")
    if len(items) > MAX_BULK:
        raise bad(f"Invalid input for {plural}: at most {MAX_BULK} {plural} may be created at once",
                  "HTTPBadRequest")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad(f"Invalid input for {plural}[{index}]: {item!r} is not an object", "HTTPBadRequest")
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise bad(f"Unrecognized attribute(s) '{', '.join(unknown)}'", "HTTPBadRequest")
    return items, True


def created(request: Request, root: str, views: list[dict[str, Any]], bulk: bool) -> Response:
    """The 201 of a create: one `{root: view}`, or `{roots: [views]}` for a bulk create."""
    if not bulk:
        return item(request, root, views[0], status=201)
    fields = request.query_params.getlist("fields")
    return json_response({f"{root}s": [shaped(v, fields) for v in views]}, status=201)


def text(body: dict[str, Any], key: str, max_len: int = 255) -> str | None:
    """A string attribute (None when absent)."""
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, str):
        raise invalid(key, f"{value!r} is not a valid string")
    if len(value) > max_len:
        raise invalid(key, f"'{value[:40]}...' exceeds maximum length of {max_len}")
    bad = unprintable(value, newlines=key == "description")
    if bad is not None:
        raise invalid(key, f"'{value[:40]}' contains the control character {bad!r}")
    return value


def unprintable(value: str, newlines: bool = False) -> str | None:
    """The first control or invisible format character of a text (NUL, terminal escapes, bidi overrides…);
    new lines and tabs are allowed where `newlines` says (descriptions)."""
    for ch in value:
        if newlines and ch in "\n\r\t":
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return ch
    return None


def flag(body: dict[str, Any], key: str) -> bool | None:
    """A boolean attribute (None when absent); "true"/"false" are accepted as Neutron does."""
    if key not in body:
        return None
    value = body[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise invalid(key, f"'{value}' cannot be converted to boolean")


def integer(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    """An integer attribute within [low, high] (None when absent or null)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(key, f"'{value}' is not an integer")
    try:
        number = int(value)
    except ValueError:
        raise invalid(key, f"'{value}' is not an integer") from None
    if not low <= number <= high:
        raise invalid(key, f"'{value}' is not in range {low} through {high}")
    return number


def only_default(body: dict[str, Any], key: str, default: Any) -> None:
    """An attribute accepted for compatibility that may only hold its default value here."""
    if key in body and body[key] != default:
        raise invalid(key, f"{body[key]!r} is not supported by this cloud; only {default!r} is")


def owner_of(body: dict[str, Any], c: RequestContext) -> str:
    """The project a new resource belongs to: the caller's, or (admins only) the one named."""
    wanted = body.get("project_id") or body.get("tenant_id")
    if body.get("project_id") and body.get("tenant_id") and body["project_id"] != body["tenant_id"]:
        raise invalid("project_id", "project_id and tenant_id do not match")
    if wanted is None or wanted == c.project_id:
        return c.project_id or ""
    if not isinstance(wanted, str):
        raise invalid("project_id", f"{wanted!r} is not a valid string")
    if not c.is_admin:
        raise bad("Specifying 'project_id' or 'tenant_id' other than the authenticated project in request "
                  "requires admin privileges", "HTTPBadRequest")
    return wanted


def as_text(name: str, raw: str) -> str:
    """A query value as it is."""
    return raw


def as_bool(name: str, raw: str) -> bool:
    """A query value as a boolean; anything but true/false/1/0 is a 400."""
    low = raw.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise invalid(name, f"'{raw}' cannot be converted to boolean")


def as_int(name: str, raw: str) -> int:
    """A query value as an integer."""
    try:
        return int(raw)
    except ValueError:
        raise invalid(name, f"'{raw}' is not an integer") from None


def filters_of(request: Request, spec: dict[str, tuple[str, Converter]]) -> dict[str, list[Any]]:
    """Column filters from the query string: `spec` maps each API name to (column, converter); a name
    given several times matches any of its values. Other parameters are ignored."""
    q = request.query_params
    out: dict[str, list[Any]] = {}
    for name, (column, convert) in spec.items():
        raw = q.getlist(name)
        if raw:
            out.setdefault(column, []).extend(convert(name, v) for v in raw)
    return out


def page_of(request: Request) -> tuple[int, str | None]:
    """limit (0 or absent: the configured page size) and marker."""
    max_page = cloud_of(request).settings.api.max_page_size
    limit, marker = page_params(request, max_page)
    return (limit or max_page), marker


def shaped(view: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """Only the requested `fields=` of a view (all of them when none was requested)."""
    return {k: view[k] for k in fields if k in view} if fields else view


def collection(request: Request, key: str, views: list[dict[str, Any]], limit: int) -> Response:
    """A list response; with one more item than `limit` fetched, the page is cut and a next link added."""
    fields = request.query_params.getlist("fields")
    body: dict[str, Any] = {key: [shaped(v, fields) for v in views[:limit]]}
    if len(views) > limit:
        href = str(request.url.include_query_params(limit=limit, marker=views[limit - 1]["id"]))
        body[f"{key}_links"] = [{"rel": "next", "href": href}]
    return json_response(body)


def item(request: Request, key: str, view: dict[str, Any], status: int = 200) -> Response:
    """A single-resource response, honouring `fields=`."""
    return json_response({key: shaped(view, request.query_params.getlist("fields"))}, status=status)


async def announce(request: Request, changes: list[Any], networks: list[str] | None = None,
                   everywhere: bool = False) -> None:
    """Tell the conductors which ports changed, so that their hosts' flows follow (a lost cast is healed by
    the agents' periodic full sync). `everywhere`: to every conductor, which also drop their QoS cache."""
    from canopy.rpc.base import BusError, Target
    from canopy.rpc.calls import PortsChanged

    if not changes and not networks:
        return
    bus = cloud_of(request).bus
    msg = PortsChanged(changes=changes, networks=list(networks or []), qos_changed=everywhere)
    try:
        if everywhere:
            await bus.fanout("conductor", msg)
        else:
            await bus.cast(Target("conductor"), msg)
    except BusError as exc:
        log.warning("ports changed, but no conductor was told (%s); the agents' next full sync catches up", exc)


async def address_policy(request: Request, project_id: str) -> Any:
    """A project's address quotas and the hold time of public addresses (one global read)."""
    from canopy.network import limits

    net = cloud_of(request).settings.network
    return await global_db(request).read_fresh(limits.load_policy, project_id, net.quota_defaults(),
                                               net.public_ip_hold_s)
