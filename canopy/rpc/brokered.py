"""What the two brokered buses (NATS, AMQP) share: calls waiting for replies, handlers run under the
sender's context, messages bigger than the broker takes, and what a broker restart does to calls.

Every frame is a broker message with a few headers; `k` says what it is:
    m  a cast or call for one server (`t` topic, `h` host)     f  a fanout for every server of `t`
    r  the reply to a call                                     g / c  a chunk request / the chunk
A frame whose envelope is over the broker's limit goes out as a pointer (`b` blob id, `n` chunks,
`o` the owner's inbox); the receiver pulls the chunks from the owner, each under the limit, and then
handles it as if it had come whole. Pulling (rather than pushing chunks) is what works when the
broker, not the sender, picks which server of a topic gets the message.

Broker restarts: the transport reconnects by itself. A call in flight when the connection dropped
may or may not have run: an idempotent one (its message class says `idempotent = True`) is sent
again once the connection is back, any other fails with CallInterrupted, which says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from canopy.rpc.base import (
    UNOBSERVED,
    BusError,
    BusObserver,
    CallTimeout,
    Envelope,
    Handler,
    NoRoute,
    Target,
    dispatch,
    unwrap_reply,
)
from canopy.rpc.messages import Message

log = logging.getLogger("canopy.rpc")
T = TypeVar("T")
Headers = dict[str, str]


class BrokerUnavailable(BusError):
    """The broker could not be reached within the send timeout: nothing was sent."""


class CallInterrupted(BusError):
    """The broker connection dropped while a call that is not idempotent was in flight."""


def is_idempotent(msg: Message) -> bool:
    """Whether a message may be delivered twice safely (its class sets `idempotent = True`)."""
    return bool(getattr(type(msg), "idempotent", False))


def chunk_count(size: int, limit: int) -> int:
    """How many chunks of at most `limit` bytes carry `size` bytes."""
    return max(1, -(-size // limit))


@dataclass(eq=False, slots=True)
class _Call:
    """A call waiting for its reply, with what is needed to send it again."""

    msg_id: str
    future: asyncio.Future[Envelope]
    target: Target
    data: bytes
    kind: str
    idempotent: bool
    epoch: int


class BrokeredTransport:
    """The broker-independent half of a brokered bus; subclasses move the frames."""

    inbox: str = ""  # this process's own address: replies and chunk requests come here
    limit: int = 1 << 20  # the largest frame body the broker takes, less room for headers

    def __init__(self, *, default_timeout: float = 30.0, send_timeout: float = 10.0, blob_ttl: float = 120.0,
                 observer: BusObserver | None = None) -> None:
        self.default_timeout, self.send_timeout, self.blob_ttl = default_timeout, send_timeout, blob_ttl
        self.observer = observer or UNOBSERVED
        self.node_id = uuid.uuid4().hex
        self._local_shared: dict[str, list[Handler]] = {}
        self._local_hosts: dict[tuple[str, str], Handler] = {}
        self._rr: dict[str, int] = {}
        self._calls: dict[str, _Call] = {}
        self._blobs: dict[str, tuple[bytes, float]] = {}
        self._chunk_waiters: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._epoch = 0
        self._connected = asyncio.Event()
        self.retried = 0  # idempotent calls sent again after a reconnect (for tests and metrics)

    # -- subclass hooks ----------------------------------------------------------------------------

    async def _send(self, target: Target, payload: bytes, headers: Headers) -> None:
        """Send a frame to one server of `target`; raise NoRoute if nobody serves it."""
        raise NotImplementedError

    async def _send_inbox(self, inbox: str, payload: bytes, headers: Headers) -> None:
        """Send a frame to one process's inbox (best effort)."""
        raise NotImplementedError

    async def _send_fanout(self, topic: str, payload: bytes, headers: Headers) -> None:
        """Send a frame to every process serving `topic`."""
        raise NotImplementedError

    # -- serving -----------------------------------------------------------------------------------

    def _add_handler(self, target: Target, handler: Handler) -> None:
        if target.host:
            self._local_hosts[(target.topic, target.host)] = handler
        else:
            self._local_shared.setdefault(target.topic, []).append(handler)

    def _handler_for(self, topic: str, host: str | None) -> Handler | None:
        if host:
            return self._local_hosts.get((topic, host))
        handlers = self._local_shared.get(topic)
        if not handlers:
            return None
        i = self._rr.get(topic, 0)
        self._rr[topic] = i + 1
        return handlers[i % len(handlers)]

    def _fanout_handlers(self, topic: str) -> list[Handler]:
        hosts = [h for (t, _), h in self._local_hosts.items() if t == topic]
        return list(dict.fromkeys([*self._local_shared.get(topic, ()), *hosts]))

    def _served_topics(self) -> set[str]:
        return {t for t, hs in self._local_shared.items() if hs} | {t for t, _ in self._local_hosts}

    # -- sending -----------------------------------------------------------------------------------

    async def cast(self, target: Target, msg: Message) -> None:
        """Send a message to one server of the target, with no reply (dropped if nobody serves it)."""
        payload, headers = self._wrap(Envelope.wrap(msg).encode(), {"k": "m", "t": target.topic,
                                                                     "h": target.host or ""})
        try:
            await self._send(target, payload, headers)
        except NoRoute:
            log.warning("cast %s to %s dropped: nobody serves it", msg.kind, target)

    async def call(self, target: Target, msg: Message, timeout: float | None = None) -> Message:
        """Send a message to one server of the target and wait for its reply."""
        limit = timeout or self.default_timeout
        env = Envelope.wrap(msg, reply_to=self.inbox)
        loop = asyncio.get_running_loop()
        call = _Call(env.msg_id, loop.create_future(), target, env.encode(), msg.kind, is_idempotent(msg), self._epoch)
        self._calls[env.msg_id] = call
        try:
            async with asyncio.timeout(limit):
                await self._send_call(call)
                reply = await call.future
        except TimeoutError:
            raise CallTimeout(f"{msg.kind} to {target}: no reply in {limit}s") from None
        finally:
            self._calls.pop(env.msg_id, None)
        return unwrap_reply(reply)

    async def _send_call(self, call: _Call) -> None:
        headers = {"k": "m", "t": call.target.topic, "h": call.target.host or "", "id": call.msg_id}
        payload, headers = self._wrap(call.data, headers)
        await self._send(call.target, payload, headers)
        call.epoch = self._epoch  # sent (or confirmed) on this connection: a drop from here on interrupts it

    async def fanout(self, topic: str, msg: Message) -> None:
        """Send a message to every server of the topic."""
        payload, headers = self._wrap(Envelope.wrap(msg).encode(), {"k": "f", "t": topic})
        await self._send_fanout(topic, payload, headers)

    # -- big messages --------------------------------------------------------------------------------

    def _wrap(self, data: bytes, headers: Headers) -> tuple[bytes, Headers]:
        """The frame as is, or, over the limit, a pointer to it kept here for receivers to pull."""
        if len(data) <= self.limit:
            return data, headers
        now = time.monotonic()
        for key in [k for k, (_, exp) in self._blobs.items() if exp < now]:
            del self._blobs[key]
        blob = uuid.uuid4().hex
        self._blobs[blob] = (data, now + self.blob_ttl)
        return b"", {**headers, "b": blob, "n": str(chunk_count(len(data), self.limit)), "o": self.inbox}

    async def _unwrap(self, payload: bytes, headers: Headers) -> bytes:
        """The whole frame: the payload, or the chunks pulled from the owner of a pointer."""
        if "b" not in headers:
            return payload
        blob, owner = headers["b"], headers["o"]
        parts = await asyncio.gather(*(self._pull(owner, blob, i) for i in range(int(headers["n"]))))
        return b"".join(parts)

    async def _pull(self, owner: str, blob: str, index: int) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._chunk_waiters[(blob, index)] = fut
        try:
            await self._send_inbox(owner, b"", {"k": "g", "b": blob, "i": str(index), "o": self.inbox})
            async with asyncio.timeout(self.default_timeout):
                return await fut
        finally:
            self._chunk_waiters.pop((blob, index), None)

    async def _serve_chunk(self, headers: Headers) -> None:
        blob, index = headers["b"], int(headers["i"])
        found = self._blobs.get(blob)
        if found is None:
            log.warning("chunk %s/%s asked for after it expired", blob, index)
            return
        part = found[0][index * self.limit:(index + 1) * self.limit]
        await self._send_inbox(headers["o"], part, {"k": "c", "b": blob, "i": str(index)})

    # -- receiving ---------------------------------------------------------------------------------

    def _on_frame(self, payload: bytes, headers: Headers) -> asyncio.Task[None] | None:
        """Handle one frame from the broker; returns the task doing it, if any."""
        kind = headers.get("k", "")
        if kind == "c":
            fut = self._chunk_waiters.get((headers["b"], int(headers["i"])))
            if fut is not None and not fut.done():
                fut.set_result(payload)
            return None
        if kind == "r" and "b" not in headers:
            self._resolve(payload)
            return None
        return self._spawn(self._handle(kind, payload, headers))

    async def _handle(self, kind: str, payload: bytes, headers: Headers) -> None:
        try:
            if kind == "g":
                await self._serve_chunk(headers)
                return
            data = await self._unwrap(payload, headers)
            if kind == "r":
                self._resolve(data)
            elif kind == "f":
                handlers = self._fanout_handlers(headers["t"])
                await asyncio.gather(*(dispatch(h, Envelope.decode(data), self.observer) for h in handlers))
            elif kind == "m":
                await self._serve_one(headers["t"], headers.get("h") or None, data)
        except Exception:
            log.exception("handling a %r frame failed", kind)

    async def _serve_one(self, topic: str, host: str | None, data: bytes) -> None:
        env = Envelope.decode(data)
        handler = self._handler_for(topic, host)
        if handler is not None:
            reply = await dispatch(handler, env, self.observer)
        elif env.reply_to is not None:
            reply = Envelope.failure(NoRoute(f"{Target(topic, host)} is not served here"), env.reply_to)
            reply.msg_id = env.msg_id
        else:
            log.warning("cast %s to %s dropped: not served here", env.kind, Target(topic, host))
            return
        if reply is not None and reply.reply_to:
            payload, headers = self._wrap(reply.encode(), {"k": "r"})
            await self._send_inbox(reply.reply_to, payload, headers)

    def _resolve(self, data: bytes) -> None:
        env = Envelope.decode(data)
        call = self._calls.get(env.msg_id)
        if call is not None and not call.future.done():
            call.future.set_result(env)

    # -- connection loss ---------------------------------------------------------------------------

    def _interrupted(self) -> None:
        """The broker connection dropped: fail the calls in flight that must not be sent twice."""
        self._connected.clear()
        self._epoch += 1
        for call in list(self._calls.values()):
            if call.idempotent or call.future.done() or call.epoch >= self._epoch:
                continue
            call.future.set_exception(CallInterrupted(
                f"the connection to the message broker dropped while {call.kind} to {call.target} was in flight; "
                f"it may or may not have run, and is not retried because {call.kind} is not idempotent"))

    def _resumed(self) -> None:
        """The connection is back: send again the idempotent calls that were in flight."""
        self._connected.set()
        for call in list(self._calls.values()):
            if call.idempotent and not call.future.done() and call.epoch < self._epoch:
                self.retried += 1
                self._spawn(self._resend(call))

    async def _resend(self, call: _Call) -> None:
        try:
            await self._send_call(call)
        except Exception as exc:
            if not call.future.done():
                call.future.set_exception(exc)

    def _fail_pending(self, exc: BaseException) -> None:
        for call in list(self._calls.values()):
            if not call.future.done():
                call.future.set_exception(exc)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
