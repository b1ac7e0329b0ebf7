"""Waiting for a condition, never for time: the one polling helper the tests share."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(cond: Callable[[], T | Awaitable[T]], timeout: float = 10.0, *, interval: float = 0.02,
                     what: str = "the condition") -> T:
    """Call `cond` (plain or async) until it returns something truthy and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s; last: {value!r}")
        await asyncio.sleep(interval)


def wait_until_sync(cond: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.05,
                    what: str = "the condition") -> T:
    """`wait_until` for code outside an event loop (subprocesses, servers started by threads)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s; last: {value!r}")
        time.sleep(interval)
