"""API errors, and how each OpenStack service shapes them on the wire."""

from __future__ import annotations

from typing import Any

# Nova's names for its error bodies, by status.
COMPUTE_KINDS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",  # Nova's rate limits answered overLimit
    500: "computeFault",
    501: "notImplemented",
    503: "serviceUnavailable",
}

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class ApiError(Exception):
    """An error answered to the client. `neutron_type` names it for the network API's error shape."""

    def __init__(self, status: int, message: str, *, neutron_type: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.message = message
        self.neutron_type = neutron_type


def bad_request(message: str, neutron_type: str = "HTTPBadRequest") -> ApiError:
    return ApiError(400, message, neutron_type=neutron_type)


def not_found(message: str, neutron_type: str = "HTTPNotFound") -> ApiError:
    return ApiError(404, message, neutron_type=neutron_type)


def forbidden(message: str = "Policy doesn't allow this operation to be performed.") -> ApiError:
    return ApiError(403, message, neutron_type="HTTPForbidden")


def conflict(message: str, neutron_type: str = "Conflict") -> ApiError:
    return ApiError(409, message, neutron_type=neutron_type)


def compute_body(status: int, message: str) -> dict[str, Any]:
    return {COMPUTE_KINDS.get(status, "computeFault"): {"code": status, "message": message}}


def network_body(status: int, message: str, neutron_type: str | None) -> dict[str, Any]:
    # Without a named type, Neutron's body names the webob exception: HTTPNotFound, HTTPMethodNotAllowed, ...
    return {"NeutronError": {"type": neutron_type or "HTTP" + TITLES.get(status, "Error").replace(" ", ""),
                             "message": message, "detail": ""}}


def identity_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "title": TITLES.get(status, "Error")}}


def image_body(status: int, message: str) -> dict[str, Any]:
    """Glance's errors are webob's JSON bodies: the status line as `code`, its reason as `title`."""
    title = TITLES.get(status, "Error")
    return {"code": f"{status} {title}", "title": title, "message": message}


SHAPES = {"compute": compute_body, "identity": identity_body, "image": image_body}


def error_body(service: str, err: ApiError) -> dict[str, Any]:
    """The body of an error in the shape of the service that answers it."""
    if service == "network":
        return network_body(err.status, err.message, err.neutron_type)
    return SHAPES.get(service, image_body)(err.status, err.message)
