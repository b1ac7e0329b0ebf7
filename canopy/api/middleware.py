"""The ASGI layer in front of each OpenStack service: request IDs, token authentication, and errors
rendered in the service's own shape."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from canopy import context
from canopy.api import body_limit
from canopy.api.audit import BODY_KEEP, MUTATING, AuditWriter, new_record, target_from_path
from canopy.api.errors import ApiError, error_body
from canopy.api.ratelimit import RateLimiter, classify, retry_after_header
from canopy.api.token_state import TokenGuard
from canopy.auth.tokens import InvalidToken
from canopy.observability.access import observe_request
from canopy.observability.metrics import RATE_LIMITED

log = logging.getLogger("canopy.api")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

_GLOBAL_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ServiceMiddleware:
    """Wraps one service's router: every request gets an ID, a context, and errors in the right shape."""

    def __init__(
        self,
        app: ASGIApp,
        service: str,
        guard: Callable[[], TokenGuard],
        is_public: Callable[[str, str], bool],
        prepare: Callable[[Scope], dict[str, str]] | None = None,
        body_limit: Callable[[str, str], int] | None = None,
        limiter: Callable[[], RateLimiter | None] = lambda: None,
        audit: Callable[[], AuditWriter | None] = lambda: None,
    ) -> None:
        self.app = app
        self.audit = audit
        self.limiter = limiter
        self.service = service
        self.guard = guard
        self.is_public = is_public
        self.prepare = prepare
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req-{uuid.uuid4()}"
        t0, status = time.perf_counter(), 500
        extra_headers = [(b"x-openstack-request-id", request_id.encode())]
        if self.service == "compute":
            extra_headers.append((b"x-compute-request-id", request_id.encode()))
        started = False
        # A create's answer names what it created: kept (bounded) for the audit record's target.
        keep_body = scope["method"] == "POST" and self.audit() is not None
        body = bytearray()

        async def send_with_headers(message: Any) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                message["headers"] = list(message.get("headers", [])) + extra_headers
            elif keep_body and message["type"] == "http.response.body" and len(body) < BODY_KEEP:
                body.extend(message.get("body", b"")[:BODY_KEEP - len(body)])
            await send(message)

        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        global_id = headers.get("x-openstack-request-id")
        req_ctx = context.RequestContext(
            request_id=request_id, global_request_id=global_id if global_id and _GLOBAL_ID.match(global_id) else None
        )
        token_ctx = context.set_current(req_ctx)
        try:
            path = scope["path"][len(scope.get("root_path", "")):] or "/"
            if self.prepare is not None:
                for k, v in self.prepare(scope).items():
                    extra_headers.append((k.encode(), v.encode()))
            if self.body_limit is not None:  # before authentication: an oversized body costs nothing
                limit = self.body_limit(scope["method"], path)
                body_limit.check_declared(headers, limit)
                receive = body_limit.bounded_receive(receive, limit)
            req_ctx = await self._admit(scope, path, headers, req_ctx)
            scope["canopy.ctx"] = req_ctx
            await self.app(scope, receive, send_with_headers)
        except ApiError as err:
            if not started:
                await self._send_error(send_with_headers, err)
        except HTTPException as exc:
            if not started:
                await self._send_error(send_with_headers, ApiError(exc.status_code, str(exc.detail)))
        except Exception:
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            if not started:
                await self._send_error(send_with_headers, ApiError(500, "An unexpected error occurred; "
                                                                   f"see the api log for request {request_id}."))
        finally:
            observe_request(self.service, scope, status, t0)  # under the request's context: its ID is logged
            context.reset(token_ctx)
            if scope["method"] in MUTATING:
                self._audit(scope, req_ctx, status, bytes(body) if 200 <= status < 300 else None)

    def _audit(self, scope: Scope, req_ctx: context.RequestContext, status: int, body: bytes | None) -> None:
        writer = self.audit()
        if writer is None or status == 429:  # refused by a rate limit: it did nothing, and floods are cheap
            return
        route = scope.get("route")
        target = target_from_path(scope.get("path_params") or {})
        writer.submit(new_record(
            at=writer.clock.now(), request_id=req_ctx.request_id, user_id=req_ctx.user_id or None,
            user_name=None, project_id=req_ctx.project_id, domain_id=req_ctx.domain_id, service=self.service,
            method=scope["method"], route=getattr(route, "name", None) or "-", path=scope["path"][:1024],
            target_id=target[:255] if target else None,
            source=(scope["client"][0] if scope.get("client") else "-")[:64], status=status,
        ), body if target is None else None)

    async def _admit(self, scope: Scope, path: str, headers: dict[str, str],
                     req_ctx: context.RequestContext) -> context.RequestContext:
        """Rate limits and the token check: the caller's context, or an ApiError (401, 403, 429)."""
        route_class = classify(self.service, scope["method"], path)
        source = scope["client"][0] if scope.get("client") else "-"
        self._limit("source", source, route_class)  # before the token check: it shields that too
        if self.is_public(scope["method"], path):
            return req_ctx
        req_ctx = await self._authenticate(headers, req_ctx)
        context.set_current(req_ctx)
        if req_ctx.project_id:
            self._limit("project", req_ctx.project_id, route_class)
        return req_ctx

    def _limit(self, kind: str, key: str, route_class: str) -> None:
        limiter = self.limiter()
        wait = limiter.check(kind, key, route_class) if limiter is not None else 0.0
        if wait:
            RATE_LIMITED.inc(kind, route_class)
            who = "this project" if kind == "project" else "this address"
            raise ApiError(429, f"Rate limit exceeded for {who} ({route_class} requests); retry later.",
                           neutron_type="OverQuota", retry_after=retry_after_header(wait))

    async def _authenticate(self, headers: dict[str, str], req_ctx: context.RequestContext) -> context.RequestContext:
        token = headers.get("x-auth-token")
        if not token:
            raise ApiError(401, "The request you have made requires authentication.")
        try:
            data = await self.guard().check(token)
        except InvalidToken as exc:
            raise ApiError(401, str(exc)) from None
        kind = data.scope.kind
        # An unscoped or domain-scoped token names no project: outside identity it could only act as a
        # project nobody owns, so only project- and system-scoped tokens go further.
        if self.service != "identity" and kind not in ("project", "system"):
            raise ApiError(403, f"A {kind} token is accepted by the identity service only; "
                                "ask for a project-scoped token.")
        return context.RequestContext(
            request_id=req_ctx.request_id,
            global_request_id=req_ctx.global_request_id,
            user_id=data.user_id,
            project_id=data.project_id or None,
            roles=data.roles,
            domain_id=data.domain_id or None,
            system_scope=data.system,
            token_audit_id=data.audit_id,
        )

    async def _send_error(self, send: Any, err: ApiError) -> None:
        body = json.dumps(error_body(self.service, err)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if err.status == 401:
            headers.append((b"www-authenticate", b'Keystone uri="/identity"'))
        if err.retry_after is not None:
            headers.append((b"retry-after", str(err.retry_after).encode()))
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
