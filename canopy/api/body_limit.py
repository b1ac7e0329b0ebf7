"""The size of a request body, bounded before it costs anything: a declared Content-Length over the
limit is refused at once (413) without reading a byte, and a body sent without one (chunked) is
counted as it arrives and cut off at the limit. JSON bodies get `max_body_bytes`; a route whose body
streams to storage (image data) gets its own, larger, limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from canopy.api.errors import ApiError

Receive = Callable[[], Awaitable[dict[str, Any]]]


def too_large(limit: int) -> ApiError:
    """The 413 of a body over `limit` bytes."""
    return ApiError(413, f"Request body is larger than the limit of {limit} bytes.",
                    neutron_type="RequestEntityTooLarge")


def declared_length(headers: dict[str, str]) -> int | None:
    """The Content-Length a client declared; a malformed one is a 400."""
    raw = headers.get("content-length")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise ApiError(400, f"Invalid Content-Length: {raw!r}")
    return int(raw)


def check_declared(headers: dict[str, str], limit: int) -> None:
    """Refuse a body declared larger than `limit` before anything reads it."""
    length = declared_length(headers)
    if length is not None and length > limit:
        raise too_large(limit)


def bounded_receive(receive: Receive, limit: int) -> Receive:
    """`receive` that raises 413 once more than `limit` body bytes have arrived (for chunked bodies)."""
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
        return message

    return wrapped
