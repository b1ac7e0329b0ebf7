"""Running a host command (LVM, e2fsck, resize2fs) through a `CommandRunner`, so the exact argv sequences
are tested with a recording fake on machines without device-mapper."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    """What a command did: like subprocess.CompletedProcess, with text output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""


class CommandRunner(Protocol):
    """Runs one command to completion."""

    async def run(self, argv: Sequence[str]) -> CommandResult: ...


class SubprocessRunner:
    """The real runner: a child process per command, with a timeout."""

    def __init__(self, timeout_s: float = 3600.0) -> None:
        self.timeout_s = timeout_s

    async def run(self, argv: Sequence[str]) -> CommandResult:
        """Run argv; a missing program or a timeout is a failed result, not an exception."""
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            return CommandResult(tuple(argv), 127, "", f"{argv[0]}: {exc}")
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return CommandResult(tuple(argv), -9, "", f"{argv[0]} timed out after {self.timeout_s:g}s")
        return CommandResult(tuple(argv), proc.returncode or 0, out.decode(errors="replace"),
                             err.decode(errors="replace"))


@dataclass
class RecordingRunner:
    """A fake runner: records every argv; `fail[program] = (rc, stderr)` makes that program fail."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    stdout: dict[str, str] = field(default_factory=dict)

    async def run(self, argv: Sequence[str]) -> CommandResult:
        """Record argv and answer as scripted (success by default)."""
        self.calls.append(tuple(argv))
        rc, err = self.fail.get(argv[0], (0, ""))
        return CommandResult(tuple(argv), rc, self.stdout.get(argv[0], ""), err)
