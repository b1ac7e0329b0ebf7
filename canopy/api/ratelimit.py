"""API rate limits: token buckets per project and per source address, one bucket per route class.

A bucket holds up to `burst` tokens and refills at `rate` tokens a second; a request takes one token or,
when the bucket is empty, is answered 429 with `Retry-After` (the seconds until a token is back). Route
classes (`classify`): `auth` (token requests), `expensive` (server create), `write` (other mutating
calls) and `read`. The source bucket is taken before authentication (it shields the token check and the
login path); the project bucket after it, so one customer's script drains only its own bucket.

The buckets live in each api process: with N processes behind a balancer, a client gets up to N times
the configured rate (set each process's rates to the cluster's wanted rate divided by N). Memory is
O(1) per active key: keys sit in LRU order, a key idle long enough to have refilled is dropped (a full
bucket is the same as no bucket), and past `max_keys` the least recently used key is dropped, so an
attacker spraying source addresses costs bounded memory (a dropped key starts again with a full bucket).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from canopy.config import RateLimit, RateLimitsConfig

ROUTE_CLASSES = ("read", "write", "auth", "expensive")


class Bucket(NamedTuple):
    """A bucket's state: the tokens it held at `at` (monotonic seconds)."""

    tokens: float
    at: float


def take(bucket: Bucket | None, limit: RateLimit, now: float) -> tuple[Bucket, float]:
    """Take one token: the bucket's next state, and 0 when allowed or else the seconds to wait."""
    if bucket is None:
        tokens = float(limit.burst)
    else:
        tokens = min(float(limit.burst), bucket.tokens + max(0.0, now - bucket.at) * limit.rate)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now), 0.0
    return Bucket(tokens, now), (1.0 - tokens) / limit.rate


def retry_after_header(wait_s: float) -> int:
    """`Retry-After` is whole seconds: rounded up, at least 1."""
    return max(1, math.ceil(wait_s))


def classify(service: str, method: str, path: str) -> str:
    """The route class of a request: auth, expensive, write or read."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    clean = path.rstrip("/")
    if service == "identity" and clean == "/v3/auth/tokens" and method == "POST":
        return "auth"
    if service == "compute" and clean == "/v2.1/servers" and method == "POST":
        return "expensive"
    return "write"


class BucketTable:
    """Buckets by key in LRU order, with idle keys evicted and at most `max_keys` of them."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, limit: RateLimit, now: float) -> float:
        """Take a token from `key`'s bucket: 0 when allowed, else the seconds to wait."""
        buckets = self._buckets
        bucket, wait = take(buckets.get(key), limit, now)
        buckets[key] = bucket
        buckets.move_to_end(key)
        self._evict(limit, now)
        return wait

    def _evict(self, limit: RateLimit, now: float) -> None:
        # The front is the least recently used: drop it while it is full again or the table is too big.
        # At most a few keys per call in steady state, so each request stays O(1) amortized.
        full_after = limit.burst / limit.rate
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) <= self.max_keys and now - oldest.at < full_after:
                return
            del self._buckets[key]


class RateLimiter:
    """The api process's buckets: per source address and per project, by route class."""

    def __init__(self, config: RateLimitsConfig, monotonic: Callable[[], float]) -> None:
        self.config = config
        self._now = monotonic
        # One table per (kind, route class): every key of a table refills alike, so its LRU front is its
        # longest idle key and eviction stops at the first key still refilling.
        self._tables = {(kind, cls): BucketTable(config.max_keys) for kind in ("source", "project")
                        for cls in ROUTE_CLASSES}
        self.refused = {"source": 0, "project": 0}

    def check(self, kind: str, key: str, route_class: str) -> float:
        """Take a token for `key` (a source address or a project id): 0 when allowed, else seconds to wait."""
        if not self.config.enabled:
            return 0.0
        limits = self.config.source if kind == "source" else self.config.project
        limit = limits.get(route_class)
        if limit is None:
            return 0.0
        wait = self._tables[(kind, route_class)].take(key, limit, self._now())
        if wait:
            self.refused[kind] += 1
        return wait
