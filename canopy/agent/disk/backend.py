"""Where a guest's root disk lives: the protocol disk backends share, and the qcow2 backend (issue 6).

    backend: DiskBackend = Qcow2Backend(instances_path)          # or LvmBackend("vg0", thin_pool, runner)
    path = await backend.create(uuid, base, size_bytes)           # a disk holding the image, this big
    await backend.resize(uuid, new_size_bytes)                    # disks only grow
    await backend.set_aside(uuid); await backend.restore(uuid)    # a resize/migration keeps the old disk
    await backend.remove(uuid)                                    # a missing disk is not an error
    size = await backend.aside_size(uuid)                         # what a migration sends of the set-aside disk
    grown = await backend.receive(uuid, size, chunks, base, want) # the migrated disk becomes the guest's
    disk = root_disk_spec(backend, uuid, "vda", uuid[:20])        # how the domain XML names it
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from canopy.agent.disk import growfs, qemuimg, transfer
from canopy.agent.disk.cache import CachedImage
from canopy.agent.disk.lvm import LvmBackend
from canopy.agent.virt.base import DriverError
from canopy.agent.virt.domain_model import DiskSpec

ASIDE_SUFFIX = "_resize"  # a guest set aside for a resize or cold migration: `<uuid>_resize`


class DiskBackend(Protocol):
    """A guest root disk: made from a cached base image, grown, set aside and back, removed, found by path."""

    kind: str  # "qcow2" (a file) | "lvm" (a block device)
    disk_format: str  # what the domain XML's <driver type> and qemu-img's -f need: "qcow2" or "raw"
    # True: the disk is an overlay on a base image every host caches, so a live migration copies only its
    # top layer; False: the whole disk is copied.
    shares_base: bool

    async def create(self, uuid: str, base: CachedImage, size_bytes: int) -> str: ...

    async def resize(self, uuid: str, size_bytes: int) -> None: ...

    async def remove(self, uuid: str) -> None: ...

    def path(self, uuid: str) -> str: ...

    def aside_path(self, uuid: str) -> str: ...

    async def set_aside(self, uuid: str) -> None: ...

    async def restore(self, uuid: str) -> None: ...

    async def remove_aside(self, uuid: str) -> None: ...

    async def grow_fs(self, uuid: str, base: CachedImage) -> None:
        """Grow the disk's whole-disk filesystem to the disk (images marked `canopy_grow_fs=host`)."""
        ...

    async def aside_size(self, uuid: str) -> int:
        """The bytes of the set-aside disk a migration sends (`read_at` its `aside_path` up to there)."""
        ...

    async def receive(self, uuid: str, size: int, chunks: AsyncIterator[bytes] | None, base: CachedImage,
                      size_bytes: int) -> bool:
        """Make the guest's disk from a migrated one of `size` bytes (`chunks`; None: this host's set-aside
        disk), on this host's copy of `base`, at least `size_bytes` big; whether it grew. DriverError when
        the bytes that arrived are not `size`."""
        ...


class Qcow2Backend:
    """A qcow2 overlay `<instances_path>/<uuid>/disk` over the cached base. The guest's folder is the
    driver's: setting aside renames the folder, which moves the overlay with it."""

    kind = "qcow2"
    disk_format = "qcow2"
    shares_base = True

    def __init__(self, instances_path: Path) -> None:
        self.root = instances_path

    def path(self, uuid: str) -> str:
        """The overlay's file."""
        return str(self.root / uuid / "disk")

    def aside_path(self, uuid: str) -> str:
        """The overlay in the set-aside folder."""
        return self.path(uuid + ASIDE_SUFFIX)

    async def create(self, uuid: str, base: CachedImage, size_bytes: int) -> str:
        """A qcow2 overlay on `base`, of `size_bytes` (the folder must exist)."""
        await qemuimg.create_overlay(base.path, base.disk_format, Path(self.path(uuid)), size_bytes)
        return self.path(uuid)

    async def resize(self, uuid: str, size_bytes: int) -> None:
        """Grow the overlay's virtual size; a smaller size is refused."""
        have = int((await qemuimg.info(Path(self.path(uuid)), "qcow2"))["virtual-size"])
        if size_bytes < have:
            raise qemuimg.DiskError(f"disk of {uuid} is {have} bytes: it cannot shrink to {size_bytes}")
        if size_bytes > have:
            await qemuimg.run("resize", "-q", "-f", "qcow2", self.path(uuid), str(size_bytes))

    async def remove(self, uuid: str) -> None:
        """Delete the overlay file (the guest's folder is the driver's)."""
        Path(self.path(uuid)).unlink(missing_ok=True)

    async def set_aside(self, uuid: str) -> None:
        """Nothing: the driver's folder rename moves the overlay."""

    async def restore(self, uuid: str) -> None:
        """Nothing: the driver's folder rename moves the overlay back."""

    async def remove_aside(self, uuid: str) -> None:
        """Nothing: the driver removes the set-aside folder with the overlay in it."""

    async def grow_fs(self, uuid: str, base: CachedImage) -> None:
        """Grow the filesystem through a flattened copy; the overlay stays an overlay on `base`."""
        await growfs.grow_overlay(Path(self.path(uuid)), base.path, base.disk_format)

    async def aside_size(self, uuid: str) -> int:
        """The set-aside overlay file's size."""
        return Path(self.aside_path(uuid)).stat().st_size

    async def receive(self, uuid: str, size: int, chunks: AsyncIterator[bytes] | None, base: CachedImage,
                      size_bytes: int) -> bool:
        """The overlay that arrived (or a copy of the set-aside one) pointed at this host's base, grown to
        `size_bytes`; the guest's folder must exist."""
        disk = Path(self.path(uuid))
        incoming = disk.with_name("disk.incoming")
        try:
            if chunks is None:
                await asyncio.to_thread(shutil.copyfile, self.aside_path(uuid), incoming)
            else:
                await transfer.write_file(incoming, chunks)
            got = incoming.stat().st_size
            if got != size:
                raise DriverError(f"the disk of {uuid} arrived with {got} bytes, {size} expected")
            await asyncio.to_thread(os.replace, incoming, disk)
        finally:
            incoming.unlink(missing_ok=True)
        # -u: only the backing file's name changes; the base's content is the same image on every host
        await qemuimg.run("rebase", "-q", "-u", "-f", "qcow2", "-F", base.disk_format, "-b", str(base.path),
                          str(disk))
        have = int((await qemuimg.info(disk, "qcow2"))["virtual-size"])
        if size_bytes > have:  # the new flavor's disk (its filesystem: the guest's to grow, or grow_fs)
            await qemuimg.run("resize", "-q", "-f", "qcow2", str(disk), str(size_bytes))
        return size_bytes > have


def backend_for(disk_backend: str, instances_path: Path, volume_group: str = "",
                thin_pool: str = "") -> DiskBackend:
    """The backend the `[libvirt]` settings name (DriverError for lvm without a volume group)."""
    if disk_backend == "lvm":
        return LvmBackend(volume_group, thin_pool or None)
    return Qcow2Backend(instances_path)


def root_disk_spec(backend: DiskBackend, key: str, target: str, serial: str) -> DiskSpec:
    """The disk `backend.path(key)` as the domain sees it: a qcow2 file, or a raw block device with native
    I/O (`<disk type='block'>`, `<source dev=...>`)."""
    if backend.kind == "lvm":
        return DiskSpec(path=backend.path(key), target=target, format="raw", serial=serial, source="block",
                        io="native")
    return DiskSpec(path=backend.path(key), target=target, format=backend.disk_format, serial=serial)
