"""The api process's ASGI application: one port, each OpenStack service under its own prefix.

    /identity  Identity v3      /compute  Compute v2.1
    /network   Network v2.0     /image    Image v2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import State
from starlette.routing import BaseRoute, Router

from canopy.api.audit import AuditWriter
from canopy.api.http import json_response, not_found_app
from canopy.api.middleware import ServiceMiddleware
from canopy.api.ratelimit import RateLimiter
from canopy.api.token_state import TokenGuard
from canopy.auth.policy import load_policy
from canopy.runtime import Cloud


class Service:
    """One OpenStack service as the api serves it."""

    def __init__(
        self,
        name: str,
        routes: list[BaseRoute],
        is_public: Callable[[str, str], bool],
        prepare: Callable[[Any], dict[str, str]] | None = None,
        streams_body: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.name = name
        self.routes = routes
        self.is_public = is_public
        self.prepare = prepare
        self.streams_body = streams_body  # routes whose body goes to storage, not to a JSON parser


class CloudApp:
    """Dispatches by the first path segment to the service mounted there."""

    def __init__(self, cloud: Cloud, services: dict[str, Service]) -> None:
        self.state = State()
        self.state.cloud = cloud
        self.prefixes: dict[str, Any] = {}
        # Per app (one per api process): its own view of the revocation events, shared by its services.
        self.state.policy = load_policy(cloud.settings.auth.policy_file)
        self.state.guard = TokenGuard(cloud.tokens, cloud.dbs.global_db, cloud.settings.auth.revocation_cache_s)
        self.state.ratelimiter = RateLimiter(cloud.settings.api.rate_limits, cloud.clock.monotonic)
        a = cloud.settings.api.audit
        self.state.audit = AuditWriter(cloud.dbs.global_db, cloud.clock, queue_size=a.queue_size, batch=a.batch,
                                       flush_interval_s=a.flush_interval_s) if a.enabled else None
        for prefix, svc in services.items():
            router = Router(routes=svc.routes, default=not_found_app, redirect_slashes=False)
            self.prefixes[prefix] = ServiceMiddleware(
                router, svc.name, lambda: self.state.guard, svc.is_public, svc.prepare, _body_limit(cloud, svc),
                limiter=lambda: self.state.ratelimiter, audit=lambda: self.state.audit,
            )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.state.audit)
            return
        scope["app"] = self
        path: str = scope["path"]
        prefix = "/" + path.split("/", 2)[1]
        service = self.prefixes.get(prefix)
        if service is None:
            await self._root(scope, receive, send)
            return
        if path == prefix:
            scope["path"] = path + "/"
        scope["root_path"] = scope.get("root_path", "") + prefix
        await service(scope, receive, send)

    async def _root(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/metrics":
            if not await _may_scrape(self.state.cloud, self.state.guard, scope):
                body = {"error": {"code": 401, "message": "The metrics need an admin token or a scrape address."}}
                await json_response(body, status=401)(scope, receive, send)
                return
            from starlette.responses import Response

            from canopy.observability.metrics import CONTENT_TYPE
            from canopy.observability.scrape import render

            await Response(await render(self.state.cloud), media_type=CONTENT_TYPE)(scope, receive, send)
            return
        if scope["path"] in ("/healthcheck", "/healthcheck/", "/healthcheck/fleet"):
            from canopy.api import healthcheck

            await healthcheck.app(self.state.cloud, scope, receive, send)
            return
        if scope["path"] == "/":
            response = json_response({"services": sorted(self.prefixes)})
        else:
            response = json_response({"error": {"code": 404, "message": "Not found"}}, status=404)
        await response(scope, receive, send)


async def _may_scrape(cloud: Cloud, guard: TokenGuard, scope: Any) -> bool:
    """/metrics is for operators: a client at a configured scrape address, or an admin token that still
    stands (signature, expiry and revocation: the same guard as every service's)."""
    client = scope.get("client")
    if client and client[0] in cloud.settings.api.metrics_scrape_addresses:
        return True
    from canopy.auth.tokens import InvalidToken

    token = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-auth-token"), None)
    if not token:
        return False
    try:
        data = await guard.check(token)
    except (InvalidToken, ValueError, UnicodeError):
        return False
    return "admin" in data.roles and data.scope.kind in ("project", "system")


def _body_limit(cloud: Cloud, svc: Service) -> Callable[[str, str], int]:
    """The body size limit of a service's request: the streaming limit on its data routes, else JSON's."""
    api = cloud.settings.api

    def limit(method: str, path: str) -> int:
        if svc.streams_body is not None and svc.streams_body(method, path):
            return api.max_image_bytes
        return api.max_body_bytes

    return limit


async def _lifespan(receive: Any, send: Any, audit: AuditWriter | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if audit is not None:
                await audit.close()  # what is queued is written before the process ends
            await send({"type": "lifespan.shutdown.complete"})
            return


def tls_files(cloud: Cloud) -> tuple[str | None, str | None]:
    """uvicorn's `ssl_certfile` and `ssl_keyfile` from `[api] tls_cert` and `tls_key` (None: plain HTTP)."""
    api = cloud.settings.api
    if bool(api.tls_cert) != bool(api.tls_key):
        raise ValueError("[api] tls_cert and tls_key are given together (a PEM certificate and its key)")
    return (api.tls_cert, api.tls_key) if api.tls_cert else (None, None)


async def close_app(app: object) -> None:
    """What the app must do before its process ends: write the queued audit records."""
    if isinstance(app, CloudApp) and app.state.audit is not None:
        await app.state.audit.close()


def build_app(cloud: Cloud) -> CloudApp:
    """The full API: identity, compute, network and image."""
    from canopy.api import compute, identity, image, network

    return CloudApp(
        cloud,
        {
            "/identity": identity.service(),
            "/compute": compute.service(),
            "/network": network.service(),
            "/image": image.service(),
        },
    )
