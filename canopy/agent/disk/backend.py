"""Where a guest's root disk lives: the protocol disk backends share, and the qcow2 backend (issue 6).

    backend: DiskBackend = Qcow2Backend(instances_path)          # or LvmBackend("vg0", thin_pool, runner)
    path = await backend.create(uuid, base, size_bytes)           # a disk holding the image, this big
    await backend.resize(uuid, new_size_bytes)                    # disks only grow
    await backend.set_aside(uuid); await backend.restore(uuid)    # a resize/migration keeps the old disk
    await backend.remove(uuid)                                    # a missing disk is not an error
    disk = root_disk_spec(backend, uuid, "vda", uuid[:20])        # how the domain XML names it
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from canopy.agent.disk import qemuimg
from canopy.agent.disk.cache import CachedImage
from canopy.agent.disk.lvm import LvmBackend
from canopy.agent.virt.domain_model import DiskSpec

ASIDE_SUFFIX = "_resize"  # a guest set aside for a resize or cold migration: `<uuid>_resize`


class DiskBackend(Protocol):
    """A guest root disk: made from a cached base image, grown, set aside and back, removed, found by path."""

    kind: str  # "qcow2" (a file) | "lvm" (a block device)
    disk_format: str  # what the domain XML's <driver type> and qemu-img's -f need: "qcow2" or "raw"

    async def create(self, uuid: str, base: CachedImage, size_bytes: int) -> str: ...

    async def resize(self, uuid: str, size_bytes: int) -> None: ...

    async def remove(self, uuid: str) -> None: ...

    def path(self, uuid: str) -> str: ...

    def aside_path(self, uuid: str) -> str: ...

    async def set_aside(self, uuid: str) -> None: ...

    async def restore(self, uuid: str) -> None: ...

    async def remove_aside(self, uuid: str) -> None: ...


class Qcow2Backend:
    """A qcow2 overlay `<instances_path>/<uuid>/disk` over the cached base. The guest's folder is the
    driver's: setting aside renames the folder, which moves the overlay with it."""

    kind = "qcow2"
    disk_format = "qcow2"

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
