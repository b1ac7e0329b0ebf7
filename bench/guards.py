"""The cost of the API's guards: a rate-limit check, and memory under an address-spraying flood.

    python bench/guards.py

Times `RateLimiter.check` (source and project bucket, as the middleware takes them per request) over
one hot key and over 1,000,000 distinct source addresses with `max_keys` 100,000 (the flood), and
reports the table's size and the memory it holds after the flood (tracemalloc, on a second run:
the addresses themselves are made beforehand and not counted). Single-threaded, on
the injected clock advancing 1 µs per request; the machine is shared, so take the median of a few runs.

The last line is one JSON object: check_ns_hot, check_ns_spray, spray_keys_kept, spray_mib.
"""

from __future__ import annotations

import json
import time
import tracemalloc

from canopy.api.ratelimit import RateLimiter
from canopy.config import RateLimitsConfig


def main() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1e-6
        return now[0]

    limiter = RateLimiter(RateLimitsConfig(max_keys=100_000), clock)
    n = 200_000
    t0 = time.perf_counter()
    for _ in range(n):
        limiter.check("source", "198.51.100.7", "read")
        limiter.check("project", "p1", "read")
    hot = (time.perf_counter() - t0) / (2 * n) * 1e9
    spray = 1_000_000
    addresses = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(spray)]
    t0 = time.perf_counter()
    for address in addresses:
        limiter.check("source", address, "write")
    spray_ns = (time.perf_counter() - t0) / spray * 1e9
    kept = len(limiter._tables[("source", "write")])
    # Memory: a second flood on a fresh limiter under tracemalloc (which slows it, so it is not timed).
    fresh = RateLimiter(RateLimitsConfig(max_keys=100_000), clock)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for address in addresses:
        fresh.check("source", address, "write")
    held = (tracemalloc.get_traced_memory()[0] - base) / 2**20
    tracemalloc.stop()
    print(f"hot key: {hot:.0f} ns per check; spray: {spray_ns:.0f} ns per check, {kept} keys kept, {held:.1f} MiB")
    print(json.dumps({"check_ns_hot": round(hot), "check_ns_spray": round(spray_ns), "spray_keys_kept": kept,
                      "spray_mib": round(held, 1)}))


if __name__ == "__main__":
    main()
