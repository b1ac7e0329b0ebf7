"""The request context: who asked and under which request ID, carried across the bus and into logs."""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass, field, replace


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str = field(default_factory=new_request_id)
    global_request_id: str | None = None
    user_id: str | None = None
    project_id: str | None = None
    roles: tuple[str, ...] = ()
    domain_id: str | None = None      # set for a domain-scoped token
    system_scope: bool = False        # a system-scoped token
    token_audit_id: str | None = None

    @property
    def is_admin(self) -> bool:
        """A cloud administrator: the admin role on a project or on the system (a domain's admin is not)."""
        return "admin" in self.roles and self.domain_id is None

    def with_new_request_id(self) -> RequestContext:
        return replace(self, request_id=new_request_id())


# Which part of the system a database statement is issued for (an API route, a bus message): for budgets.
statement_origin: contextvars.ContextVar[str] = contextvars.ContextVar("statement_origin", default="other")

_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("request_context", default=None)


def current() -> RequestContext:
    """The context of the request being served (a fresh system context when there is none)."""
    ctx = _current.get()
    if ctx is None:
        ctx = RequestContext()
        _current.set(ctx)
    return ctx


def set_current(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    return _current.set(ctx)


def reset(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)


def peek() -> RequestContext | None:
    """The current context, or None when no request is being served (for log lines)."""
    return _current.get()
