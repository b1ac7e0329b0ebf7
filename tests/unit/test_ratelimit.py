"""The token-bucket core: refill, burst, Retry-After, route classes and bounded memory (clock injected)."""

from __future__ import annotations

import pytest

from canopy.api.ratelimit import Bucket, BucketTable, RateLimiter, classify, retry_after_header, take
from canopy.config import RateLimit, RateLimitsConfig

LIMIT = RateLimit(rate=2.0, burst=3)


@pytest.mark.parametrize(("bucket", "now", "allowed", "tokens_after", "wait"), [
    (None, 0.0, True, 2.0, 0.0),                         # a new key starts full
    (Bucket(0.0, 0.0), 0.0, False, 0.0, 0.5),            # empty: one token is 1/rate away
    (Bucket(0.0, 0.0), 0.25, False, 0.5, 0.25),          # half refilled: the rest of the way
    (Bucket(0.0, 0.0), 0.5, True, 0.0, 0.0),             # exactly one token back
    (Bucket(1.0, 0.0), 100.0, True, 2.0, 0.0),           # refill stops at burst
    (Bucket(0.5, 10.0), 9.0, False, 0.5, 0.25),          # a clock that steps back adds nothing
])
def test_take(bucket: Bucket | None, now: float, allowed: bool, tokens_after: float, wait: float) -> None:
    new, got_wait = take(bucket, LIMIT, now)
    assert (got_wait == 0.0) is allowed
    assert new.tokens == pytest.approx(tokens_after)
    assert got_wait == pytest.approx(wait)


@pytest.mark.parametrize(("wait", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (59.9, 60)])
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: int) -> None:
    assert retry_after_header(wait) == header


@pytest.mark.parametrize(("service", "method", "path", "cls"), [
    ("identity", "POST", "/v3/auth/tokens", "auth"),
    ("identity", "GET", "/v3/auth/tokens", "read"),
    ("identity", "DELETE", "/v3/auth/tokens", "write"),
    ("compute", "POST", "/v2.1/servers", "expensive"),
    ("compute", "POST", "/v2.1/servers/", "expensive"),
    ("compute", "POST", "/v2.1/servers/abc/action", "write"),
    ("compute", "GET", "/v2.1/servers/detail", "read"),
    ("network", "PUT", "/v2.0/ports/x", "write"),
    ("image", "HEAD", "/v2/images", "read"),
])
def test_classify(service: str, method: str, path: str, cls: str) -> None:
    assert classify(service, method, path) == cls


def test_burst_then_refused_then_refilled() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimitsConfig(project={"write": LIMIT}), lambda: now[0])
    assert [limiter.check("project", "p1", "write") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("project", "p1", "write") == pytest.approx(0.5)
    assert limiter.check("project", "p2", "write") == 0.0  # another project has its own bucket
    now[0] += 0.5
    assert limiter.check("project", "p1", "write") == 0.0
    assert limiter.refused == {"source": 0, "project": 1}


def test_disabled_or_unlisted_class_allows() -> None:
    limiter = RateLimiter(RateLimitsConfig(enabled=False, project={"write": RateLimit(rate=1, burst=1)}), lambda: 0.0)
    assert [limiter.check("project", "p", "write") for _ in range(5)] == [0.0] * 5
    limiter = RateLimiter(RateLimitsConfig(project={}), lambda: 0.0)
    assert limiter.check("project", "p", "read") == 0.0


def test_idle_keys_are_evicted_and_memory_is_bounded() -> None:
    table = BucketTable(max_keys=100)
    for i in range(10_000):  # an address-spraying flood, all at one instant
        table.take(f"10.0.{i // 256}.{i % 256}", LIMIT, 0.0)
    assert len(table) == 100
    table.take("late", LIMIT, 10.0)  # everyone else has been idle long enough to be full again
    assert len(table) == 1


def test_a_busy_key_stays_while_it_refills() -> None:
    table = BucketTable(max_keys=100)
    for _ in range(3):
        table.take("busy", LIMIT, 0.0)
    table.take("other", LIMIT, 1.0)  # busy has refilled 2 of 3 tokens: not yet full, kept
    assert len(table) == 2
    assert table.take("busy", LIMIT, 1.0) == 0.0
