r"""The brokerless ZeroMQ bus: control services bind a ROUTER, every process connects DEALERs out.

When a connection comes up each side announces what it serves in a hello frame, and the other side
answers with its own, so routes are learned both ways over the one connection: an agent that only
connects out can still be cast to and called by the conductor it connected to. Reach is one hop: a
process knows the peers it is connected to (either way); agents do not see each other.

Every message is one frame (after the ROUTER's identity frame); its first byte says what it is:
    H<hello json>                  {"node", "shared": [topic], "hosts": [[topic, host]], "r": answer me}
    M<topic>\0<host>\0<envelope>   a cast or call to one server (host empty for a shared topic)
    F<topic>\0<envelope>           a fanout delivery: every local handler of the topic
    R<envelope>                    the reply to a call, on the path the call came in by
    B / b                          bye (the sender is closing) / its acknowledgement
One frame rather than several because each frame is a libzmq send; JSON never holds a raw NUL.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from canopy.rpc.base import BusError, CallTimeout, Envelope, Handler, NoRoute, Target, dispatch, unwrap_reply
from canopy.rpc.messages import Message

log = logging.getLogger(__name__)
T = TypeVar("T")
_BATCH = 256  # messages read per wake-up before yielding, so one busy socket cannot starve the loop
_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)  # plain ints: enum flags are slow
_SWEEP = 0.01  # call timeouts are checked at most this often, however many calls are in flight


@dataclass(eq=False, slots=True)
class _Node:
    """A process on the bus (a peer, or this one) with what it serves and the links that reach it."""

    node_id: str
    shared: frozenset[str] = frozenset()
    hosts: frozenset[tuple[str, str]] = frozenset()
    links: list[_Link] = field(default_factory=list)

    def serves_topic(self, topic: str) -> bool:
        return topic in self.shared or any(t == topic for t, _ in self.hosts)


@dataclass(eq=False, slots=True)
class _Link:
    """One way to reach a peer: our DEALER connected to it, or our ROUTER plus the peer's identity."""

    sock: zmq.asyncio.Socket
    raw: zmq.Socket[bytes]  # a plain view of `sock`: sends without a Future and a loop trip each
    ident: bytes | None = None
    node: _Node | None = None
    seen: float = 0.0
    greeted: asyncio.Event = field(default_factory=asyncio.Event)
    bye: asyncio.Event = field(default_factory=asyncio.Event)


class ZmqTransport:
    """A bus over ZeroMQ with no broker and no proxy; see the module docstring for the protocol."""

    def __init__(
        self,
        bind: str | None = None,
        connect: list[str] | None = None,
        *,
        default_timeout: float = 30.0,
        route_grace: float = 0.5,
        announce_interval: float = 5.0,
        heartbeat: float = 1.0,
        hwm: int = 50_000,
        send_timeout: float = 5.0,
    ) -> None:
        self.bind = bind
        self.connect = list(connect or [])
        self.default_timeout = default_timeout
        self.route_grace = route_grace
        self.announce_interval = announce_interval
        self.route_ttl = 3 * announce_interval  # three missed re-announcements and a peer is gone
        self.heartbeat = heartbeat
        self.hwm = hwm
        self.send_timeout = send_timeout
        self.node_id = uuid.uuid4().hex
        self.endpoint: str | None = None  # where the ROUTER really bound (resolves a "*" port)
        self._me = _Node(self.node_id)
        self._ctx: zmq.asyncio.Context | None = None
        self._router: _Link | None = None  # the bound socket, as a link without an identity
        self._dealers: list[_Link] = []
        self._monitors: list[zmq.asyncio.Socket] = []
        self._rlinks: dict[bytes, _Link] = {}
        self._nodes: dict[str, _Node] = {}
        self._shared_routes: dict[str, list[_Node]] = {}
        self._host_routes: dict[tuple[str, str], _Node] = {}
        self._local_shared: dict[str, list[Handler]] = {}
        self._local_hosts: dict[tuple[str, str], Handler] = {}
        self._rr: dict[str, int] = {}
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._deadlines: list[tuple[float, str]] = []  # a heap over the pending calls' deadlines
        self._sweep_at = float("inf")
        self._dirty: set[zmq.asyncio.Socket] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._grace_until = 0.0
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and connect, then wait briefly for each connected peer's announcement."""
        if self._running:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._grace_until = loop.time() + self.route_grace
        self._ctx = zmq.asyncio.Context()
        self._running = True
        if self.bind:
            router = self._socket(zmq.ROUTER)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone peer raises: drop its route
            router.bind(self.bind)
            self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._router = _Link(router, zmq.Socket.shadow(router.underlying))
            self._loops.append(loop.create_task(self._read(self._router, router=True)))
        for endpoint in self.connect:
            sock = self._socket(zmq.DEALER)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            # the monitor says when a connection (re)comes up, which is when we must say hello again
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            sock.connect(endpoint)
            link = _Link(sock, zmq.Socket.shadow(sock.underlying))
            self._dealers.append(link)
            self._monitors.append(monitor)
            self._loops.append(loop.create_task(self._read(link, router=False)))
            self._loops.append(loop.create_task(self._watch(link, monitor)))
        self._loops.append(loop.create_task(self._tick()))
        if self._dealers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_all_set(d.greeted for d in self._dealers), self.route_grace)

    async def close(self) -> None:
        """Say goodbye to peers, stop, and close every socket (LINGER 0: nothing is held back)."""
        if not self._running:
            return
        self._running = False
        for link in [*self._dealers, *self._rlinks.values()]:
            link.bye.clear()
            self._send_control(link, b"B")
        # wait a moment for the byes to be acknowledged, so peers drop our routes before we go
        acked = [d.bye for d in self._dealers if d.greeted.is_set()]
        if acked:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_all_set(acked), 0.2)
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BusError("transport closed"))
        for link, monitor in zip(self._dealers, self._monitors, strict=True):
            link.sock.disable_monitor()
            monitor.close(linger=0)
            link.sock.close(linger=0)
        if self._router is not None:
            self._router.sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        self._router, self._ctx = None, None
        self._dealers, self._monitors, self._loops, self._deadlines = [], [], [], []
        for table in (self._rlinks, self._nodes, self._shared_routes, self._host_routes, self._pending):
            table.clear()
        self._tasks.clear()
        self._dirty.clear()

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        assert self._ctx is not None
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        # heartbeats find a dead peer that never closed its connection (a crash, a cut cable)
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(self.heartbeat * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(self.heartbeat * 3000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(self.heartbeat * 3000))
        return sock

    # -- the Transport protocol ------------------------------------------------------------------

    def serve(self, target: Target, handler: Handler) -> None:
        """Handle messages for a target here; peers hear of it at once if we are running."""
        if target.host:
            self._local_hosts[(target.topic, target.host)] = handler
        else:
            self._local_shared.setdefault(target.topic, []).append(handler)
        self._notify()
        if self._running:
            hello = self._hello(answer=False)
            for link in [*self._dealers, *self._rlinks.values()]:
                self._send_control(link, hello)

    async def cast(self, target: Target, msg: Message) -> None:
        """Send to one server of the target at most once; dropped with a warning if nobody serves it."""
        data = Envelope.wrap(msg).encode()
        frame = b"M%s\0%s\0%s" % (target.topic.encode(), (target.host or "").encode(), data)
        while True:
            node = self._pick(target) or await self._await_route(target)
            if node is None:
                log.warning("cast %s to %s dropped: nobody serves it", msg.kind, target)
                return
            if node is self._me:
                handler = self._local_handler(target.topic, target.host)
                if handler is not None:
                    self._spawn(dispatch(handler, Envelope.decode(data)))
                return
            try:
                if await self._post(node.links, frame):
                    return
            except CallTimeout:
                log.warning("cast %s to %s dropped: the peer's queue stayed full", msg.kind, target)
                return
            # every link to that node was gone, so nothing went out: another route keeps at-most-once

    async def call(self, target: Target, msg: Message, timeout: float | None = None) -> Message:
        """Send to one server of the target and return its reply (or raise its error)."""
        timeout = timeout or self.default_timeout
        env = Envelope.wrap(msg, reply_to=self.node_id)
        data = env.encode()
        frame = b"M%s\0%s\0%s" % (target.topic.encode(), (target.host or "").encode(), data)
        while True:
            node = self._pick(target) or await self._await_route(target)
            if node is None:
                raise NoRoute(f"nobody serves {target}")
            if node is self._me:
                return await self._call_local(target, data, timeout)
            assert self._loop is not None
            fut: asyncio.Future[Envelope] = self._loop.create_future()
            self._pending[env.msg_id] = fut
            try:
                if not await self._post(node.links, frame):
                    continue
                self._arm(self._loop.time() + timeout, env.msg_id)
                reply = await fut
            except CallTimeout:
                raise CallTimeout(f"{msg.kind} to {target}: no reply in {timeout}s") from None
            finally:
                self._pending.pop(env.msg_id, None)
            return unwrap_reply(reply)

    async def fanout(self, topic: str, msg: Message) -> None:
        """Deliver to every server of the topic we know of, here and on each peer, once each."""
        data = Envelope.wrap(msg).encode()
        for handler in self._fanout_handlers(topic):
            self._spawn(dispatch(handler, Envelope.decode(data)))
        frame = b"F%s\0%s" % (topic.encode(), data)
        for node in [n for n in self._nodes.values() if n.serves_topic(topic)]:
            try:
                await self._post(node.links, frame)
            except CallTimeout:
                log.warning("fanout %s to %s dropped: the peer's queue stayed full", msg.kind, node.node_id)

    async def _call_local(self, target: Target, data: bytes, timeout: float) -> Message:
        handler = self._local_handler(target.topic, target.host)
        if handler is None:
            raise NoRoute(f"nobody serves {target}")
        task = self._spawn(dispatch(handler, Envelope.decode(data)))
        try:
            reply = await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise CallTimeout(f"call to {target}: no reply in {timeout}s") from None
        assert reply is not None  # a call's envelope has reply_to, so dispatch always replies
        return unwrap_reply(Envelope.decode(reply.encode()))  # through the wire format, as remote

    def _arm(self, deadline: float, msg_id: str) -> None:
        # one heap and one timer for all calls: a timer per call costs more than the call's own send
        heapq.heappush(self._deadlines, (deadline, msg_id))
        if len(self._deadlines) > 2 * len(self._pending) + 1024:  # drop answered calls' entries
            self._deadlines = [d for d in self._deadlines if d[1] in self._pending]
            heapq.heapify(self._deadlines)
        if deadline < self._sweep_at and self._loop is not None:
            self._sweep_at = max(deadline, self._loop.time() + _SWEEP)
            self._loop.call_at(self._sweep_at, self._sweep)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if now < self._sweep_at:  # a timer that an earlier deadline superseded: nothing is due yet
            return
        self._sweep_at = float("inf")
        while self._deadlines and self._deadlines[0][0] <= now:
            fut = self._pending.get(heapq.heappop(self._deadlines)[1])
            if fut is not None and not fut.done():
                fut.set_exception(CallTimeout())
        if self._deadlines:
            self._sweep_at = max(self._deadlines[0][0], now + _SWEEP)
            self._loop.call_at(self._sweep_at, self._sweep)

    # -- routing ---------------------------------------------------------------------------------

    def _pick(self, target: Target) -> _Node | None:
        if target.host:
            key = (target.topic, target.host)
            return self._me if key in self._local_hosts else self._host_routes.get(key)
        peers = self._shared_routes.get(target.topic, ())
        count = len(peers) + (1 if self._local_shared.get(target.topic) else 0)
        if not count:
            return None
        i = self._rr.get(target.topic, 0)
        self._rr[target.topic] = i + 1
        i %= count
        return peers[i] if i < len(peers) else self._me

    async def _await_route(self, target: Target) -> _Node | None:
        # right after start the peers' hellos may still be on their way: wait for them a moment
        loop = asyncio.get_running_loop()
        while self._running and (left := self._grace_until - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
            if (node := self._pick(target)) is not None:
                return node
        return None

    def _local_handler(self, topic: str, host: str | None) -> Handler | None:
        if host:
            return self._local_hosts.get((topic, host))
        handlers = self._local_shared.get(topic)
        if not handlers:
            return None
        i = self._rr.get("\0" + topic, 0)
        self._rr["\0" + topic] = i + 1
        return handlers[i % len(handlers)]

    def _fanout_handlers(self, topic: str) -> list[Handler]:
        hosts = [h for (t, _), h in self._local_hosts.items() if t == topic]
        return list(dict.fromkeys([*self._local_shared.get(topic, ()), *hosts]))

    def _learn(self, link: _Link, hello: dict[str, Any]) -> None:
        node_id = hello["node"]
        if link.node is not None and link.node.node_id != node_id:
            self._detach(link)  # the peer behind this connection was replaced (it restarted)
        node = self._nodes.get(node_id)
        fresh = node is None
        if node is None:
            node = self._nodes[node_id] = _Node(node_id)
        if link.node is None:
            link.node = node
            node.links.append(link)
            if link.ident is not None:
                self._rlinks[link.ident] = link
        shared = frozenset(hello["shared"])
        hosts = frozenset((t, h) for t, h in hello["hosts"])
        if fresh or shared != node.shared or hosts != node.hosts:
            self._unindex(node)
            node.shared, node.hosts = shared, hosts
            for topic in shared:
                self._shared_routes.setdefault(topic, []).append(node)
            for key in hosts:
                # the newest announcer of a host wins: an agent that restarted replaces its old self
                self._host_routes[key] = node
            self._notify()

    def _unindex(self, node: _Node) -> None:
        for topic in node.shared:
            peers = self._shared_routes.get(topic, [])
            if node in peers:
                peers.remove(node)
            if not peers:
                self._shared_routes.pop(topic, None)
        for key in node.hosts:
            if self._host_routes.get(key) is node:
                del self._host_routes[key]
                other = next((n for n in self._nodes.values() if n is not node and key in n.hosts), None)
                if other is not None:
                    self._host_routes[key] = other

    def _detach(self, link: _Link) -> None:
        """Forget a link; a node left with no links is gone and its routes go with it."""
        if link.ident is not None:
            self._rlinks.pop(link.ident, None)
        node, link.node = link.node, None
        if node is None:
            return
        if link in node.links:
            node.links.remove(link)
        if not node.links:
            self._unindex(node)
            self._nodes.pop(node.node_id, None)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- sending ---------------------------------------------------------------------------------

    def _try_send(self, link: _Link, frame: bytes) -> bool:
        """Queue a frame on a link now; False if the peer is gone. Raises zmq.Again at the HWM."""
        try:
            if link.ident is not None:
                link.raw.send(link.ident, _MORE)  # a full queue or a gone peer fails here, not later
            link.raw.send(frame, _NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._detach(link)
            return False
        # libzmq's fd is edge-triggered and a send can swallow the edge of an arrival: have the
        # asyncio socket look at its events again, once per loop turn however many we sent
        if link.sock not in self._dirty:
            if not self._dirty and self._loop is not None:
                self._loop.call_soon(self._recheck)
            self._dirty.add(link.sock)
        return True

    def _recheck(self) -> None:
        for sock in self._dirty:
            if not sock.closed:
                sock.get(zmq.EVENTS)  # the asyncio socket schedules its pending recv if there is input
        self._dirty.clear()

    async def _post(self, links: list[_Link], frame: bytes) -> bool:
        """Send a frame by the first live link; False if none is left. Waits out a full queue."""
        for link in list(links):
            deadline = 0.0
            while True:
                try:
                    if self._try_send(link, frame):
                        return True
                    break
                except zmq.Again:
                    # the peer's queue is full: wait for it to drain rather than drop or block the loop
                    now = time.monotonic()
                    deadline = deadline or now + self.send_timeout
                    if now > deadline:
                        raise CallTimeout(f"peer queue full for {self.send_timeout}s") from None
                    await asyncio.sleep(0.001)
        return False

    def _send_control(self, link: _Link, frame: bytes) -> None:
        # hellos and byes are best effort: a lost one is made good by the next periodic hello
        with contextlib.suppress(zmq.ZMQError):
            self._try_send(link, frame)

    def _hello(self, answer: bool) -> bytes:
        hosts = [list(key) for key in self._local_hosts]
        shared = [t for t, handlers in self._local_shared.items() if handlers]
        return b"H" + json.dumps({"node": self.node_id, "shared": shared, "hosts": hosts, "r": answer}).encode()

    # -- receiving -------------------------------------------------------------------------------

    async def _read(self, link: _Link, router: bool) -> None:
        while True:
            batch = [await link.sock.recv_multipart()]
            while len(batch) < _BATCH:  # drain what has already arrived, without a Future each
                try:
                    batch.append(link.raw.recv_multipart(_NOBLOCK))
                except zmq.Again:
                    break
            for frames in batch:
                try:
                    if router:  # the first frame is the peer's identity
                        ident = frames[0]
                        self._on_frame(self._rlinks.get(ident) or _Link(link.sock, link.raw, ident), frames[-1])
                    else:
                        self._on_frame(link, frames[-1])
                except Exception:
                    log.exception("bad message from %s", frames[0] if router else link.node)
            if len(batch) == _BATCH:
                await asyncio.sleep(0)  # a ready recv does not yield: let the handlers run

    def _on_frame(self, link: _Link, frame: bytes) -> None:
        kind = frame[:1]
        if kind == b"R":
            env = Envelope.decode(frame[1:])
            fut = self._pending.pop(env.msg_id, None)
            if fut is not None and not fut.done():
                fut.set_result(env)
        elif kind == b"M":
            topic, host, data = frame[1:].split(b"\0", 2)
            self._spawn(self._serve_one(link, topic.decode(), host.decode() or None, data))
        elif kind == b"F":
            topic, data = frame[1:].split(b"\0", 1)
            for handler in self._fanout_handlers(topic.decode()):
                self._spawn(dispatch(handler, Envelope.decode(data)))
        elif kind == b"H":
            hello = json.loads(frame[1:])
            link.seen = time.monotonic()
            link.greeted.set()
            if hello["node"] != self.node_id:  # a process connected to itself needs no route to itself
                self._learn(link, hello)
            if hello.get("r"):
                self._send_control(link, self._hello(answer=False))
        elif kind == b"B":
            self._detach(link)
            self._send_control(link, b"b")
        elif kind == b"b":
            link.bye.set()

    async def _serve_one(self, link: _Link, topic: str, host: str | None, data: bytes) -> None:
        try:
            env = Envelope.decode(data)
            handler = self._local_handler(topic, host)
            if handler is not None:
                reply = await dispatch(handler, env)
            elif env.reply_to is not None:  # a stale route sent it here: tell the caller
                reply = Envelope.failure(NoRoute(f"{Target(topic, host)} is not served here"), env.reply_to)
                reply.msg_id = env.msg_id
            else:
                log.warning("cast %s to %s dropped: not served here", env.kind, Target(topic, host))
                return
            if reply is not None:
                frame = b"R" + reply.encode()
                try:
                    self._try_send(link, frame)  # the reply goes back the way the call came
                except zmq.Again:
                    await self._post([link], frame)
        except (zmq.ZMQError, CallTimeout) as exc:
            log.info("reply to %s lost: %s", Target(topic, host), exc)
        except Exception:
            log.exception("serving %s failed", Target(topic, host))

    async def _watch(self, link: _Link, monitor: zmq.asyncio.Socket) -> None:
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._send_control(link, self._hello(answer=True))
            elif event == zmq.EVENT_DISCONNECTED:
                self._detach(link)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.announce_interval)
            hello = self._hello(answer=True)  # the answers refresh our view of the bound peers too
            for link in self._dealers:
                self._send_control(link, hello)
            cutoff = time.monotonic() - self.route_ttl
            for link in [*self._rlinks.values(), *(d for d in self._dealers if d.node is not None)]:
                if link.seen < cutoff:
                    log.info("peer %s silent for %ss: dropping its routes", link.node, self.route_ttl)
                    self._detach(link)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _all_set(events: Iterable[asyncio.Event]) -> None:
    await asyncio.gather(*(e.wait() for e in events))
