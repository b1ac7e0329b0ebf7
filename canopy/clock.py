"""Time, injected: services take a Clock so tests and the simulator can control it."""

from __future__ import annotations

import datetime as dt
import time


class Clock:
    """Wall-clock time as naive UTC datetimes, and a monotonic clock for intervals."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1)
        self._mono = 1000.0

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)
        self._mono += seconds


def isotime(value: dt.datetime | None) -> str | None:
    """OpenStack's timestamp format: `2026-11-25T11:06:38Z`."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def isotime_us(value: dt.datetime | None) -> str | None:
    """Timestamp with microseconds, as Nova shows for actions and faults."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def parse_isotime(text: str) -> dt.datetime:
    """Parse an ISO 8601 time; a zone is converted to naive UTC."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "+"))
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value
