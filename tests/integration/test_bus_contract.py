"""The bus contract: every transport must pass these same tests, unchanged.

A test asks the `bus` fixture for a control service and for agents. Over ZeroMQ the control service
binds a ROUTER on a free loopback port and each agent is a separate transport that connects to it;
in-process, every role is a view of one shared LocalTransport.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from canopy import context
from canopy.rpc.base import CallTimeout, Handler, NoRoute, RemoteError, Target, Transport
from canopy.rpc.local import LocalTransport
from canopy.rpc.messages import Message
from canopy.rpc.zmq import ZmqTransport

SVC = Target("contract_svc")


def _nats(url: str, control: bool, prefix: str) -> Transport:
    from canopy.rpc.nats import NatsTransport

    return NatsTransport(url, control=control, prefix=prefix, default_timeout=5.0)  # type: ignore[return-value]


def _amqp(url: str, control: bool, prefix: str) -> Transport:
    from canopy.rpc.amqp import AmqpTransport

    return AmqpTransport(url, prefix=prefix, default_timeout=5.0)  # type: ignore[return-value]


# brokered buses: every role connects to the broker (a private one per session, see conftest.py);
# each test's transports use subjects/queues of their own (`prefix`)
BROKERED: dict[str, Callable[[str, bool, str], Transport]] = {"nats": _nats, "amqp": _amqp}


class ContractEcho(Message):
    """A request at schema version 3; `note` is new in v3 and upgrade() fills it for v2 senders."""

    kind: ClassVar[str] = "contract_echo"
    version: ClassVar[int] = 3

    n: int = 0
    text: str = ""
    note: str
    sleep: float = 0.0
    fail: str = ""

    @classmethod
    def upgrade(cls, body: dict[str, Any], from_version: int) -> dict[str, Any]:
        return {**body, "note": f"upgraded from v{from_version}"}


class ContractEchoReply(Message):
    """What the echo server answers: the request's fields, who served it, and its request context."""

    kind: ClassVar[str] = "contract_echo_reply"

    n: int
    text: str
    note: str
    served_by: str
    request_id: str | None = None
    global_request_id: str | None = None


class _EchoV2(Message):
    """contract_echo as a sender one schema version behind builds it (no `note`)."""

    version: ClassVar[int] = 2
    n: int = 0
    text: str = ""


class _EchoV1(_EchoV2):
    """contract_echo two schema versions behind."""

    version: ClassVar[int] = 1


# set after the class bodies so these old shapes are not registered as the receivers of the kind
_EchoV2.kind = "contract_echo"
_EchoV1.kind = "contract_echo"


class Server:
    """A handler that records what it got (with the request context it ran under) and echoes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[tuple[Message, context.RequestContext]] = []

    async def __call__(self, msg: Message) -> Message | None:
        ctx = context.current()
        self.got.append((msg, ctx))
        assert isinstance(msg, ContractEcho)
        if msg.sleep:
            await asyncio.sleep(msg.sleep)
        if msg.fail:
            raise ValueError(msg.fail)
        return ContractEchoReply(
            n=msg.n, text=msg.text, note=msg.note, served_by=self.name,
            request_id=ctx.request_id, global_request_id=ctx.global_request_id,
        )

    @property
    def ns(self) -> list[int]:
        return [m.n for m, _ in self.got if isinstance(m, ContractEcho)]


class _LocalView:
    """One role's handle on the shared in-process bus: closing it withdraws only what it served."""

    def __init__(self, bus: LocalTransport) -> None:
        self.bus = bus
        self.served: list[Target] = []

    async def start(self) -> None:
        await self.bus.start()

    async def close(self) -> None:
        for target in self.served:
            self.bus.unserve(target)

    def serve(self, target: Target, handler: Handler) -> None:
        self.served.append(target)
        self.bus.serve(target, handler)

    async def cast(self, target: Target, msg: Message) -> None:
        await self.bus.cast(target, msg)

    async def call(self, target: Target, msg: Message, timeout: float | None = None) -> Message:
        return await self.bus.call(target, msg, timeout)

    async def fanout(self, topic: str, msg: Message) -> None:
        await self.bus.fanout(topic, msg)


class Bus:
    """Makes one test's transports over one kind of bus, and closes them all afterwards."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.shared = LocalTransport(default_timeout=5.0)
        self.endpoint: str | None = None
        self.opened: list[Transport] = []
        self.broker_url = ""
        self.prefix = f"contract{uuid.uuid4().hex[:8]}"

    async def control(self, *serving: tuple[Target, Handler]) -> Transport:
        """The control service (one a test): over zmq it binds, and agents connect to it."""
        if self.kind == "zmq":
            t: Transport = ZmqTransport(bind="tcp://127.0.0.1:*", default_timeout=5.0)
        elif self.kind in BROKERED:
            t = BROKERED[self.kind](self.broker_url, True, self.prefix)
        else:
            t = _LocalView(self.shared)
        return await self._start(t, serving)

    async def agent(self, *serving: tuple[Target, Handler]) -> Transport:
        """An agent: over zmq a separate transport that only connects out to the control service."""
        if self.kind == "zmq":
            assert self.endpoint is not None, "start the control service first"
            t: Transport = ZmqTransport(connect=[self.endpoint], default_timeout=5.0)
        elif self.kind in BROKERED:
            t = BROKERED[self.kind](self.broker_url, False, self.prefix)
        else:
            t = _LocalView(self.shared)
        return await self._start(t, serving)

    async def _start(self, t: Transport, serving: tuple[tuple[Target, Handler], ...]) -> Transport:
        self.opened.append(t)
        for target, handler in serving:
            t.serve(target, handler)
        await t.start()
        if isinstance(t, ZmqTransport) and t.endpoint:
            self.endpoint = t.endpoint
        return t

    async def close(self, t: Transport) -> None:
        if t in self.opened:
            self.opened.remove(t)
            await t.close()

    async def close_all(self) -> None:
        for t in reversed(self.opened):
            await t.close()
        self.opened.clear()
        await self.shared.close()


@pytest.fixture(params=["local", "zmq", "nats", "amqp"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    harness = Bus(request.param)
    if request.param in BROKERED:
        harness.broker_url = request.getfixturevalue(f"{request.param}_broker")
    try:
        yield harness
    finally:
        await harness.close_all()


async def until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait for a condition the bus makes true asynchronously; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def echo(n: int = 0, **kw: Any) -> ContractEcho:
    return ContractEcho(n=n, note="v3", **kw)


async def test_cast_reaches_a_server_of_a_shared_topic(bus: Bus) -> None:
    svc = Server("control")
    await bus.control((SVC, svc))
    agent = await bus.agent()
    await agent.cast(SVC, echo(1, text="hello"))
    await until(lambda: len(svc.got) == 1)
    msg = svc.got[0][0]
    assert isinstance(msg, ContractEcho) and msg.n == 1 and msg.text == "hello"


async def test_host_cast_reaches_only_that_host(bus: Bus) -> None:
    control = await bus.control()
    h1, h2 = Server("h1"), Server("h2")
    await bus.agent((Target("contract_agent", "h1"), h1))
    await bus.agent((Target("contract_agent", "h2"), h2))
    await control.cast(Target("contract_agent", "h2"), echo(7))
    await control.cast(Target("contract_agent", "h1"), echo(8))
    await until(lambda: len(h2.got) == 1 and len(h1.got) == 1)
    await asyncio.sleep(0.1)
    assert h2.ns == [7] and h1.ns == [8]


async def test_call_returns_the_typed_reply_both_ways(bus: Bus) -> None:
    control = await bus.control((SVC, Server("control")))
    agent = await bus.agent((Target("contract_agent", "h1"), Server("h1")))
    reply = await agent.call(SVC, echo(3, text="up"))
    assert isinstance(reply, ContractEchoReply)
    assert (reply.n, reply.text, reply.served_by) == (3, "up", "control")
    # the bound side reaches an agent that only connected out, over the agent's own connection
    reply = await control.call(Target("contract_agent", "h1"), echo(4, text="down"))
    assert isinstance(reply, ContractEchoReply)
    assert (reply.n, reply.text, reply.served_by) == (4, "down", "h1")


async def test_handler_error_comes_back_as_remote_error(bus: Bus) -> None:
    await bus.control((SVC, Server("control")))
    agent = await bus.agent()
    with pytest.raises(RemoteError) as info:
        await agent.call(SVC, echo(fail="disk on fire"))
    assert info.value.kind == "ValueError"
    assert info.value.message == "disk on fire"


async def test_call_with_nobody_serving_raises_no_route(bus: Bus) -> None:
    control = await bus.control((SVC, Server("control")))
    agent = await bus.agent()
    with pytest.raises(NoRoute):
        await agent.call(Target("contract_nobody"), echo())
    with pytest.raises(NoRoute):
        await control.call(Target("contract_agent", "no-such-host"), echo())
    await agent.cast(Target("contract_nobody"), echo())  # a cast nobody serves is dropped, not raised


async def test_slow_handler_gives_call_timeout(bus: Bus) -> None:
    await bus.control((SVC, Server("control")))
    agent = await bus.agent()
    started = time.monotonic()
    with pytest.raises(CallTimeout):  # the outer limit only guards against a hang
        await asyncio.wait_for(agent.call(SVC, echo(sleep=3.0), timeout=0.3), 5.0)
    assert time.monotonic() - started < 2.0
    reply = await agent.call(SVC, echo(9), timeout=2.0)  # the bus still works after a timeout
    assert isinstance(reply, ContractEchoReply) and reply.n == 9


async def test_fanout_reaches_every_server_of_the_topic_once(bus: Bus) -> None:
    topic = "contract_agent"
    local = Server("control-local")
    control = await bus.control((Target(topic, "hc"), local), (SVC, Server("not-this-topic")))
    servers = [Server("h1"), Server("h2"), Server("shared")]
    await bus.agent((Target(topic, "h1"), servers[0]))
    await bus.agent((Target(topic, "h2"), servers[1]))
    await bus.agent((Target(topic), servers[2]))
    await control.fanout(topic, echo(11))
    everyone = [local, *servers]
    await until(lambda: all(s.got for s in everyone))
    await asyncio.sleep(0.1)  # time for a duplicate to show up, if there were one
    assert [s.ns for s in everyone] == [[11]] * 4


async def test_request_context_follows_the_message(bus: Bus) -> None:
    svc = Server("control")
    await bus.control((SVC, svc))
    agent = await bus.agent()
    token = context.set_current(
        context.RequestContext(request_id="req-contract-1", global_request_id="greq-contract-1")
    )
    try:
        reply = await agent.call(SVC, echo(1))
        await agent.cast(SVC, echo(2))
    finally:
        context.reset(token)
    assert isinstance(reply, ContractEchoReply)
    assert (reply.request_id, reply.global_request_id) == ("req-contract-1", "greq-contract-1")
    await until(lambda: len(svc.got) == 2)
    _, cast_ctx = svc.got[1]
    assert (cast_ctx.request_id, cast_ctx.global_request_id) == ("req-contract-1", "greq-contract-1")


async def test_previous_schema_version_is_upgraded(bus: Bus) -> None:
    await bus.control((SVC, Server("control")))
    agent = await bus.agent()
    reply = await agent.call(SVC, _EchoV2(n=5, text="old"))
    assert isinstance(reply, ContractEchoReply)
    assert (reply.n, reply.text, reply.note) == (5, "old", "upgraded from v2")


async def test_schema_version_two_behind_is_rejected(bus: Bus) -> None:
    svc = Server("control")
    await bus.control((SVC, svc))
    agent = await bus.agent()
    with pytest.raises(RemoteError) as info:
        await agent.call(SVC, _EchoV1(n=5))
    assert info.value.kind == "UnsupportedVersion"
    assert svc.got == []  # rejected before the handler ran


async def test_agent_that_reconnects_under_the_same_host_still_gets_its_messages(bus: Bus) -> None:
    control = await bus.control()
    target = Target("contract_agent", "h1")
    first = Server("first")
    old = await bus.agent((target, first))
    reply = await control.call(target, echo(1))
    assert isinstance(reply, ContractEchoReply) and reply.served_by == "first"
    await bus.close(old)

    second = Server("second")
    await bus.agent((target, second))
    reply = await control.call(target, echo(2))
    assert isinstance(reply, ContractEchoReply) and reply.served_by == "second"
    await control.cast(target, echo(3))
    await until(lambda: second.ns == [2, 3])
    assert first.ns == [1]


async def test_round_robin_spreads_casts_over_the_servers_of_a_topic(bus: Bus) -> None:
    control = await bus.control()
    a, b = Server("a"), Server("b")
    await bus.agent((Target("contract_rr"), a))
    await bus.agent((Target("contract_rr"), b))
    for n in range(20):
        await control.cast(Target("contract_rr"), echo(n))
    await until(lambda: len(a.got) + len(b.got) == 20)
    assert sorted(a.ns + b.ns) == list(range(20))  # each delivered exactly once
    assert (len(a.got), len(b.got)) == (10, 10)


async def test_many_concurrent_calls_all_complete(bus: Bus) -> None:
    await bus.control((SVC, Server("control")))
    agent = await bus.agent()
    replies = await asyncio.gather(*(agent.call(SVC, echo(n)) for n in range(200)))
    assert [r.n for r in replies if isinstance(r, ContractEchoReply)] == list(range(200))


async def test_serve_after_start_is_announced(bus: Bus) -> None:
    control = await bus.control()
    agent = await bus.agent()
    late = Server("late")
    agent.serve(Target("contract_agent", "h-late"), late)
    reply = await _eventually(lambda: control.call(Target("contract_agent", "h-late"), echo(1)))
    assert isinstance(reply, ContractEchoReply) and reply.served_by == "late"


_CRASHER = textwrap.dedent("""
    import asyncio, sys
    from canopy.rpc.base import Target
    from canopy.rpc.zmq import ZmqTransport
    from tests.integration.test_bus_contract import Server

    async def main():
        bus = ZmqTransport(connect=[sys.argv[1]])
        bus.serve(Target("contract_agent", "h1"), Server("crashed"))
        await bus.start()
        print("ready", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


async def test_zmq_agent_killed_then_restarted_under_the_same_host() -> None:
    """zmq only (an in-process bus cannot crash): an agent process dies without a word (SIGKILL)
    and a new one takes its host; the control service's routes must follow the new one."""
    harness = Bus("zmq")
    control = await harness.control()
    target = Target("contract_agent", "h1")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _CRASHER, str(harness.endpoint)], cwd=root, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.strip() == b"ready"
        reply = await control.call(target, echo(1))
        assert isinstance(reply, ContractEchoReply) and reply.served_by == "crashed"
        proc.kill()
        proc.wait()
        second = Server("second")
        await harness.agent((target, second))
        for n in range(3):  # every call and cast goes to the new process, none is lost to the dead one
            reply = await control.call(target, echo(n))
            assert isinstance(reply, ContractEchoReply) and reply.served_by == "second"
        await control.cast(target, echo(3))
        await until(lambda: second.ns == [0, 1, 2, 3])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        await harness.close_all()


async def _eventually(call: Callable[[], Awaitable[Message]], timeout: float = 3.0) -> Message:
    """Retry a call while nobody serves it yet (an announcement on its way); other errors fail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except NoRoute:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)
