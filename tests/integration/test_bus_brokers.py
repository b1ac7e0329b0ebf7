"""Broker restarts on the brokered buses, against PRIVATE brokers this module starts and restarts
(a nats-server, a RabbitMQ node), stopped by the PIDs it started.

What must hold: both sides reconnect by themselves; an idempotent call in flight during the restart
is sent again and answered; any other call in flight fails with CallInterrupted saying it may or may
not have run; after the restart calls and casts work both ways; and on RabbitMQ nothing the broker
confirmed is lost (casts waiting in a quorum queue and in a host's classic queue are delivered after
the restart). Messages over NATS's 1 MiB limit arrive whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from canopy.rpc.amqp import AmqpTransport
from canopy.rpc.base import Target
from canopy.rpc.brokered import CallInterrupted
from canopy.rpc.messages import Message
from canopy.rpc.nats import NatsTransport
from tests.integration.brokers import NatsServer, RabbitNode

SVC, HOST = Target("restart_svc"), Target("restart_agent", "hv-1")


class SlowEcho(Message):
    """Not idempotent: a call that must not run twice."""

    kind: ClassVar[str] = "restart_slow_echo"
    n: int = 0
    sleep: float = 0.0
    payload: str = ""


class SafeEcho(SlowEcho):
    """The same, marked idempotent: the bus may send it again after a reconnect."""

    kind: ClassVar[str] = "restart_safe_echo"
    idempotent: ClassVar[bool] = True


class Echoed(Message):
    kind: ClassVar[str] = "restart_echoed"
    n: int
    size: int = 0


class Recorder:
    def __init__(self) -> None:
        self.got: list[int] = []

    async def __call__(self, msg: Message) -> Message:
        assert isinstance(msg, SlowEcho)
        self.got.append(msg.n)
        if msg.sleep:
            await asyncio.sleep(msg.sleep)
        return Echoed(n=msg.n, size=len(msg.payload))


async def until(cond: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with NatsServer.start() as server:
        yield server


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitNode]:
    with RabbitNode.start() as node:
        yield node


def make(kind: str, url: str, control: bool) -> Any:
    if kind == "nats":
        return NatsTransport(url, control=control, prefix="restart", default_timeout=30.0)
    return AmqpTransport(url, prefix="restart", default_timeout=30.0)


@pytest.fixture(params=["nats", "amqp"])
def broker(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("nats_server" if request.param == "nats" else "rabbit")


async def test_calls_survive_a_broker_restart(broker: Any) -> None:
    kind = "nats" if isinstance(broker, NatsServer) else "amqp"
    svc, agent_side = Recorder(), Recorder()
    control = make(kind, broker.url, True)
    control.serve(SVC, svc)
    await control.start()
    agent = make(kind, broker.url, False)
    agent.serve(HOST, agent_side)
    await agent.start()
    try:
        assert (await agent.call(SVC, SafeEcho(n=1))).n == 1  # type: ignore[attr-defined]

        safe = asyncio.create_task(agent.call(SVC, SafeEcho(n=2, sleep=0.5)))
        unsafe = asyncio.create_task(agent.call(SVC, SlowEcho(n=3, sleep=0.5)))
        await until(lambda: {2, 3} <= set(svc.got))  # both are running on the server
        await asyncio.to_thread(broker.restart, 0.2)

        with pytest.raises(CallInterrupted, match="may or may not have run"):
            await unsafe
        reply = await safe
        assert reply.n == 2  # type: ignore[attr-defined]

        # both ways, calls and casts, once the bus is back
        assert (await agent.call(SVC, SlowEcho(n=4))).n == 4  # type: ignore[attr-defined]
        assert (await control.call(HOST, SlowEcho(n=5))).n == 5  # type: ignore[attr-defined]
        await control.cast(HOST, SlowEcho(n=6))
        await until(lambda: 6 in agent_side.got)
    finally:
        await agent.close()
        await control.close()


async def test_confirmed_casts_are_not_lost_across_a_rabbitmq_restart(rabbit: RabbitNode) -> None:
    first_svc, first_host = Recorder(), Recorder()
    server = make("amqp", rabbit.url, True)
    server.serve(Target("restart_work"), first_svc)
    server.serve(Target("restart_agent", "hv-9"), first_host)
    await server.start()  # declares the quorum work queue and the host's classic queue
    await server.close()  # nobody consumes now: what is sent waits in the queues

    sender = make("amqp", rabbit.url, True)
    await sender.start()
    try:
        for n in range(20):
            await sender.cast(Target("restart_work"), SlowEcho(n=n))  # returns once the broker confirmed it
            await sender.cast(Target("restart_agent", "hv-9"), SlowEcho(n=100 + n))
        await asyncio.to_thread(rabbit.restart)

        svc, host = Recorder(), Recorder()
        again = make("amqp", rabbit.url, True)
        again.serve(Target("restart_work"), svc)
        again.serve(Target("restart_agent", "hv-9"), host)
        await again.start()
        try:
            await until(lambda: len(svc.got) >= 20 and len(host.got) >= 20)
            assert sorted(svc.got) == list(range(20)) and sorted(host.got) == list(range(100, 120))
        finally:
            await again.close()
    finally:
        await sender.close()


async def test_a_message_over_the_nats_limit_arrives_whole(nats_server: NatsServer) -> None:
    svc = Recorder()
    control = make("nats", nats_server.url, True)
    control.serve(SVC, svc)
    await control.start()
    agent = make("nats", nats_server.url, False)
    await agent.start()
    try:
        assert agent.limit < 1 << 20  # the server's default max_payload, less room for headers
        big = "x" * (3 * (1 << 20) + 12345)  # three and a bit MiB: four chunks
        reply = await agent.call(SVC, SlowEcho(n=7, payload=big))
        assert (reply.n, reply.size) == (7, len(big))  # type: ignore[attr-defined]
        await agent.cast(SVC, SlowEcho(n=8, payload=big))
        await until(lambda: 8 in svc.got)
    finally:
        await agent.close()
        await control.close()
