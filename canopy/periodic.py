"""Periodic work that doesn't spike: each loop starts at a random point of its interval and every wait
is jittered, so a thousand processes started together don't hit the database in step."""

from __future__ import annotations

import asyncio
import random

JITTER = 0.1  # each wait is the interval ±10 %

_rng = random.Random()


def first_delay(interval_s: float, rng: random.Random | None = None) -> float:
    """How long a new loop waits before its first run: anywhere within one interval."""
    return (rng or _rng).uniform(0, interval_s)


def next_delay(interval_s: float, rng: random.Random | None = None) -> float:
    """The wait before the next run: the interval, jittered."""
    return interval_s * (rng or _rng).uniform(1 - JITTER, 1 + JITTER)


async def pace(interval_s: float, first: bool, rng: random.Random | None = None) -> None:
    """Sleep before a periodic run (the first one at a random point of the interval)."""
    await asyncio.sleep(first_delay(interval_s, rng) if first else next_delay(interval_s, rng))
