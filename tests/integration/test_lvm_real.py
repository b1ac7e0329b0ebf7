"""The disk backends on the real programs: the subprocess runner, LVM on a loop device (as root, with
device-mapper), and the qcow2 backend on qemu-img (the command sequences: tests/unit/test_lvm_commands.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid as uuidlib
from pathlib import Path

import pytest

from canopy.agent.disk.backend import Qcow2Backend
from canopy.agent.disk.cache import CachedImage
from canopy.agent.disk.commands import SubprocessRunner
from canopy.agent.disk.lvm import LvmBackend

U = "11111111-2222-3333-4444-555555555555"
LV = f"canopy-{U}"
GiB = 1 << 30
BASE = CachedImage("img-1", Path("/var/lib/canopy/instances/_base/img-1"), "qcow2", 1000, GiB, {})


async def test_subprocess_runner_runs_and_reports_missing_programs() -> None:
    ok = await SubprocessRunner().run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (ok.returncode, ok.stdout, ok.stderr) == (3, "out\n", "err\n")
    missing = await SubprocessRunner().run(["canopy-no-such-program"])
    assert missing.returncode == 127


def _device_mapper_reason() -> str | None:
    try:
        os.close(os.open("/dev/mapper/control", os.O_RDWR))
    except OSError:
        return "no device-mapper: /dev/mapper/control cannot be opened"
    if shutil.which("lvcreate") is None or os.geteuid() != 0:
        return "LVM tools or root missing"
    return None


@pytest.fixture
def volume_group(tmp_path: Path):  # type: ignore[no-untyped-def]
    reason = _device_mapper_reason()
    if reason:
        pytest.skip(reason)
    vg = f"canopytest{uuidlib.uuid4().hex[:8]}"
    backing = tmp_path / "pv.img"
    with backing.open("wb") as f:
        f.truncate(256 << 20)
    loop = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True, capture_output=True,
                          text=True).stdout.strip()
    try:
        subprocess.run(["vgcreate", "-y", vg, loop], check=True, capture_output=True)
        yield vg
    finally:
        subprocess.run(["vgremove", "-y", "-f", vg], capture_output=True)
        subprocess.run(["pvremove", "-y", loop], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)


async def test_real_volume_create_grow_remove(volume_group: str, tmp_path: Path) -> None:
    raw = tmp_path / "img.raw"
    raw.write_bytes(b"CANOPY-LVM" + bytes(4 << 20))
    base = CachedImage("img-raw", raw, "raw", raw.stat().st_size, raw.stat().st_size, {})
    b = LvmBackend(volume_group)
    dev = await b.create(U, base, 16 << 20)
    try:
        with open(dev, "rb") as f:
            assert f.read(10) == b"CANOPY-LVM"
        await b.resize(U, 32 << 20)
        size = subprocess.run(["blockdev", "--getsize64", dev], check=True, capture_output=True, text=True)
        assert int(size.stdout) >= 32 << 20
        assert await b.size_bytes(U) == int(size.stdout)
        await b.set_aside(U)
        assert await b.exists(U, aside=True) and not await b.exists(U)
        await b.restore(U)
        assert await b.exists(U) and not await b.exists(U, aside=True)
    finally:
        await b.remove(U)
    assert not await b.exists(U)


async def test_qcow2_backend_on_real_qemu_img(tmp_path: Path) -> None:
    raw = tmp_path / "base.raw"
    raw.write_bytes(bytes(1 << 20))
    base = CachedImage("img-raw", raw, "raw", 1 << 20, 1 << 20, {})
    b = Qcow2Backend(tmp_path)
    (tmp_path / U).mkdir()
    path = await b.create(U, base, 2 << 20)
    from canopy.agent.disk import qemuimg
    info = await qemuimg.info(Path(path))
    assert (info["format"], info["virtual-size"], info["backing-filename"]) == ("qcow2", 2 << 20, str(raw))
    await b.resize(U, 4 << 20)
    assert (await qemuimg.info(Path(path)))["virtual-size"] == 4 << 20
    with pytest.raises(qemuimg.DiskError, match="cannot shrink"):
        await b.resize(U, 1 << 20)
    await b.remove(U)
    assert not Path(path).exists()
