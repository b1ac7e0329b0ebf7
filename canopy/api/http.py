"""What every API handler needs: the request's context, JSON in and out, validation errors that name
the field, pagination parameters."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.errors import ApiError, bad_request, forbidden
from canopy.context import RequestContext

M = TypeVar("M", bound=BaseModel)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status,
                    media_type="application/json", headers=headers)


def empty_response(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    return Response(b"", status_code=status, headers=headers)


def ctx(request: Request) -> RequestContext:
    """The authenticated caller of this request."""
    return request.scope["canopy.ctx"]


def credentials(c: RequestContext) -> dict[str, Any]:
    """What policy rules see of the caller."""
    scope = ("project" if c.project_id else "domain" if c.domain_id else "system" if c.system_scope
             else "unscoped" if c.user_id else "none")
    return {"user_id": c.user_id, "project_id": c.project_id, "domain_id": c.domain_id, "roles": c.roles,
            "scope": scope}


def enforce(request: Request, rule: str) -> RequestContext:
    """Refuse the request (403) unless the caller passes the named policy rule on the path's parameters."""
    c = ctx(request)
    policy = request.app.state.policy
    if not policy.knows(rule):
        # Fail closed: a route nobody wrote a rule for is refused (canopy/auth/policy_defaults.py).
        raise forbidden(f"No policy rule for {rule}; refused until one is added.")
    if not policy.check(rule, credentials(c), request.path_params):
        raise refusal(rule)
    return c


def refusal(rule: str) -> ApiError:
    """A policy refusal worded as the rule's service words it (Neutron, Keystone, Glance, else Nova)."""
    if rule.startswith("network."):
        return ApiError(403, f"(rule:{rule}) is disallowed by policy", neutron_type="PolicyNotAuthorized")
    if rule.startswith("identity:"):
        return forbidden(f"You are not authorized to perform the requested action: {rule}.")
    if rule.startswith("image:"):
        return forbidden(f"You are not authorized to complete {rule.split(':', 1)[1]} action.")
    return forbidden(f"Policy doesn't allow {rule} to be performed.")


def require_admin(request: Request) -> RequestContext:
    c = ctx(request)
    if not c.is_admin:
        raise forbidden()
    return c


async def read_json(request: Request) -> Any:
    """The request's JSON body; malformed JSON is a 400."""
    raw = await request.body()
    if not raw:
        raise bad_request("The request body is empty; a JSON object was expected.", "MalformedRequestBody")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Malformed request body: {exc}", "MalformedRequestBody") from None
    limit = request.app.state.cloud.settings.api.max_json_depth if hasattr(request.app, "state") else 32
    if json_depth(body, limit) > limit:
        raise bad_request(f"Malformed request body: JSON nested deeper than {limit} levels",
                          "MalformedRequestBody")
    return body


def json_depth(value: Any, limit: int) -> int:
    """How deeply `value` nests lists and objects, counting no further than `limit + 1` (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


async def read_object(request: Request, root: str | None = None) -> dict[str, Any]:
    """The JSON body as an object; with `root`, the object under that key (`{"server": {...}}`)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", "MalformedRequestBody")
    if root is None:
        return body
    if root not in body:
        raise bad_request(f"'{root}' is a required property", "MalformedRequestBody")
    inner = body[root]
    if not isinstance(inner, dict):
        raise bad_request(f"Invalid input for field/attribute {root}. Value: {inner!r}. "
                          f"{inner!r} is not of type 'object'")
    return inner


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate `data` against `model`; the first problem is a 400 naming the field, as Nova words it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(describe_validation_error(exc, prefix)) from None


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    kind = err["type"]
    if kind == "missing":
        name = err["loc"][-1] if err["loc"] else field
        return f"Invalid input for field/attribute {prefix or field}. Value: None. '{name}' is a required property"
    if kind == "extra_forbidden":
        name = err["loc"][-1]
        return (f"Invalid input for field/attribute {prefix or field}. "
                f"Additional properties are not allowed ('{name}' was unexpected)")
    value = err.get("input")
    return f"Invalid input for field/attribute {field}. Value: {value!r}. {err['msg']}"


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def page_params(request: Request, max_page: int) -> tuple[int, str | None]:
    """`limit` (bounded by the configured maximum) and `marker` from the query string."""
    q = request.query_params
    raw = q.get("limit")
    limit = max_page
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise bad_request(f"Invalid input for query parameters limit. Value: {raw}. "
                              f"'{raw}' does not match '^[0-9]*$'") from None
        if limit < 0:
            raise bad_request(f"Invalid input for query parameters limit. Value: {raw}. must be >= 0")
        limit = min(limit, max_page)
    return limit, q.get("marker")


def bool_param(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    low = value.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise bad_request(f"Invalid input for query parameters {name}. Value: {value}. not a boolean")


__all__ = ["ApiError"]


def route(path: str, endpoint: Any, methods: list[str], name: str | None = None) -> Any:
    """A Starlette route whose database statements are counted under its name (for query budgets)."""
    from starlette.routing import Route

    from canopy.context import statement_origin

    origin = name or f"{methods[0]} {path}"

    async def counted(request: Request) -> Response:
        statement_origin.set(origin)
        enforce(request, origin)
        return await endpoint(request)

    return Route(path, counted, methods=methods, name=origin)


async def not_found_app(scope: Any, receive: Any, send: Any) -> None:
    """The answer for a path no route matches, in the service's error shape."""
    raise ApiError(404, f"The resource could not be found: {scope['path']}")
