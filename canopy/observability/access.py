"""One API request done: its access log line (with the request ID, like every line) and its metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any

from canopy.observability.metrics import API_LATENCY, API_REQUESTS

log = logging.getLogger("canopy.api.access")


def route_of(scope: MutableMapping[str, Any]) -> str:
    """The matched route's name (a bounded label), or "unmatched" (404s, failed authentication)."""
    route = scope.get("route")
    return getattr(route, "name", None) or "unmatched"


def observe_request(service: str, scope: MutableMapping[str, Any], status: int, started: float) -> None:
    """Count and time the request by route, and write its access line."""
    elapsed = time.perf_counter() - started
    route, method = route_of(scope), scope.get("method", "")
    API_REQUESTS.inc(service, route, method, str(status))
    API_LATENCY.observe(elapsed, service, route, method)
    if log.isEnabledFor(logging.INFO):
        log.info("%s %s %s %.1fms", method, scope.get("path", ""), status, elapsed * 1000,
                 extra={"route": route, "status": status, "duration_ms": round(elapsed * 1000, 2)})
