"""The AMQP bus on RabbitMQ (aio-pika): the broker routes, queues and spreads the work.

    <p>.q.<topic>          a shared work queue (conductor, scheduler): a QUORUM queue, durable, replicated
    <p>.h.<topic>.<host>   one host's queue: CLASSIC, durable, deleted after `host_queue_ttl_s` unused
    <p>.n.<node>           a process's inbox (replies, chunks, fanouts): classic, exclusive
    <p>.fanout             a direct exchange; an inbox is bound to it once per topic its process serves

Quorum queues only where the work is shared: each is a Raft group, and ten thousand of them (one per
host) would cost the cluster far more than the classic queues that a single consumer needs.

Publishing waits for the broker's confirm (publisher confirms), and `mandatory` makes a message no
queue takes come back, which is NoRoute. Casts are persistent; a server acknowledges a message only
once its handler has finished, so a confirmed cast survives a broker restart and a consumer crash.
Calls are transient: one in flight when the broker goes away is retried if idempotent, or fails
with CallInterrupted (see canopy.rpc.brokered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, HeadersType
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError, PublishError

from canopy.rpc.base import BusObserver, Handler, NoRoute, Target
from canopy.rpc.brokered import BrokeredTransport, BrokerUnavailable, Headers

log = logging.getLogger("canopy.rpc.amqp")
_SEND_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, RuntimeError)


class AmqpTransport(BrokeredTransport):
    """A bus over RabbitMQ; see the module docstring for its queues."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "canopy",
        default_timeout: float = 30.0,
        prefetch: int = 256,
        host_queue_ttl_s: float = 3600.0,
        max_message: int = 16 << 20,
        send_timeout: float = 10.0,
        reconnect_wait: float = 0.5,
        observer: BusObserver | None = None,
    ) -> None:
        super().__init__(default_timeout=default_timeout, send_timeout=send_timeout, observer=observer)
        self.url, self.prefix, self.prefetch = url, prefix, prefetch
        self.host_queue_ttl_s, self.reconnect_wait = host_queue_ttl_s, reconnect_wait
        self.limit = max_message  # RabbitMQ 4 refuses over 16 MiB by default (3.x: 128 MiB)
        self.inbox = f"{prefix}.n.{self.node_id}"
        self._conn: Any = None
        self._pub: Any = None  # publisher confirms, mandatory: casts, calls, fanouts
        self._fast: Any = None  # no confirms: replies and chunks, which a lost connection dooms anyway
        self._sub: Any = None
        self._inbox_q: Any = None
        self._fanout_x: Any = None
        self._pub_fanout: Any = None
        self._consumers: dict[str, tuple[Any, str]] = {}  # queue name → (the queue, our consumer tag)
        self._bound: set[str] = set()

    def _queue_name(self, target: Target) -> str:
        if target.host:
            return f"{self.prefix}.h.{target.topic}.{target.host}"
        return f"{self.prefix}.q.{target.topic}"

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare the inbox and every served queue, and start consuming."""
        if self._conn is not None:
            return
        self._conn = await aio_pika.connect_robust(self.url, reconnect_interval=self.reconnect_wait,
                                                   client_properties={"connection_name": f"canopy-{self.node_id[:8]}"})
        self._conn.close_callbacks.add(self._on_connection_lost)
        self._conn.reconnect_callbacks.add(self._on_reconnected)
        self._pub = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        self._fast = await self._conn.channel(publisher_confirms=False)
        self._sub = await self._conn.channel(publisher_confirms=False)
        await self._sub.set_qos(prefetch_count=self.prefetch)
        self._fanout_x = await self._sub.declare_exchange(f"{self.prefix}.fanout", aio_pika.ExchangeType.DIRECT,
                                                          durable=True)
        self._pub_fanout = await self._pub.get_exchange(f"{self.prefix}.fanout")
        self._inbox_q = await self._sub.declare_queue(self.inbox, exclusive=True, auto_delete=True,
                                                      arguments={"x-queue-type": "classic"})
        await self._inbox_q.consume(self._on_inbox, no_ack=True)
        for topic, host in [(t, None) for t, hs in self._local_shared.items() if hs] + list(self._local_hosts):
            await self._consume(Target(topic, host))
        self._connected.set()

    async def close(self) -> None:
        """Stop consuming (unacknowledged messages go back to their queues) and close the connection."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        for queue, tag in self._consumers.values():
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        self._bound.clear()
        with contextlib.suppress(Exception):
            await conn.close()
        self._fail_pending(BrokerUnavailable("the bus was closed"))
        await self._cancel_tasks()

    def serve(self, target: Target, handler: Handler) -> None:
        """Handle messages for `target`; once started, its queue is declared and consumed at once."""
        self._add_handler(target, handler)
        if self._conn is not None:
            self._spawn(self._consume(target))

    async def _consume(self, target: Target) -> None:
        name = self._queue_name(target)
        if name in self._consumers:
            return
        if target.host:
            args = {"x-queue-type": "classic", "x-expires": int(self.host_queue_ttl_s * 1000)}
        else:
            args = {"x-queue-type": "quorum"}
        queue = await self._sub.declare_queue(name, durable=True, arguments=args)
        self._consumers[name] = (queue, await queue.consume(self._on_work, no_ack=False))
        if target.topic not in self._bound:
            self._bound.add(target.topic)
            await self._inbox_q.bind(self._fanout_x, routing_key=target.topic)

    # -- sending -----------------------------------------------------------------------------------

    async def _send(self, target: Target, payload: bytes, headers: Headers) -> None:
        cast = "id" not in headers
        message = aio_pika.Message(payload, headers=_amqp(headers),
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT if cast
                                   else aio_pika.DeliveryMode.NOT_PERSISTENT)
        try:
            await self._publish(self._pub, message, self._queue_name(target), mandatory=True)
        except PublishError:
            raise NoRoute(f"nobody serves {target}") from None

    async def _send_inbox(self, inbox: str, payload: bytes, headers: Headers) -> None:
        await self._publish(self._fast, aio_pika.Message(payload, headers=_amqp(headers)), inbox,
                            mandatory=False)

    async def _send_fanout(self, topic: str, payload: bytes, headers: Headers) -> None:
        message = aio_pika.Message(payload, headers=_amqp(headers),
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self._publish(self._pub, message, topic, mandatory=False, fanout=True)

    async def _publish(self, channel: Any, message: aio_pika.Message, key: str, *, mandatory: bool,
                       fanout: bool = False) -> None:
        """Publish, waiting out a reconnection for up to `send_timeout` (then BrokerUnavailable)."""
        if channel is None:
            raise BrokerUnavailable("the bus is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_timeout
        while True:
            try:
                exchange = self._pub_fanout if fanout else channel.default_exchange
                await exchange.publish(message, routing_key=key, mandatory=mandatory)
                return
            except (PublishError, NoRoute):
                raise
            except DeliveryError as exc:  # nacked: the broker could not take it (disk alarm, queue limit)
                raise BrokerUnavailable(f"RabbitMQ refused the message for {key}: {exc}") from None
            except _SEND_ERRORS as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise BrokerUnavailable(f"RabbitMQ unreachable for {self.send_timeout}s: {exc!r}") from None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connected.wait(), left)
                await asyncio.sleep(0.05)  # the channels reopen just after the connection

    # -- receiving ---------------------------------------------------------------------------------

    async def _on_work(self, message: AbstractIncomingMessage) -> None:
        # acknowledged once handled: a consumer that dies mid-way leaves the message to another
        task = self._on_frame(message.body, _headers(message))
        if task is None:
            await message.ack()
            return
        task.add_done_callback(lambda _t: self._spawn(_ack(message)))

    async def _on_inbox(self, message: AbstractIncomingMessage) -> None:
        self._on_frame(message.body, _headers(message))

    # -- connection events -------------------------------------------------------------------------

    def _on_connection_lost(self, *_args: Any) -> None:
        if self._conn is not None:
            log.warning("lost the connection to RabbitMQ; reconnecting")
            self._interrupted()

    def _on_reconnected(self, *_args: Any) -> None:
        log.warning("reconnected to RabbitMQ")
        self._resumed()


def _headers(message: AbstractIncomingMessage) -> Headers:
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (message.headers or {}).items()}


async def _ack(message: AbstractIncomingMessage) -> None:
    with contextlib.suppress(Exception):  # the channel died meanwhile: the broker redelivers it
        await message.ack()


def _amqp(headers: Headers) -> HeadersType:
    """Our string headers as aio-pika's header table (whose values may be of any AMQP field type)."""
    return dict(headers)
