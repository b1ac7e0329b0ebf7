"""The transport interface every bus implementation provides, and the wire envelope they share.

    bus.serve(Target("conductor"), handle)               # one of many conductors gets each message
    bus.serve(Target("agent", host="hv-17"), handle)     # only hv-17 gets its messages
    await bus.cast(Target("agent", host="hv-17"), BuildInstance(...))     # at most once, no reply
    reply = await bus.call(Target("scheduler"), SelectHosts(...), timeout=5)
    await bus.fanout("agent", NetworkUpdate(...))       # every server of the topic

Handlers are `async def handle(msg: Message) -> Message | None`; they run with the sender's
request context restored, so request IDs follow a request across services.

A transport reports its traffic to an optional `BusObserver` passed at wiring time (the metrics pass
one: `make_transport(settings.bus, bind=True, observer=BUS_METRICS)`); the bus itself knows no metrics.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from canopy import context
from canopy.rpc.messages import Ack, Message, decode_message

Handler = Callable[[Message], Awaitable[Message | None]]

# How a failed call is labelled by its exception's class name (anything else: "error").
CALL_OUTCOMES = {"RemoteError": "remote_error", "CallTimeout": "timeout", "NoRoute": "no_route",
                 "CancelledError": "cancelled"}


class BusObserver(Protocol):
    """What a transport tells about its traffic: each message handled, and each call's round trip."""

    def handled(self, kind: str, outcome: str, seconds: float) -> None: ...

    def called(self, kind: str, outcome: str, seconds: float) -> None: ...

    def received(self, frame_kind: str, nbytes: int) -> None: ...


class Unobserved:
    """The observer of a transport that nobody watches."""

    def handled(self, kind: str, outcome: str, seconds: float) -> None:
        """Nothing to record."""

    def called(self, kind: str, outcome: str, seconds: float) -> None:
        """Nothing to record."""

    def received(self, frame_kind: str, nbytes: int) -> None:
        """Nothing to record."""


UNOBSERVED: BusObserver = Unobserved()


@dataclass(frozen=True, slots=True)
class Target:
    """Where a message goes: a topic, and optionally one host serving it."""

    topic: str
    host: str | None = None

    def __str__(self) -> str:
        return f"{self.topic}.{self.host}" if self.host else self.topic


class BusError(Exception):
    """Base of the bus's errors."""


class CallTimeout(BusError):
    """No reply came within the call's timeout."""


class NoRoute(BusError):
    """Nobody serves the target."""


class RemoteError(BusError):
    """The handler on the other side raised; `kind` is its exception's class name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class Transport(Protocol):
    """A message bus: fire-and-forget casts, request/reply calls, and fanout."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def serve(self, target: Target, handler: Handler) -> None: ...

    async def cast(self, target: Target, msg: Message) -> None: ...

    async def call(self, target: Target, msg: Message, timeout: float | None = None) -> Message: ...

    async def fanout(self, topic: str, msg: Message) -> None: ...


_ID_PREFIX = os.urandom(8).hex()  # this process's, random: ids from different processes never meet
_ID_COUNTER = itertools.count()


def new_msg_id() -> str:
    """A message id unique across processes: a random per-process prefix and a counter (uuid4 cost more
    than the rest of wrapping a small message)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def _new_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_prefix)  # a forked child must not repeat its parent's ids


@dataclass(slots=True)
class Envelope:
    """What crosses the wire: the typed body plus routing and the request context."""

    kind: str
    version: int
    body: dict[str, Any]
    msg_id: str = field(default_factory=new_msg_id)
    reply_to: str | None = None
    request_id: str | None = None
    global_request_id: str | None = None
    user_id: str | None = None
    project_id: str | None = None
    error: dict[str, str] | None = None
    sent_at: float = field(default_factory=time.time)

    @classmethod
    def wrap(cls, msg: Message, reply_to: str | None = None) -> Envelope:
        ctx = context.peek()
        return cls(
            kind=msg.kind,
            version=msg.version,
            body=msg.model_dump(mode="json"),
            reply_to=reply_to,
            request_id=ctx.request_id if ctx else None,
            global_request_id=ctx.global_request_id if ctx else None,
            user_id=ctx.user_id if ctx else None,
            project_id=ctx.project_id if ctx else None,
        )

    @classmethod
    def failure(cls, exc: BaseException, reply_to: str | None) -> Envelope:
        return cls(kind="error", version=1, body={}, reply_to=reply_to,
                   error={"type": type(exc).__name__, "message": str(exc)})

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "k": self.kind, "v": self.version, "b": self.body, "id": self.msg_id, "r": self.reply_to,
                "rid": self.request_id, "grid": self.global_request_id, "u": self.user_id,
                "p": self.project_id, "e": self.error, "t": self.sent_at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        d = orjson.loads(data)
        return cls(
            kind=d["k"], version=d["v"], body=d["b"], msg_id=d["id"], reply_to=d.get("r"),
            request_id=d.get("rid"), global_request_id=d.get("grid"), user_id=d.get("u"),
            project_id=d.get("p"), error=d.get("e"), sent_at=d.get("t", 0.0),
        )

    def message(self) -> Message:
        return decode_message(self.kind, self.version, self.body)

    def request_context(self) -> context.RequestContext:
        return context.RequestContext(
            request_id=self.request_id or context.new_request_id(),
            global_request_id=self.global_request_id,
            user_id=self.user_id,
            project_id=self.project_id,
        )


async def dispatch(handler: Handler, env: Envelope, observer: BusObserver = UNOBSERVED) -> Envelope | None:
    """Run a handler for an incoming envelope under its request context; build the reply if one is due.

    Every transport uses this, so a handler sees the same thing whichever bus carried the message.
    """
    token = context.set_current(env.request_context())
    origin = context.statement_origin.set(f"bus:{env.kind}")
    started, outcome = time.perf_counter(), "error"
    try:
        msg = env.message()
        result = await handler(msg)
        outcome = "ok"
        if env.reply_to is None:
            return None
        reply = Envelope.wrap(result if result is not None else Ack(), reply_to=env.reply_to)
        reply.msg_id = env.msg_id
        return reply
    except Exception as exc:  # the caller gets the error; a cast's error is only logged
        if env.reply_to is None:
            import logging

            logging.getLogger("canopy.rpc").exception("handler for %s failed", env.kind)
            return None
        reply = Envelope.failure(exc, env.reply_to)
        reply.msg_id = env.msg_id
        return reply
    finally:
        observer.handled(env.kind, outcome, time.perf_counter() - started)
        context.statement_origin.reset(origin)
        context.reset(token)


def unwrap_reply(env: Envelope) -> Message:
    """The reply's message, or the remote error it carries raised here."""
    if env.error is not None:
        raise RemoteError(env.error.get("type", "Error"), env.error.get("message", ""))
    return env.message()


async def observed_call(observer: BusObserver, kind: str, call: Awaitable[Message]) -> Message:
    """Await a call's reply, telling the observer its round trip by message kind and outcome."""
    t0, outcome = time.perf_counter(), "ok"
    try:
        return await call
    except BaseException as exc:
        outcome = CALL_OUTCOMES.get(type(exc).__name__, "error")
        raise
    finally:
        observer.called(kind, outcome, time.perf_counter() - t0)
