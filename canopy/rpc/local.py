"""The in-process bus: every service in one process (the all-in-one, the tests, the simulator).

Messages are encoded and decoded exactly as on a network bus, so a field that does not survive the
wire fails here too.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from collections.abc import Coroutine
from typing import Any

from canopy.rpc.base import (
    UNOBSERVED,
    BusObserver,
    CallTimeout,
    Envelope,
    Handler,
    NoRoute,
    Target,
    dispatch,
    observed_call,
    unwrap_reply,
)
from canopy.rpc.messages import Message

log = logging.getLogger(__name__)


class LocalTransport:
    """A bus inside one process."""

    def __init__(self, default_timeout: float = 30.0, *, observer: BusObserver | None = None) -> None:
        self.default_timeout = default_timeout
        self.observer = observer or UNOBSERVED
        self._shared: dict[str, list[Handler]] = defaultdict(list)
        self._hosts: dict[tuple[str, str], Handler] = {}
        # topic -> host -> handler: a fanout visits its topic's handlers, not every host's every topic
        # (a notification fanout scanned all of a thousand simulated agents' targets per boot)
        self._by_topic: dict[str, dict[str, Handler]] = defaultdict(dict)
        self._rr: dict[str, itertools.count[int]] = defaultdict(itertools.count)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()

    def serve(self, target: Target, handler: Handler) -> None:
        if target.host:
            self._hosts[(target.topic, target.host)] = handler
            self._by_topic[target.topic][target.host] = handler
        else:
            self._shared[target.topic].append(handler)

    def unserve(self, target: Target) -> None:
        """Stop serving a target (an agent going away)."""
        if target.host:
            self._hosts.pop((target.topic, target.host), None)
            self._by_topic.get(target.topic, {}).pop(target.host, None)
        else:
            self._shared.pop(target.topic, None)

    def _route(self, target: Target) -> Handler | None:
        if target.host:
            return self._hosts.get((target.topic, target.host))
        handlers = self._shared.get(target.topic)
        if not handlers:
            return None
        return handlers[next(self._rr[target.topic]) % len(handlers)]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cast(self, target: Target, msg: Message) -> None:
        handler = self._route(target)
        if handler is None or self._closed:
            log.warning("cast %s to %s dropped: nobody serves it", msg.kind, target)
            return
        env = Envelope.decode(Envelope.wrap(msg).encode())
        self._spawn(dispatch(handler, env, self.observer))

    async def call(self, target: Target, msg: Message, timeout: float | None = None) -> Message:
        return await observed_call(self.observer, msg.kind, self._call(target, msg, timeout))

    async def _call(self, target: Target, msg: Message, timeout: float | None) -> Message:
        handler = self._route(target)
        if handler is None or self._closed:
            raise NoRoute(f"nobody serves {target}")
        env = Envelope.decode(Envelope.wrap(msg, reply_to="local").encode())
        limit = timeout or self.default_timeout
        try:
            # The handler runs in the caller's task: no task to create and no trip to the back of the
            # event loop's queue, so an in-process call costs what the handler costs.
            async with asyncio.timeout(limit):
                reply = await dispatch(handler, env, self.observer)
        except TimeoutError:
            raise CallTimeout(f"{msg.kind} to {target}: no reply in {limit}s") from None
        assert reply is not None, "a call's envelope has reply_to: dispatch always answers it"
        return unwrap_reply(Envelope.decode(reply.encode()))

    async def fanout(self, topic: str, msg: Message) -> None:
        handlers = list(self._shared.get(topic, ()))
        handlers += self._by_topic[topic].values() if topic in self._by_topic else ()
        data = Envelope.wrap(msg).encode()
        for handler in dict.fromkeys(handlers):
            self._spawn(_deliver(handler, data, self.observer))



async def _deliver(handler: Handler, data: bytes, observer: BusObserver) -> None:
    """Decode a fanout for one handler when its task runs: a fanout to a thousand simulated agents does not
    build a thousand decoded copies up front (they only fed the garbage collector)."""
    await dispatch(handler, Envelope.decode(data), observer)
