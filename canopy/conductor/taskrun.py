"""One running task: its row, its action's events, its lease kept alive while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from canopy.conductor.records import EventLog


@dataclass
class TaskRun:
    """The state of one task while a conductor drives it."""

    task: dict[str, Any]
    events: EventLog
    step: str = ""
    host: str | None = None
    started: dict[str, dt.datetime] = field(default_factory=dict)

    @property
    def id(self) -> int:
        return int(self.task["id"])

    @property
    def instance_uuid(self) -> str:
        return str(self.task["instance_uuid"])

    @property
    def payload(self) -> dict[str, Any]:
        return self.task["payload"]  # type: ignore[no-any-return]

    @property
    def request_id(self) -> str:
        return str(self.task["request_id"])


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """A one-line message an operator understands, and the details (the exception chain)."""
    message = str(exc) or type(exc).__name__
    kind = getattr(exc, "kind", None)  # a RemoteError names the remote exception
    if kind and kind not in message:
        message = f"{kind}: {message}"
    details = "".join(traceback.format_exception(exc))
    return message.splitlines()[0] if message else type(exc).__name__, details


@contextlib.asynccontextmanager
async def keep_lease(renew: Any, every_s: float) -> AsyncIterator[None]:
    """Renew the task's lease every `every_s` while the block runs (only long tasks ever renew)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every_s)
            await renew()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
