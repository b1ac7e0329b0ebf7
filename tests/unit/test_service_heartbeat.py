"""A control service reports itself as it starts (not after a jittered period), and keeps trying soon while
no conductor is there to take its beat."""

from __future__ import annotations

import asyncio

from canopy.heartbeat import ServiceHeartbeat
from canopy.rpc.base import NoRoute, Target
from canopy.rpc.calls import Heartbeat
from canopy.rpc.local import LocalTransport
from canopy.rpc.messages import Message


def _conductor(bus: LocalTransport) -> asyncio.Queue[Heartbeat]:
    got: asyncio.Queue[Heartbeat] = asyncio.Queue()

    async def handle(msg: Message) -> None:
        assert isinstance(msg, Heartbeat)
        got.put_nowait(msg)

    bus.serve(Target("conductor"), handle)
    return got


async def test_first_beat_goes_out_at_start_even_with_a_long_interval() -> None:
    bus = LocalTransport()
    await bus.start()
    got = _conductor(bus)
    beat = ServiceHeartbeat(bus, "canopy-scheduler", "sched-1", interval_s=3600)
    beat.start()
    try:
        first = await asyncio.wait_for(got.get(), timeout=2)
        assert (first.binary, first.host) == ("canopy-scheduler", "sched-1")
    finally:
        await beat.stop()
        await bus.close()


class StrictBus(LocalTransport):
    """A bus whose casts fail when nobody serves them, as a network bus's do before the peer is connected."""

    async def cast(self, target: Target, msg: Message) -> None:
        if self._route(target) is None:
            raise NoRoute(f"nobody serves {target}")
        await super().cast(target, msg)


async def test_a_beat_nobody_took_is_tried_again_within_seconds_not_an_interval() -> None:
    bus = StrictBus()
    await bus.start()
    beat = ServiceHeartbeat(bus, "canopy-api", "api-1", interval_s=3600)
    beat.start()  # no conductor yet: the first cast finds no route
    try:
        await asyncio.sleep(0)
        got = _conductor(bus)  # the conductor comes up after the api
        late = await asyncio.wait_for(got.get(), timeout=3)
        assert late.binary == "canopy-api"
    finally:
        await beat.stop()
        await bus.close()
