"""Moving a guest's disk bytes between hosts: reading a set-aside disk in chunks, and writing the chunks
that arrive into a file or an existing block device.

    data = await read_at(path, offset, length)                     # one chunk the target agent asked for
    async for chunk in read_chunks(path, size): ...                 # a local disk, as if it had arrived
    await write_file(path, chunks)                                  # a new file (a qcow2 overlay)
    written = await write_into(device, chunks, skip_zeros=True)     # an existing LV, never truncated
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


async def read_at(path: Path, offset: int, length: int) -> bytes:
    """Up to `length` bytes of a disk from `offset` (fewer at its end)."""
    return await asyncio.to_thread(_read_at, path, offset, length)


async def read_chunks(path: Path, size: int, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    """The first `size` bytes of a disk (a block device or file) in chunks."""
    offset = 0
    while offset < size:
        data = await read_at(path, offset, min(chunk, size - offset))
        if not data:
            return
        offset += len(data)
        yield data


async def write_file(path: Path, chunks: AsyncIterator[bytes]) -> int:
    """Write the chunks to a new file; the bytes written."""
    written = 0
    with path.open("wb") as f:
        async for chunk in chunks:
            await asyncio.to_thread(f.write, chunk)
            written += len(chunk)
    return written


async def write_into(path: Path, chunks: AsyncIterator[bytes], skip_zeros: bool = False) -> int:
    """Write chunks from the start of an existing disk (a block device: never truncated), synced; the bytes
    received. `skip_zeros`: the disk reads as zeros where nothing was written (a new thin LV), so all-zero
    chunks are skipped rather than written (which would allocate them)."""
    written = 0
    with path.open("r+b") as f:
        async for chunk in chunks:
            if skip_zeros and chunk.count(0) == len(chunk):
                f.seek(len(chunk), os.SEEK_CUR)
            else:
                await asyncio.to_thread(f.write, chunk)
            written += len(chunk)
        await asyncio.to_thread(f.flush)
        await asyncio.to_thread(os.fsync, f.fileno())
    return written
