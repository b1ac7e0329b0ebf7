"""Where a guest's root disk lives: the protocol disk backends share, and the qcow2 backend (issue 6).

    backend: DiskBackend = Qcow2Backend(instances_path)          # or LvmBackend(LvmConfig(...), runner)
    path = await backend.create(uuid, base, size_bytes)           # a disk holding the image, this big
    await backend.resize(uuid, new_size_bytes)                    # disks only grow
    await backend.remove(uuid)                                    # a missing disk is not an error
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from canopy.agent.disk import qemuimg
from canopy.agent.disk.cache import CachedImage


class DiskBackend(Protocol):
    """A guest root disk: made from a cached base image, grown, removed, and found by path."""

    kind: str  # "qcow2" | "lvm": what the domain XML's <driver type> needs ("qcow2" or "raw")

    async def create(self, uuid: str, base: CachedImage, size_bytes: int) -> str: ...

    async def resize(self, uuid: str, size_bytes: int) -> None: ...

    async def remove(self, uuid: str) -> None: ...

    def path(self, uuid: str) -> str: ...


class Qcow2Backend:
    """A qcow2 overlay `<instances_path>/<uuid>/disk` over the cached base (what LibvirtDriver does)."""

    kind = "qcow2"
    disk_format = "qcow2"

    def __init__(self, instances_path: Path) -> None:
        self.root = instances_path

    def path(self, uuid: str) -> str:
        """The overlay's file."""
        return str(self.root / uuid / "disk")

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


def backend_for(disk_backend: str, instances_path: Path, volume_group: str = "",
                thin_pool: str = "") -> DiskBackend:
    """The backend the `[libvirt]` settings name (DriverError for lvm without a volume group)."""
    if disk_backend == "lvm":
        from canopy.agent.disk.lvm import LvmBackend  # only agents configured for LVM load it

        return LvmBackend(volume_group, thin_pool or None)
    return Qcow2Backend(instances_path)
