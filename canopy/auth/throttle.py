"""Failed-login throttling: a sliding window of failures per user name and per source address.

Past the limit, logins for that name (or from that address) answer 429 with `Retry-After` until the
oldest failure in the window ages out; a success clears the user's count (not the address's). The
check happens before any password is hashed, so a throttled flood costs no CPU. The counts live in the
api process: with N processes behind a balancer an attacker gets at most N times the limit."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

_MAX_KEYS = 100_000  # bounded memory under a flood of distinct names


class LoginThrottle:
    """Counts failures per key in a window; says how long a key must wait, if at all."""

    def __init__(self, per_user: int, per_source: int, window_s: float, monotonic: Callable[[], float]) -> None:
        self.limits = {"user": per_user, "source": per_source}
        self.window_s = window_s
        self._now = monotonic
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, user: str, source: str) -> float:
        """Seconds before this user (from this source) may try again; 0 when they may now."""
        now = self._now()
        wait = 0.0
        for key in (("user", user), ("source", source)):
            times = self._prune(key, now)
            if times is not None and len(times) >= self.limits[key[0]]:
                wait = max(wait, times[0] + self.window_s - now)
        return wait

    def failed(self, user: str, source: str) -> None:
        """Record a failed login."""
        now = self._now()
        if len(self._failures) > _MAX_KEYS:
            self._failures.clear()
        for key in (("user", user), ("source", source)):
            times = self._failures.setdefault(key, deque())
            times.append(now)
            while len(times) > self.limits[key[0]]:
                times.popleft()

    def succeeded(self, user: str) -> None:
        """A good password clears the user's failures."""
        self._failures.pop(("user", user), None)

    def _prune(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times
