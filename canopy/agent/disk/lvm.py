"""The LVM disk backend: one logical volume per guest disk in a configured volume group (issue 6).

    backend = LvmBackend("vg0", thin_pool=None, runner=SubprocessRunner())
    dev = await backend.create(uuid, base, size)   # lvcreate; qemu-img convert -O raw base -> /dev/vg0/<lv>
    await backend.resize(uuid, bigger)              # lvextend
    await backend.set_aside(uuid)                   # lvrename to canopy-<uuid>_resize (restore: back)
    dev = await backend.create_blank(uuid, size)    # lvcreate only: a migrated disk is written into it
    await backend.remove(uuid)                      # lvremove

Every command goes through a `CommandRunner`, so the exact argv sequences are tested with a recording
fake on machines without device-mapper. Sizes are given to LVM in bytes (`b` suffix); it rounds up to
its extent size, which is never smaller than asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from canopy.agent.disk import growfs, transfer
from canopy.agent.disk.cache import CachedImage
from canopy.agent.disk.commands import CommandResult, CommandRunner, SubprocessRunner
from canopy.agent.virt.base import DriverError

LV_PREFIX = "canopy-"
ASIDE_SUFFIX = "_resize"  # the LV of a guest set aside for a resize or cold migration


class LvmBackend:
    """A raw logical volume `/dev/<vg>/canopy-<uuid>` per guest disk, thick or in a thin pool."""

    kind = "lvm"
    disk_format = "raw"
    shares_base = False  # a raw copy of the image: a live migration copies the whole volume

    def __init__(self, volume_group: str, thin_pool: str | None = None,
                 runner: CommandRunner | None = None, dev_root: str = "/dev") -> None:
        if not volume_group:
            raise DriverError('[libvirt] disk_backend = "lvm" needs lvm_volume_group: the volume group '
                              "the guests' logical volumes are made in")
        self.vg = volume_group
        self.thin_pool = thin_pool or None
        self.runner: CommandRunner = runner or SubprocessRunner()
        self.dev_root = dev_root  # where LVM's device nodes appear (tests point it at plain files)

    def lv_name(self, uuid: str, aside: bool = False) -> str:
        return LV_PREFIX + uuid + (ASIDE_SUFFIX if aside else "")

    def path(self, uuid: str) -> str:
        """The logical volume's device node."""
        return f"{self.dev_root}/{self.vg}/{self.lv_name(uuid)}"

    def aside_path(self, uuid: str) -> str:
        """The device node of the LV set aside for a resize or migration."""
        return f"{self.dev_root}/{self.vg}/{self.lv_name(uuid, aside=True)}"

    async def _run(self, argv: list[str], what: str, uuid: str, aside: bool = False) -> CommandResult:
        res = await self.runner.run(argv)
        if res.returncode != 0:
            raise DriverError(f"{what} of logical volume {self.lv_name(uuid, aside)} in volume group {self.vg} "
                              f"failed ({argv[0]} exit {res.returncode}): {res.stderr.strip()[:300]}")
        return res

    def _create_argv(self, uuid: str, size_bytes: int) -> list[str]:
        size = f"{size_bytes}b"
        if self.thin_pool:
            return ["lvcreate", "-y", "-n", self.lv_name(uuid), "-V", size, "--thin", f"{self.vg}/{self.thin_pool}"]
        return ["lvcreate", "-y", "-n", self.lv_name(uuid), "-L", size, self.vg]

    async def create_blank(self, uuid: str, size_bytes: int) -> str:
        """Just the LV (a disk arriving from another host is written into it); its device node."""
        await self._run(self._create_argv(uuid, size_bytes), "creation", uuid)
        return self.path(uuid)

    async def size_bytes(self, uuid: str, aside: bool = False) -> int:
        """The LV's size in bytes, as LVM reports it (a whole number of extents)."""
        res = await self._run(["lvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "lv_size",
                               f"{self.vg}/{self.lv_name(uuid, aside)}"], "sizing", uuid, aside)
        try:
            return int(res.stdout.strip())
        except ValueError:
            raise DriverError(f"lvs gave no size for {self.vg}/{self.lv_name(uuid, aside)}: "
                              f"{res.stdout.strip()[:100]!r}") from None

    async def create(self, uuid: str, base: CachedImage, size_bytes: int) -> str:
        """Make the LV and copy the image into it as raw; on any failure no LV is left behind."""
        if size_bytes < base.virtual_size:
            raise DriverError(f"disk of {size_bytes} bytes is smaller than image {base.image_id} "
                              f"({base.virtual_size} bytes)")
        try:
            await self._run(self._create_argv(uuid, size_bytes), "creation", uuid)
            # -n: the target exists (a block device); qemu-img must not try to create it
            await self._run(["qemu-img", "convert", "-q", "-n", "-f", base.disk_format, "-O", "raw",
                             str(base.path), self.path(uuid)], "copying the image in", uuid)
        except BaseException:
            await self._remove_if_present(uuid)
            raise
        return self.path(uuid)

    async def resize(self, uuid: str, size_bytes: int) -> None:
        """Grow the LV (LVM refuses a smaller size with lvextend; the guest grows its filesystem)."""
        await self._run(["lvextend", "-L", f"{size_bytes}b", f"{self.vg}/{self.lv_name(uuid)}"], "extending", uuid)

    async def remove(self, uuid: str) -> None:
        """Remove the LV; a missing one is not an error."""
        await self._remove_if_present(uuid, strict=True)

    async def set_aside(self, uuid: str) -> None:
        """Rename the guest's LV to its set-aside name (a stale set-aside LV goes first)."""
        await self._remove_if_present(uuid, strict=True, aside=True)
        await self._run(["lvrename", self.vg, self.lv_name(uuid), self.lv_name(uuid, aside=True)],
                        "setting aside", uuid)

    async def restore(self, uuid: str) -> None:
        """Rename the set-aside LV back to the guest's own name (which must be free)."""
        await self._run(["lvrename", self.vg, self.lv_name(uuid, aside=True), self.lv_name(uuid)],
                        "restoring", uuid, aside=True)

    async def remove_aside(self, uuid: str) -> None:
        """Remove the set-aside LV; a missing one is not an error."""
        await self._remove_if_present(uuid, strict=True, aside=True)

    async def grow_fs(self, uuid: str, base: CachedImage) -> None:
        """Grow the filesystem on the LV in place (e2fsck, resize2fs)."""
        await growfs.grow_raw(self.path(uuid), self.runner)

    async def aside_size(self, uuid: str) -> int:
        """The whole set-aside LV is sent: its size is a whole number of extents."""
        return await self.size_bytes(uuid, aside=True)

    async def receive(self, uuid: str, size: int, chunks: AsyncIterator[bytes] | None, base: CachedImage,
                      size_bytes: int) -> bool:
        """A new LV of `size_bytes` (or the old disk's size, if larger), the guest's raw disk written into it
        (the chunks, or read from the set-aside LV for a resize in place)."""
        dev = Path(await self.create_blank(uuid, max(size_bytes, size)))
        if chunks is None:
            chunks = transfer.read_chunks(Path(self.aside_path(uuid)), size)
        written = await transfer.write_into(dev, chunks, skip_zeros=self.thin_pool is not None)
        if written != size:
            raise DriverError(f"the disk of {uuid} arrived with {written} bytes, {size} expected")
        return size_bytes > size

    async def free_bytes(self) -> int:
        """Room for new disks: the volume group's free space, or the thin pool's unused data space.
        DriverError when LVM cannot answer (a missing volume group or pool names itself there)."""
        if self.thin_pool:
            argv = ["lvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "lv_size,data_percent",
                    f"{self.vg}/{self.thin_pool}"]
        else:
            argv = ["vgs", "--noheadings", "--nosuffix", "--units", "b", "-o", "vg_free", self.vg]
        res = await self.runner.run(argv)
        if res.returncode != 0:
            raise DriverError(f"{argv[0]} on {self.vg}{'/' + self.thin_pool if self.thin_pool else ''} failed "
                              f"(exit {res.returncode}): {res.stderr.strip()[:300]}")
        try:
            fields = res.stdout.split()
            if self.thin_pool:
                size, used_percent = int(fields[0]), float(fields[1])
                return int(size * (100.0 - used_percent) / 100.0)
            return int(fields[0])
        except (IndexError, ValueError):
            raise DriverError(f"{argv[0]} gave no free space for {self.vg}: {res.stdout.strip()[:100]!r}") from None

    async def exists(self, uuid: str, aside: bool = False) -> bool:
        """Whether LVM knows the LV (`lvs` fails for a missing one)."""
        res = await self.runner.run(["lvs", "--noheadings", "-o", "lv_name",
                                     f"{self.vg}/{self.lv_name(uuid, aside)}"])
        return res.returncode == 0

    async def _remove_if_present(self, uuid: str, strict: bool = False, aside: bool = False) -> None:
        if not await self.exists(uuid, aside):
            return
        argv = ["lvremove", "-y", f"{self.vg}/{self.lv_name(uuid, aside)}"]
        if strict:
            await self._run(argv, "removal", uuid, aside)
        else:  # cleanup after another error: that error is the one to report
            await self.runner.run(argv)
