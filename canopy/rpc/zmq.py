r"""The brokerless ZeroMQ bus: control services bind a ROUTER, every process connects DEALERs out.

When a connection comes up each side announces what it serves in a hello frame and the other side
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
from collections import deque
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

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
    observed_call,
    unwrap_reply,
)
from canopy.rpc.curve import CurveKeys, make_client, make_server, sender_hosts, start_authenticator
from canopy.rpc.messages import Message

log = logging.getLogger(__name__)
T = TypeVar("T")
_BATCH = 256  # messages read, or queued for sending, before the loop gets a turn
_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)  # plain ints: enum flags are slow
_SWEEP = 0.01  # call timeouts are checked at most this often, however many calls are in flight
_FRAME_KINDS = {b"M": "message", b"F": "fanout", b"R": "reply", b"H": "hello", b"B": "bye", b"b": "bye"}
# what to do if a frame cannot reach its link's peer: re-route a cast, or tell a call to; or nothing
_Redo = Target | asyncio.Future[Envelope] | None


class _Unreachable(BusError):
    """The chosen peer was gone before the call went out: nothing was sent, so choose again."""


@dataclass(eq=False, slots=True)
class _Node:
    """A process on the bus (a peer, or this one) with what it serves and the links that reach it."""

    node_id: str
    shared: frozenset[str] = frozenset()
    hosts: frozenset[tuple[str, str]] = frozenset()
    links: list[_Link] = field(default_factory=list)
    topics: frozenset[str] = frozenset()  # every topic it serves, shared or per host (fanouts look here)


@dataclass(eq=False, slots=True)
class _Link:
    """One way to reach a peer: our DEALER connected to it, or our ROUTER plus the peer's identity."""

    sock: zmq.asyncio.Socket
    raw: zmq.Socket[bytes]  # a plain view of `sock`, to send and drain without a Future each
    ident: bytes | None = None
    monitor: zmq.asyncio.Socket | None = None  # a DEALER's connection events
    node: _Node | None = None
    seen: float = 0.0
    greeted: asyncio.Event = field(default_factory=asyncio.Event)
    bye: asyncio.Event = field(default_factory=asyncio.Event)
    backlog: deque[tuple[bytes, _Redo]] = field(default_factory=deque)  # held while the peer is full
    stuck_since: float = 0.0
    key: str | None = None  # with CURVE: the peer's client public key (on the ROUTER side)


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
        observer: BusObserver | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        self.bind, self.connect = bind, list(connect or [])
        self.curve = curve  # None: plain TCP (the default); see canopy/rpc/curve.py
        self.observer = observer or UNOBSERVED
        self.default_timeout, self.route_grace, self.send_timeout = default_timeout, route_grace, send_timeout
        self.announce_interval, self.heartbeat, self.hwm = announce_interval, heartbeat, hwm
        self.route_ttl = 3 * announce_interval  # three missed re-announcements and a peer is gone
        self.node_id = uuid.uuid4().hex
        self.endpoint: str | None = None  # where the ROUTER really bound (resolves a "*" port)
        self._me = _Node(self.node_id)
        self._local_shared: dict[str, list[Handler]] = {}
        self._local_hosts: dict[tuple[str, str], Handler] = {}
        self._local_by_topic: dict[str, dict[str, Handler]] = {}  # topic -> host -> handler (fanouts)
        self._rr: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._running = False
        self._reset()

    def _reset(self) -> None:
        """The state of one run, between start() and close()."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._router: _Link | None = None  # the bound socket, as a link without an identity
        self._auth: Any = None  # with CURVE, the ZAP handler of a binding transport
        self._dealers: list[_Link] = []
        self._rlinks: dict[bytes, _Link] = {}  # the ROUTER's peers by ZMQ identity
        self._nodes: dict[str, _Node] = {}
        self._shared_routes: dict[str, list[_Node]] = {}
        self._host_routes: dict[tuple[str, str], _Node] = {}
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._deadlines: list[tuple[float, str]] = []  # a heap over the pending calls' deadlines
        self._sweep_at = float("inf")
        self._outbox: list[tuple[_Link, bytes, _Redo]] = []
        self._stuck: set[_Link] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._grace_until = 0.0
        self._announcing = False

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
            if self.curve is not None:
                self._auth = start_authenticator(self._ctx, self.curve)
                make_server(router, self.curve)
            router.bind(self.bind)
            self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._router = _Link(router, zmq.Socket.shadow(router.underlying))
            self._loops.append(loop.create_task(self._read(self._router, router=True)))
        for endpoint in self.connect:
            sock = self._socket(zmq.DEALER)
            # the monitor says when a connection (re)comes up, which is when we must say hello again
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            if self.curve is not None:
                make_client(sock, self.curve)
            sock.connect(endpoint)
            link = _Link(sock, zmq.Socket.shadow(sock.underlying), monitor=monitor)
            self._dealers.append(link)
            self._loops += [loop.create_task(self._read(link, router=False)), loop.create_task(self._watch(link))]
        self._loops.append(loop.create_task(self._tick()))
        if self._dealers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_all_set(d.greeted for d in self._dealers), self.route_grace)

    async def close(self) -> None:
        """Send what is queued, say goodbye to peers, and close every socket (LINGER 0)."""
        if not self._running:
            return
        self._running = False
        for link in [*self._dealers, *self._rlinks.values()]:
            link.bye.clear()
            self._enqueue(link, b"B")
        self._flush()
        # wait a moment for the byes to be acknowledged, so peers drop our routes before we go
        if acked := [d.bye for d in self._dealers if d.greeted.is_set()]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_all_set(acked), 0.2)
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BusError("transport closed"))
        for link in self._dealers:
            link.sock.disable_monitor()
            if link.monitor is not None:
                link.monitor.close(linger=0)
            link.sock.close(linger=0)
        if self._router is not None:
            self._router.sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
        self._reset()

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        assert self._ctx is not None
        sock = self._ctx.socket(kind)
        ms = int(self.heartbeat * 1000)
        # heartbeats find a dead peer that never closed its connection (a crash, a cut cable)
        for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, self.hwm), (zmq.RCVHWM, self.hwm),
                           (zmq.HEARTBEAT_IVL, ms), (zmq.HEARTBEAT_TIMEOUT, 3 * ms), (zmq.HEARTBEAT_TTL, 3 * ms),
                           (zmq.RECONNECT_IVL, 100), (zmq.RECONNECT_IVL_MAX, 2000)):
            sock.setsockopt(opt, value)
        return sock

    # -- the Transport protocol ------------------------------------------------------------------

    def serve(self, target: Target, handler: Handler) -> None:
        """Handle messages for a target here; peers hear of it at once if we are running."""
        if target.host:
            self._local_hosts[(target.topic, target.host)] = handler
            self._local_by_topic.setdefault(target.topic, {})[target.host] = handler
        else:
            self._local_shared.setdefault(target.topic, []).append(handler)
        self._notify()
        if self._running and not self._announcing and self._loop is not None:
            # one hello per loop turn, however many targets were added in it: a process starting thousands
            # of simulated agents would otherwise send thousands of ever-longer hellos (quadratic bytes)
            self._announcing = True
            self._loop.call_soon(self._announce)

    def _announce(self) -> None:
        self._announcing = False
        if self._running:
            hello = self._hello(answer=False)
            for link in [*self._dealers, *self._rlinks.values()]:
                self._enqueue(link, hello)

    async def cast(self, target: Target, msg: Message) -> None:
        """Send to one server of the target at most once; dropped with a warning if nobody serves it."""
        data = Envelope.wrap(msg).encode()
        frame = b"M%s\0%s\0%s" % (target.topic.encode(), (target.host or "").encode(), data)
        self._deliver(target, self._pick(target) or await self._await_route(target), frame)

    async def call(self, target: Target, msg: Message, timeout: float | None = None) -> Message:
        """Send to one server of the target and return its reply (or raise its error)."""
        return await observed_call(self.observer, msg.kind, self._call(target, msg, timeout))

    async def _call(self, target: Target, msg: Message, timeout: float | None) -> Message:
        timeout = timeout or self.default_timeout
        env = Envelope.wrap(msg, reply_to=self.node_id)
        data = env.encode()
        frame = b"M%s\0%s\0%s" % (target.topic.encode(), (target.host or "").encode(), data)
        while True:
            node = self._pick(target) or await self._await_route(target)
            if node is None or self._loop is None:
                raise NoRoute(f"nobody serves {target}")
            if node is self._me:
                return await self._call_local(target, data, timeout)
            fut: asyncio.Future[Envelope] = self._loop.create_future()
            self._pending[env.msg_id] = fut
            self._enqueue(node.links[0], frame, fut)
            self._arm(self._loop.time() + timeout, env.msg_id)
            try:
                reply = await fut
            except _Unreachable:
                continue
            except CallTimeout:
                raise CallTimeout(f"{msg.kind} to {target}: no reply in {timeout}s") from None
            finally:
                self._pending.pop(env.msg_id, None)
            return unwrap_reply(reply)

    async def fanout(self, topic: str, msg: Message) -> None:
        """Deliver to every server of the topic we know of, here and on each peer, once each."""
        data = Envelope.wrap(msg).encode()
        for handler in self._fanout_handlers(topic):
            self._spawn(dispatch(handler, Envelope.decode(data), self.observer))
        frame = b"F%s\0%s" % (topic.encode(), data)
        for node in list(self._nodes.values()):
            if topic in node.topics:
                self._enqueue(node.links[0], frame)

    def _deliver(self, target: Target, node: _Node | None, frame: bytes) -> None:
        if node is None:
            log.warning("cast to %s dropped: nobody serves it", target)
        elif node is self._me:
            if (handler := self._local_handler(target.topic, target.host)) is not None:
                self._spawn(dispatch(handler, Envelope.decode(frame.split(b"\0", 2)[2]), self.observer))
        else:
            self._enqueue(node.links[0], frame, target)

    async def _call_local(self, target: Target, data: bytes, timeout: float) -> Message:
        handler = self._local_handler(target.topic, target.host)
        if handler is None:
            raise NoRoute(f"nobody serves {target}")
        task = self._spawn(dispatch(handler, Envelope.decode(data), self.observer))
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
        if self._loop is None or (now := self._loop.time()) < self._sweep_at:
            return  # closed, or a timer that an earlier deadline superseded
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
        if not handlers or len(handlers) == 1:
            return handlers[0] if handlers else None
        i = self._rr.get("\0" + topic, 0)
        self._rr["\0" + topic] = i + 1
        return handlers[i % len(handlers)]

    def _fanout_handlers(self, topic: str) -> list[Handler]:
        hosts = self._local_by_topic.get(topic, {}).values()
        return list(dict.fromkeys([*self._local_shared.get(topic, ()), *hosts]))

    def _learn(self, link: _Link, hello: dict[str, Any]) -> None:
        if link.node is not None and link.node.node_id != hello["node"]:
            self._detach(link)  # the peer behind this connection was replaced (it restarted)
        node = self._nodes.get(hello["node"])
        fresh = node is None
        if node is None:
            node = self._nodes[hello["node"]] = _Node(hello["node"])
        if link.node is None:
            link.node = node
            node.links.append(link)
            if link.ident is not None:
                self._rlinks[link.ident] = link
        shared, hosts = frozenset(hello["shared"]), frozenset((t, h) for t, h in hello["hosts"])
        if self.curve is not None and link.ident is not None:
            hosts = self._bound_hosts(link, hosts)
        if fresh or shared != node.shared or hosts != node.hosts:
            self._unindex(node)
            node.shared, node.hosts = shared, hosts
            node.topics = shared | {t for t, _ in hosts}
            for topic in shared:
                self._shared_routes.setdefault(topic, []).append(node)
            for key in hosts:
                # the newest announcer of a host wins: an agent that restarted replaces its old self
                self._host_routes[key] = node
            self._notify()

    def _bound_hosts(self, link: _Link, hosts: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
        """With CURVE, a peer serves only the hosts its key is bound to: the others' routes stay."""
        assert self.curve is not None
        allowed = self.curve.hosts_of(link.key or "")
        if allowed is None:
            return hosts
        kept = frozenset((t, h) for t, h in hosts if h in allowed)
        if kept != hosts:
            log.warning("bus key %s announced hosts it is not bound to, ignored: %s", link.key,
                        sorted({h for _, h in hosts - kept}))
        return kept

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
        if node is not None and link in node.links:
            node.links.remove(link)
            if not node.links:
                self._unindex(node)
                self._nodes.pop(node.node_id, None)
                self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- sending ---------------------------------------------------------------------------------

    def _enqueue(self, link: _Link, frame: bytes, redo: _Redo = None) -> None:
        # frames go out together once per loop turn: one burst wakes libzmq's I/O thread once, where
        # a send per message wakes it per message (this nearly doubles calls/s on a small machine)
        if not self._outbox and self._loop is not None:
            self._loop.call_soon(self._flush)
        self._outbox.append((link, frame, redo))
        if len(self._outbox) >= _BATCH:  # a sender that never yields must not queue without bound
            self._flush()

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        if self._ctx is None:  # closed: the sockets are gone
            return
        socks = set()
        for link, frame, redo in outbox:
            if link.backlog:  # keep the order: nothing overtakes what waits for a full peer
                link.backlog.append((frame, redo))
            elif not self._send(link, frame, redo):
                link.backlog.append((frame, redo))
                link.stuck_since = time.monotonic()
                if not self._stuck and self._loop is not None:
                    self._loop.call_later(0.001, self._unstick)
                self._stuck.add(link)
            socks.add(link.sock)
        # libzmq's fd is edge-triggered and a send can swallow the edge of an arrival: have each
        # asyncio socket look at its events again, which wakes its reader if input is waiting
        for sock in socks:
            if not sock.closed:
                sock.get(zmq.EVENTS)

    def _send(self, link: _Link, frame: bytes, redo: _Redo) -> bool:
        """Hand a frame to libzmq; False if the peer's queue is full (the frame is not sent)."""
        try:
            if link.ident is not None:
                link.raw.send(link.ident, _MORE)  # a full queue or a gone peer fails here, not later
            link.raw.send(frame, _NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self._detach(link)
            if isinstance(redo, asyncio.Future):
                if not redo.done():
                    redo.set_exception(_Unreachable())
            elif redo is not None:  # nothing went out, so another route keeps a cast at-most-once
                self._deliver(redo, self._pick(redo), frame)
        return True

    def _unstick(self) -> None:
        if self._ctx is None:
            return
        now = time.monotonic()
        for link in list(self._stuck):
            while link.backlog and self._send(link, *link.backlog[0]):
                link.backlog.popleft()
                link.stuck_since = now
            if link.backlog and now - link.stuck_since > self.send_timeout:
                log.warning("dropping %d messages for %s: its queue stayed full", len(link.backlog), link.node)
                link.backlog.clear()  # their calls time out on their own
            if not link.backlog:
                self._stuck.discard(link)
            if not link.sock.closed:
                link.sock.get(zmq.EVENTS)
        if self._stuck and self._loop is not None:
            self._loop.call_later(0.001, self._unstick)

    def _hello(self, answer: bool) -> bytes:
        hosts = [list(key) for key in self._local_hosts]
        shared = [t for t, handlers in self._local_shared.items() if handlers]
        return b"H" + json.dumps({"node": self.node_id, "shared": shared, "hosts": hosts, "r": answer}).encode()

    # -- receiving -------------------------------------------------------------------------------

    async def _read(self, link: _Link, router: bool) -> None:
        if router and self.curve is not None:
            await self._read_curve(link)
            return
        while True:
            batch = [await link.sock.recv_multipart()]
            while len(batch) < _BATCH:  # drain what has already arrived, without a Future each
                try:
                    batch.append(link.raw.recv_multipart(_NOBLOCK))
                except zmq.Again:
                    break
            self._on_batch(link, router, batch)
            if len(batch) == _BATCH:
                await asyncio.sleep(0)  # a ready recv does not yield: let the handlers run

    async def _read_curve(self, link: _Link) -> None:
        """The ROUTER's loop with CURVE: each message also says which client key sent it (`User-Id`)."""
        while True:
            batch = [await link.sock.recv_multipart(copy=False)]
            while len(batch) < _BATCH:
                try:
                    batch.append(link.raw.recv_multipart(_NOBLOCK, copy=False))
                except zmq.Again:
                    break
            keys = [str(frames[-1].get("User-Id")) for frames in batch]
            self._on_batch(link, True, [[f.bytes for f in frames] for frames in batch], keys)
            if len(batch) == _BATCH:
                await asyncio.sleep(0)

    def _on_batch(self, link: _Link, router: bool, batch: list[list[bytes]], keys: list[str] | None = None) -> None:
        for i, frames in enumerate(batch):
            self.observer.received(_FRAME_KINDS.get(frames[-1][:1], "other"), len(frames[-1]))
            try:
                if router:  # the first frame is the peer's identity
                    peer = self._rlinks.get(frames[0]) or _Link(link.sock, link.raw, frames[0])
                    if keys is not None:
                        peer.key = keys[i]
                    self._on_frame(peer, frames[-1])
                else:
                    self._on_frame(link, frames[-1])
            except Exception:
                log.exception("bad message from %s", frames[0] if router else link.node)

    def _on_frame(self, link: _Link, frame: bytes) -> None:
        kind = frame[:1]
        if kind == b"R":
            env = Envelope.decode(frame[1:])
            fut = self._pending.pop(env.msg_id, None)
            if fut is not None and not fut.done():
                fut.set_result(env)
        elif kind == b"M":
            topic, host, data = frame[1:].split(b"\0", 2)
            self._spawn(self._serve_one(link, Target(topic.decode(), host.decode() or None), data))
        elif kind == b"F":
            topic, data = frame[1:].split(b"\0", 1)
            for handler in self._fanout_handlers(topic.decode()):
                self._spawn(dispatch(handler, Envelope.decode(data), self.observer))
        elif kind == b"H":
            hello = json.loads(frame[1:])
            link.seen = time.monotonic()
            link.greeted.set()
            if hello["node"] != self.node_id:  # a process connected to itself needs no route to itself
                self._learn(link, hello)
            if hello.get("r"):
                self._enqueue(link, self._hello(answer=False))
        elif kind == b"B":
            self._detach(link)
            self._enqueue(link, b"b")
        elif kind == b"b":
            link.bye.set()

    async def _serve_one(self, link: _Link, target: Target, data: bytes) -> None:
        if self.curve is not None and link.ident is not None:  # handlers check who may name which host
            sender_hosts.set(self.curve.hosts_of(link.key or ""))
        try:
            env = Envelope.decode(data)
            handler = self._local_handler(target.topic, target.host)
            if handler is not None:
                reply = await dispatch(handler, env, self.observer)
            elif env.reply_to is not None:  # a stale route sent it here: tell the caller
                reply = Envelope.failure(NoRoute(f"{target} is not served here"), env.reply_to)
                reply.msg_id = env.msg_id
            else:
                log.warning("cast %s to %s dropped: not served here", env.kind, target)
                return
            if reply is not None and self._running:
                self._enqueue(link, b"R" + reply.encode())  # back the way the call came
        except Exception:
            log.exception("serving %s failed", target)

    async def _watch(self, link: _Link) -> None:
        assert link.monitor is not None
        while True:
            event = parse_monitor_message(await link.monitor.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._enqueue(link, self._hello(answer=True))
            elif event == zmq.EVENT_DISCONNECTED:
                self._detach(link)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.announce_interval)
            hello = self._hello(answer=True)  # the answers refresh our view of the bound peers too
            for link in self._dealers:
                self._enqueue(link, hello)
            cutoff = time.monotonic() - self.route_ttl
            for link in [*self._rlinks.values(), *(d for d in self._dealers if d.node is not None)]:
                if link.seen < cutoff:
                    log.info("peer %s silent for %ss: dropping its routes", link.node, self.route_ttl)
                    self._detach(link)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = (self._loop or asyncio.get_running_loop()).create_task(coro)  # local handlers work unstarted
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _all_set(events: Iterable[asyncio.Event]) -> None:
    await asyncio.gather(*(e.wait() for e in events))
