"""Growing a guest's filesystem to its disk on the host, before it boots (issue 6).

Cloud images grow their own root filesystem on boot (cloud-init's growpart and resize2fs); images that
cannot are marked `canopy_grow_fs=host`, and the agent grows their whole-disk ext2/3/4 filesystem after it
makes or enlarges the disk:

    await grow_raw("/dev/vg0/canopy-<uuid>", runner)           # e2fsck -f -y; resize2fs (LVM: raw LVs)
    await grow_overlay(Path(".../disk"), base_path, "qcow2")   # via a temporary raw copy, see below

A qcow2 overlay is flattened into a sparse raw copy, the filesystem grown there, and the copy converted
back with `qemu-img convert -B <base>`, which writes only the clusters that differ from the base: the
disk stays a small overlay over the shared base, as the file injection does (agent/inject.py). Nothing
is mounted; the host kernel never parses the guest's filesystem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from canopy.agent.disk import qemuimg
from canopy.agent.disk.commands import CommandRunner, SubprocessRunner
from canopy.agent.virt.base import DriverError

PROPERTY = "canopy_grow_fs"


def wanted(image_props: Mapping[str, str]) -> bool:
    """The image asks the host to grow its filesystem (`canopy_grow_fs=host`)."""
    return str(image_props.get(PROPERTY, "")).strip().lower() == "host"


async def grow_raw(device: str | Path, runner: CommandRunner | None = None) -> None:
    """Check, then grow the ext2/3/4 filesystem filling the raw disk `device` to the disk's size."""
    run = runner or SubprocessRunner()
    # e2fsck: 0 clean, 1 errors corrected, 2 corrected (reboot advised: not mounted here); more is failure
    checked = await run.run(["e2fsck", "-f", "-y", str(device)])
    if checked.returncode not in (0, 1, 2):
        raise DriverError(f"e2fsck on {device} failed ({checked.returncode}): the disk does not hold a whole-disk "
                          f"ext2/3/4 filesystem the host can grow: {(checked.stderr or checked.stdout).strip()[:300]}")
    grown = await run.run(["resize2fs", str(device)])
    if grown.returncode != 0:
        raise DriverError(f"resize2fs on {device} failed ({grown.returncode}): "
                          f"{(grown.stderr or grown.stdout).strip()[:300]}")


async def grow_overlay(overlay: Path, base: Path, base_format: str, runner: CommandRunner | None = None) -> None:
    """Grow the filesystem of a qcow2 overlay of `base` to the overlay's virtual size; it stays an overlay."""
    flat = overlay.with_name(overlay.name + ".grow.raw")
    out = overlay.with_name(overlay.name + ".grow.qcow2")
    try:
        await qemuimg.run("convert", "-q", "-f", "qcow2", "-O", "raw", str(overlay), str(flat), timeout_s=1800)
        await grow_raw(flat, runner)
        await qemuimg.run("convert", "-q", "-f", "raw", "-O", "qcow2", "-B", str(base), "-F", base_format,
                          str(flat), str(out), timeout_s=1800)
        await asyncio.to_thread(out.replace, overlay)
    finally:
        flat.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
