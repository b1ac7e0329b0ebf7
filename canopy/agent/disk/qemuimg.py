"""Thin async shell around `qemu-img`: inspect, check, and make copy-on-write overlays."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any


class DiskError(Exception):
    """A disk operation failed; the message says which and why."""


async def run(*args: str, timeout_s: float = 120.0) -> str:
    """Run qemu-img with arguments; its stdout, or DiskError with its stderr."""
    proc = await asyncio.create_subprocess_exec("qemu-img", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DiskError(f"qemu-img {args[0]} timed out after {timeout_s:g}s") from None
    if proc.returncode != 0:
        raise DiskError(f"qemu-img {args[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


async def info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """`qemu-img info` as a dict (format, virtual-size, backing-filename...)."""
    args = ["info", "--output=json", "-U"]
    if fmt:
        args += ["-f", fmt]
    return json.loads(await run(*args, str(path)))


async def check(path: Path) -> None:
    """Refuse a qcow2 file with metadata errors (a corrupt image must fail the boot, not the guest)."""
    await run("check", "-q", "-f", "qcow2", str(path))


async def create_overlay(base: Path, base_format: str, dest: Path, size_bytes: int | None) -> None:
    """A qcow2 file backed by `base`, of `size_bytes` (or the base's size)."""
    args = ["create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format, str(dest)]
    if size_bytes:
        args.append(str(size_bytes))
    await run(*args)
