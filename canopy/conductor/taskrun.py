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
from canopy.rpc.tasks import ActionPayload, BuildPayload, TaskPayload, parse_payload


@dataclass
class TaskRun:
    """The state of one task while a conductor drives it."""

    task: dict[str, Any]  # the task row's columns (kind, attempts, request_id…); its payload is `payload`
    events: EventLog
    step: str = ""
    host: str | None = None
    started: dict[str, dt.datetime] = field(default_factory=dict)
    payload: TaskPayload | None = None  # parsed from the row's when not given
    instance: dict[str, Any] | None = None  # the instance row, once a runner read it (its failure reports it)

    def __post_init__(self) -> None:
        if self.payload is None:
            self.payload = parse_payload(self.task["kind"], self.task.get("payload"))

    @property
    def id(self) -> int:
        return int(self.task["id"])

    @property
    def instance_uuid(self) -> str:
        return str(self.task["instance_uuid"])

    @property
    def kind(self) -> str:
        return str(self.task["kind"])

    @property
    def build(self) -> BuildPayload:
        """The payload of a build task."""
        assert isinstance(self.payload, BuildPayload), f"a {self.kind} task has no build payload"
        return self.payload

    @property
    def args(self) -> ActionPayload:
        """The payload of a task on an existing server (power, delete, mobility)."""
        assert isinstance(self.payload, ActionPayload), f"a {self.kind} task has no action payload"
        return self.payload

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
