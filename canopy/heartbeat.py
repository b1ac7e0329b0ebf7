"""Heartbeats of the control services (api, scheduler): cast to conductors, which write them in batches."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from canopy import __version__
from canopy.periodic import next_delay
from canopy.rpc.base import BusError, Target, Transport
from canopy.rpc.calls import Heartbeat

RETRY_S = 1.0


class ServiceHeartbeat:
    """Casts `Heartbeat(binary, host)` to the conductors as it starts, then every interval (jittered)."""

    def __init__(self, bus: Transport, binary: str, host: str, interval_s: float,
                 rng: random.Random | None = None) -> None:
        self.bus, self.binary, self.host, self.interval_s = bus, binary, host, interval_s
        self.rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat-{self.binary}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        """Beat at once (a restarted service must not show `down` for a period), then every interval,
        jittered; a beat no conductor took is tried again within a second."""
        while True:
            try:
                await self.bus.cast(Target("conductor"), Heartbeat(
                    binary=self.binary, host=self.host, service_version=__version__, sent_at=time.time()))
                delay = next_delay(self.interval_s, self.rng)
            except BusError:  # no conductor yet
                delay = min(RETRY_S, self.interval_s)
            await asyncio.sleep(delay)
