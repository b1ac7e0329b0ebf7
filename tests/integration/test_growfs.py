"""Growing a guest's ext4 filesystem on the host (agent/disk/growfs.py): the exact commands, their
failures, and a real qcow2 overlay grown with e2fsprogs and qemu-img that stays an overlay."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from canopy.agent.disk import growfs
from canopy.agent.disk.commands import RecordingRunner
from canopy.agent.virt.base import DriverError

needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("qemu-img", "mkfs.ext4", "resize2fs", "debugfs")),
                                 reason="qemu-img and e2fsprogs are not installed (scripts/system-packages.txt)")


def ext4_qcow2(tmp: Path, size_mib: int = 8) -> Path:
    """A qcow2 image holding a whole-disk ext4 filesystem (1 KiB blocks) with /hello in it."""
    raw = tmp / "fs.raw"
    (tmp / "hello").write_text("hello from the image\n")
    with raw.open("wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", str(raw)], check=True)
    subprocess.run(["debugfs", "-w", "-R", f"write {tmp / 'hello'} hello", str(raw)], check=True,
                   capture_output=True)
    out = tmp / "fs.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    raw.unlink()
    return out


def block_count(device: Path) -> int:
    out = subprocess.run(["dumpe2fs", "-h", str(device)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Block count:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]


def test_wanted_only_for_images_marked_host() -> None:
    assert growfs.wanted({"canopy_grow_fs": "host"}) and growfs.wanted({"canopy_grow_fs": " Host "})
    assert not growfs.wanted({}) and not growfs.wanted({"canopy_grow_fs": "guest"})


async def test_grow_raw_checks_then_grows() -> None:
    runner = RecordingRunner()
    await growfs.grow_raw("/dev/vg0/canopy-x", runner)
    assert runner.calls == [("e2fsck", "-f", "-y", "/dev/vg0/canopy-x"), ("resize2fs", "/dev/vg0/canopy-x")]


async def test_grow_raw_refuses_a_disk_without_a_filesystem() -> None:
    runner = RecordingRunner(fail={"e2fsck": (8, "Bad magic number in super-block")})
    with pytest.raises(DriverError, match=r"e2fsck on /dev/vg0/canopy-x failed \(8\).*Bad magic number"):
        await growfs.grow_raw("/dev/vg0/canopy-x", runner)
    assert [c[0] for c in runner.calls] == ["e2fsck"]  # resize2fs never ran


@needs_tools
async def test_grow_overlay_fills_the_disk_and_stays_a_small_overlay(tmp_path: Path) -> None:
    base = ext4_qcow2(tmp_path)
    overlay = tmp_path / "disk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay), "64M"],
                   check=True)
    await growfs.grow_overlay(overlay, base, "qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["virtual-size"] == 64 << 20 and info["backing-filename"] == str(base)
    assert overlay.stat().st_size < 8 << 20  # only what differs from the base
    flat = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", str(overlay), str(flat)], check=True)
    assert block_count(flat) == 64 << 10  # 1 KiB blocks: the whole 64 MiB
    cat = subprocess.run(["debugfs", "-R", "cat /hello", str(flat)], capture_output=True, text=True, check=True)
    assert cat.stdout == "hello from the image\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "flat.raw", "fs.qcow2", "hello"]  # no leftovers


@needs_tools
async def test_grow_overlay_of_a_disk_without_a_filesystem_fails_and_keeps_the_disk(tmp_path: Path) -> None:
    base = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "4M"], check=True)
    overlay = tmp_path / "disk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay), "8M"],
                   check=True)
    before = overlay.read_bytes()
    with pytest.raises(DriverError, match="e2fsck on .*disk.grow.raw failed"):
        await growfs.grow_overlay(overlay, base, "qcow2")
    assert overlay.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.qcow2", "disk"]
