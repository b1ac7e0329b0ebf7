"""Periodic pacing: the first run lands anywhere in the interval, later waits stay within ±10 %."""

from __future__ import annotations

import random

import pytest

from canopy.periodic import JITTER, first_delay, next_delay


@pytest.mark.parametrize("interval", [0.5, 2.0, 10.0, 60.0])
def test_delays_stay_in_their_windows_and_spread(interval: float) -> None:
    rng = random.Random(1)
    firsts = [first_delay(interval, rng) for _ in range(2000)]
    nexts = [next_delay(interval, rng) for _ in range(2000)]
    assert all(0 <= d <= interval for d in firsts)
    assert all(interval * (1 - JITTER) <= d <= interval * (1 + JITTER) for d in nexts)
    # spread, not in step: the first runs of 2,000 processes cover every tenth of the interval
    assert {int(10 * d / interval) for d in firsts} >= set(range(10))
    assert max(nexts) - min(nexts) > interval * JITTER
