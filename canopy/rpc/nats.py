"""The NATS bus (nats-py): every process connects to a NATS cluster and has an inbox subject of its own.

Routing is ours, not the broker's, so that a shared topic is served round robin and a call nobody
serves fails at once with NoRoute. Each process announces what it serves, as the ZeroMQ bus does:
    <p>.hello.a   control services announce here; everyone listens (agents learn the control services)
    <p>.hello.c   agents announce here; control services listen (agents never hear each other)
    <p>.n.<node>  a process's inbox: messages for it, replies, chunks, answers to announcements
    <p>.f.<topic> fanout: every process serving the topic listens
An announcement that asks for answers (a process starting) is answered on the asker's inbox. A
process re-announces every `announce_interval`; one unheard of for three intervals is dropped, and
one that closes says goodbye. Each message to an inbox carries a reply subject so that the server
answers "no responders" when the process is gone: its routes are dropped and the message, which
nobody received, goes to another server of the target.

Frames and big messages are as in canopy.rpc.brokered; NATS's limit is the server's max_payload
(1 MiB by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import nats
import orjson
from nats.aio.msg import Msg
from nats.errors import OutboundBufferLimitError

from canopy.rpc.base import BusObserver, Handler, NoRoute, Target
from canopy.rpc.brokered import BrokeredTransport, BrokerUnavailable, Headers

log = logging.getLogger("canopy.rpc.nats")
_HEADROOM = 4096  # max_payload counts headers too
_NO_RESPONDERS = "503"
_REROUTE_S = 2.0  # how long a sent frame is kept, should the server say nobody got it


@dataclass(slots=True)
class _Peer:
    shared: frozenset[str] = frozenset()
    hosts: frozenset[tuple[str, str]] = frozenset()
    seen: float = 0.0


@dataclass
class RouteTable:
    """Who serves what, learned from announcements; picks a server round robin."""

    peers: dict[str, _Peer] = field(default_factory=dict)
    shared: dict[str, list[str]] = field(default_factory=dict)
    hosts: dict[tuple[str, str], str] = field(default_factory=dict)
    _rr: dict[str, int] = field(default_factory=dict)

    def learn(self, node: str, shared: frozenset[str], hosts: frozenset[tuple[str, str]], now: float) -> bool:
        """Record a node's announcement; True if its routes changed."""
        peer = self.peers.get(node)
        if peer is not None:
            peer.seen = now
            if peer.shared == shared and peer.hosts == hosts:
                return False
            self._unindex(node, peer)
        self.peers[node] = _Peer(shared, hosts, now)
        for topic in shared:
            self.shared.setdefault(topic, []).append(node)
        for key in hosts:
            self.hosts[key] = node  # the newest announcer of a host wins: a restarted agent replaces its old self
        return True

    def forget(self, node: str) -> bool:
        """Drop a node and its routes; True if it was known."""
        peer = self.peers.pop(node, None)
        if peer is None:
            return False
        self._unindex(node, peer)
        return True

    def _unindex(self, node: str, peer: _Peer) -> None:
        for topic in peer.shared:
            nodes = self.shared.get(topic, [])
            if node in nodes:
                nodes.remove(node)
            if not nodes:
                self.shared.pop(topic, None)
        for key in peer.hosts:
            if self.hosts.get(key) == node:
                del self.hosts[key]
                other = next((n for n, p in self.peers.items() if n != node and key in p.hosts), None)
                if other is not None:
                    self.hosts[key] = other

    def pick(self, target: Target) -> str | None:
        """The node to send a message for `target` to, or None if nobody serves it."""
        if target.host:
            return self.hosts.get((target.topic, target.host))
        nodes = self.shared.get(target.topic)
        if not nodes:
            return None
        i = self._rr.get(target.topic, 0)
        self._rr[target.topic] = i + 1
        return nodes[i % len(nodes)]

    def silent_since(self, cutoff: float, keep: str) -> list[str]:
        """Nodes (other than `keep`) not heard from since `cutoff`."""
        return [n for n, p in self.peers.items() if p.seen < cutoff and n != keep]


class NatsTransport(BrokeredTransport):
    """A bus over a NATS cluster; see the module docstring for the subjects and the protocol."""

    def __init__(
        self,
        servers: list[str] | str,
        *,
        control: bool = True,
        prefix: str = "canopy",
        default_timeout: float = 30.0,
        route_grace: float = 0.5,
        announce_interval: float = 5.0,
        reconnect_wait: float = 0.25,
        send_timeout: float = 10.0,
        observer: BusObserver | None = None,
    ) -> None:
        super().__init__(default_timeout=default_timeout, send_timeout=send_timeout, observer=observer)
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.control, self.prefix = control, prefix
        self.route_grace, self.announce_interval, self.reconnect_wait = route_grace, announce_interval, reconnect_wait
        self.inbox = f"{prefix}.n.{self.node_id}"
        self.routes = RouteTable()
        self._nc: Any = None
        self._fanout_subs: dict[str, Any] = {}
        self._sent: dict[str, tuple[str, Target, bytes, Headers]] = {}  # token → (node, target, frame)
        self._sent_order: deque[tuple[float, str]] = deque()
        self._tokens = itertools.count()
        self._changed = asyncio.Event()
        self._grace_until = 0.0
        self._ticker: asyncio.Task[None] | None = None
        self._announced_at = 0.0
        self._answered = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, listen on the inbox and announcement subjects, and announce what is served."""
        if self._nc is not None:
            return
        self._nc = await nats.connect(
            servers=self.servers, name=f"canopy-{self.node_id[:8]}", allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=self.reconnect_wait,
            disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected, error_cb=self._on_error,
        )
        self.limit = self._nc.max_payload - _HEADROOM
        self._connected.set()
        await self._nc.subscribe(self.inbox, cb=self._on_msg)
        await self._nc.subscribe(self.inbox + ".*", cb=self._on_status)  # "no responders" for what we sent
        await self._nc.subscribe(f"{self.prefix}.hello.a", cb=self._on_msg)
        if self.control:
            await self._nc.subscribe(f"{self.prefix}.hello.c", cb=self._on_msg)
        for topic in self._served_topics():
            await self._listen_fanout(topic)
        self._learn_self()
        self._grace_until = time.monotonic() + self.route_grace
        await self._announce(answer=True)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        if not self.control:
            # a control service answers once it has learned our routes: after that, it can reach us
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), self.route_grace)

    async def close(self) -> None:
        """Say goodbye, and close the connection."""
        if self._nc is None:
            return
        nc, self._nc = self._nc, None
        with contextlib.suppress(Exception):
            await nc.publish(self._announce_subject, orjson.dumps({"node": self.node_id, "bye": True}),
                             headers={"k": "hello"})
            await nc.flush(timeout=1)
        if self._ticker is not None:
            self._ticker.cancel()
        with contextlib.suppress(Exception):
            await nc.close()
        self._fail_pending(BrokerUnavailable("the bus was closed"))
        await self._cancel_tasks()
        self._fanout_subs.clear()

    def serve(self, target: Target, handler: Handler) -> None:
        """Handle messages for `target`; once started, the change is announced at once."""
        self._add_handler(target, handler)
        self._learn_self()
        if self._nc is not None:
            self._spawn(self._after_serve(target.topic))

    async def _after_serve(self, topic: str) -> None:
        await self._listen_fanout(topic)
        await self._announce(answer=False)

    async def _listen_fanout(self, topic: str) -> None:
        if topic not in self._fanout_subs and self._nc is not None:
            self._fanout_subs[topic] = await self._nc.subscribe(f"{self.prefix}.f.{topic}", cb=self._on_msg)

    # -- announcements -----------------------------------------------------------------------------

    @property
    def _announce_subject(self) -> str:
        return f"{self.prefix}.hello.{'a' if self.control else 'c'}"

    def _hello(self, answer: bool) -> bytes:
        shared = [t for t, hs in self._local_shared.items() if hs]
        return orjson.dumps({"node": self.node_id, "shared": shared, "hosts": list(self._local_hosts), "r": answer})

    def _learn_self(self) -> None:
        shared = frozenset(t for t, hs in self._local_shared.items() if hs)
        if self.routes.learn(self.node_id, shared, frozenset(self._local_hosts), float("inf")):
            self._notify()

    async def _announce(self, answer: bool) -> None:
        if self._nc is not None:
            await self._nc.publish(self._announce_subject, self._hello(answer), headers={"k": "hello"})

    def _on_hello(self, hello: dict[str, Any]) -> None:
        node = hello["node"]
        if node == self.node_id:
            return
        if hello.get("bye"):
            if self.routes.forget(node):
                self._notify()
            return
        hosts = frozenset((t, h) for t, h in hello["hosts"])
        if self.routes.learn(node, frozenset(hello["shared"]), hosts, time.monotonic()):
            self._notify()
        if not hello.get("r"):
            self._answered.set()
        if hello.get("r") and self._nc is not None:
            self._spawn(self._nc.publish(f"{self.prefix}.n.{node}", self._hello(False), headers={"k": "hello"}))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(min(self.announce_interval, 1.0))
            now = time.monotonic()
            while self._sent_order and self._sent_order[0][0] < now - _REROUTE_S:
                self._sent.pop(self._sent_order.popleft()[1], None)
            if now - self._announced_at >= self.announce_interval:
                self._announced_at = now
                with contextlib.suppress(Exception):
                    await self._announce(answer=False)
                for node in self.routes.silent_since(now - 3 * self.announce_interval, self.node_id):
                    log.info("node %s silent for %ss: dropping its routes", node, 3 * self.announce_interval)
                    self.routes.forget(node)

    # -- sending -----------------------------------------------------------------------------------

    async def _send(self, target: Target, payload: bytes, headers: Headers) -> None:
        node = self.routes.pick(target) or await self._await_route(target)
        if node is None:
            raise NoRoute(f"nobody serves {target}")
        token = str(next(self._tokens))
        self._sent[token] = (node, target, payload, headers)
        self._sent_order.append((time.monotonic(), token))
        await self._publish(f"{self.prefix}.n.{node}", payload, headers, reply=f"{self.inbox}.{token}")

    async def _await_route(self, target: Target) -> str | None:
        # just after start the answers to our announcement may still be on their way
        while (left := self._grace_until - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
            if (node := self.routes.pick(target)) is not None:
                return node
        return None

    async def _send_inbox(self, inbox: str, payload: bytes, headers: Headers) -> None:
        await self._publish(inbox, payload, headers)

    async def _send_fanout(self, topic: str, payload: bytes, headers: Headers) -> None:
        await self._publish(f"{self.prefix}.f.{topic}", payload, headers)

    async def _publish(self, subject: str, payload: bytes, headers: Headers, reply: str = "") -> None:
        if self._nc is None:
            raise BrokerUnavailable("the bus is not started")
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
        except OutboundBufferLimitError:
            raise BrokerUnavailable("NATS is unreachable and the reconnect buffer is full") from None

    # -- receiving ---------------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get("k") == "hello":
            self._on_hello(orjson.loads(msg.data))
        else:
            self._on_frame(msg.data, headers)

    async def _on_status(self, msg: Msg) -> None:
        """A "no responders" answer: the process we sent to is gone; send the frame elsewhere."""
        if (msg.headers or {}).get("Status") != _NO_RESPONDERS:
            return
        sent = self._sent.pop(msg.subject.rsplit(".", 1)[-1], None)
        if sent is None:
            return
        node, target, payload, headers = sent
        log.info("node %s is gone (no responders): dropping its routes", node)
        if self.routes.forget(node):
            self._notify()
        self._spawn(self._reroute(target, payload, headers))

    async def _reroute(self, target: Target, payload: bytes, headers: Headers) -> None:
        try:
            await self._send(target, payload, headers)
        except NoRoute as exc:
            call = self._calls.get(headers.get("id", ""))
            if call is not None and not call.future.done():
                call.future.set_exception(exc)
            elif call is None:
                log.warning("cast to %s dropped: its server is gone and nobody else serves it", target)

    # -- connection events -------------------------------------------------------------------------

    async def _on_disconnected(self) -> None:
        if self._nc is not None:
            log.warning("lost the connection to NATS; reconnecting")
            self._interrupted()

    async def _on_reconnected(self) -> None:
        log.warning("reconnected to NATS at %s", self._nc.connected_url.netloc if self._nc else "?")
        self._resumed()
        with contextlib.suppress(Exception):
            await self._announce(answer=True)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS: %s", exc)
