"""The LVM disk backend's exact command sequences, through a recording runner (issue 6); the real programs:
tests/integration/test_lvm_real.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from canopy.agent.disk.backend import DiskBackend, Qcow2Backend
from canopy.agent.disk.cache import CachedImage
from canopy.agent.disk.commands import RecordingRunner
from canopy.agent.disk.lvm import LvmBackend
from canopy.agent.virt.base import DriverError
from canopy.config import LibvirtConfig

U = "11111111-2222-3333-4444-555555555555"
LV = f"canopy-{U}"
GiB = 1 << 30
BASE = CachedImage("img-1", Path("/var/lib/canopy/instances/_base/img-1"), "qcow2", 1000, GiB, {})


def _convert(vg: str = "vg0") -> tuple[str, ...]:
    return ("qemu-img", "convert", "-q", "-n", "-f", "qcow2", "-O", "raw", str(BASE.path), f"/dev/{vg}/{LV}")


def test_both_backends_satisfy_the_protocol() -> None:
    backends: list[DiskBackend] = [Qcow2Backend(Path("/tmp")), LvmBackend("vg0", runner=RecordingRunner())]
    assert [b.kind for b in backends] == ["qcow2", "lvm"]
    assert backends[0].path(U) == f"/tmp/{U}/disk"
    assert backends[1].path(U) == f"/dev/vg0/{LV}"


def test_config_defaults_to_qcow2() -> None:
    cfg = LibvirtConfig()
    assert (cfg.disk_backend, cfg.lvm_volume_group, cfg.lvm_thin_pool) == ("qcow2", "", "")
    assert LibvirtConfig(disk_backend="lvm", lvm_volume_group="vg0").disk_backend == "lvm"


async def test_create_thick() -> None:
    r = RecordingRunner()
    dev = await LvmBackend("vg0", runner=r).create(U, BASE, 2 * GiB)
    assert dev == f"/dev/vg0/{LV}"
    assert r.calls == [("lvcreate", "-y", "-n", LV, "-L", f"{2 * GiB}b", "vg0"), _convert()]


async def test_create_thin() -> None:
    r = RecordingRunner()
    await LvmBackend("vg0", thin_pool="pool0", runner=r).create(U, BASE, 2 * GiB)
    assert r.calls == [("lvcreate", "-y", "-n", LV, "-V", f"{2 * GiB}b", "--thin", "vg0/pool0"), _convert()]


async def test_resize_and_remove() -> None:
    r = RecordingRunner()
    b = LvmBackend("vg0", runner=r)
    await b.resize(U, 3 * GiB)
    await b.remove(U)
    assert r.calls == [("lvextend", "-L", f"{3 * GiB}b", f"vg0/{LV}"),
                       ("lvs", "--noheadings", "-o", "lv_name", f"vg0/{LV}"),
                       ("lvremove", "-y", f"vg0/{LV}")]


async def test_remove_missing_is_not_an_error() -> None:
    r = RecordingRunner(fail={"lvs": (5, f'Failed to find logical volume "vg0/{LV}"')})
    await LvmBackend("vg0", runner=r).remove(U)
    assert r.calls == [("lvs", "--noheadings", "-o", "lv_name", f"vg0/{LV}")]


async def test_lvcreate_failure_names_vg_and_lv_and_removes_partial_lv() -> None:
    r = RecordingRunner(fail={"lvcreate": (5, '  Volume group "vg0" has insufficient free space')})
    with pytest.raises(DriverError) as exc:
        await LvmBackend("vg0", runner=r).create(U, BASE, 2 * GiB)
    msg = str(exc.value)
    assert "volume group vg0" in msg and LV in msg and "insufficient free space" in msg
    # lvcreate may leave a half-made LV: it is looked up and removed; nothing was copied
    assert r.calls == [("lvcreate", "-y", "-n", LV, "-L", f"{2 * GiB}b", "vg0"),
                       ("lvs", "--noheadings", "-o", "lv_name", f"vg0/{LV}"),
                       ("lvremove", "-y", f"vg0/{LV}")]


async def test_lvcreate_failure_with_no_lv_removes_nothing() -> None:
    r = RecordingRunner(fail={"lvcreate": (5, "no space"), "lvs": (5, "not found")})
    with pytest.raises(DriverError):
        await LvmBackend("vg0", runner=r).create(U, BASE, 2 * GiB)
    assert [c[0] for c in r.calls] == ["lvcreate", "lvs"]


async def test_copy_failure_removes_the_lv() -> None:
    r = RecordingRunner(fail={"qemu-img": (1, "Could not open '/dev/vg0/x': Permission denied")})
    with pytest.raises(DriverError, match="copying the image in .* volume group vg0"):
        await LvmBackend("vg0", runner=r).create(U, BASE, 2 * GiB)
    assert [c[0] for c in r.calls] == ["lvcreate", "qemu-img", "lvs", "lvremove"]


async def test_smaller_than_image_refused_before_any_command() -> None:
    r = RecordingRunner()
    with pytest.raises(DriverError, match="smaller than image img-1"):
        await LvmBackend("vg0", runner=r).create(U, BASE, GiB // 2)
    assert r.calls == []


async def test_lvextend_failure_is_a_driver_error() -> None:
    r = RecordingRunner(fail={"lvextend": (3, "New size given (1 extents) not larger than existing size")})
    with pytest.raises(DriverError, match=f"extending of logical volume {LV} in volume group vg0"):
        await LvmBackend("vg0", runner=r).resize(U, GiB)


def test_volume_group_required() -> None:
    with pytest.raises(DriverError, match="lvm_volume_group"):
        LvmBackend("")


def test_backend_from_settings() -> None:
    from canopy.agent.disk.backend import backend_for

    assert isinstance(backend_for("qcow2", Path("/x")), Qcow2Backend)
    lvm = backend_for("lvm", Path("/x"), "vg0", "pool0")
    assert isinstance(lvm, LvmBackend) and (lvm.vg, lvm.thin_pool) == ("vg0", "pool0")
    with pytest.raises(DriverError, match="lvm_volume_group"):
        backend_for("lvm", Path("/x"))


async def test_set_aside_restore_and_remove_aside() -> None:
    aside = f"{LV}_resize"
    r = RecordingRunner(fail={"lvs": (5, "not found")})  # no stale set-aside LV
    b = LvmBackend("vg0", runner=r)
    await b.set_aside(U)
    await b.restore(U)
    await b.remove_aside(U)  # already gone: nothing to remove
    assert r.calls == [("lvs", "--noheadings", "-o", "lv_name", f"vg0/{aside}"),
                       ("lvrename", "vg0", LV, aside),
                       ("lvrename", "vg0", aside, LV),
                       ("lvs", "--noheadings", "-o", "lv_name", f"vg0/{aside}")]
    assert b.aside_path(U) == f"/dev/vg0/{aside}"


async def test_set_aside_removes_a_stale_set_aside_lv_first() -> None:
    r = RecordingRunner()
    await LvmBackend("vg0", runner=r).set_aside(U)
    assert [c[0] for c in r.calls] == ["lvs", "lvremove", "lvrename"]
    assert r.calls[1] == ("lvremove", "-y", f"vg0/{LV}_resize")


async def test_restore_failure_names_the_set_aside_lv() -> None:
    r = RecordingRunner(fail={"lvrename": (5, f'Logical volume "{LV}" already exists in volume group "vg0"')})
    with pytest.raises(DriverError, match=f"restoring of logical volume {LV}_resize in volume group vg0"):
        await LvmBackend("vg0", runner=r).restore(U)


async def test_create_blank_and_size() -> None:
    r = RecordingRunner(stdout={"lvs": "  1077936128\n"})
    b = LvmBackend("vg0", thin_pool="pool0", runner=r)
    assert await b.create_blank(U, GiB) == f"/dev/vg0/{LV}"
    assert await b.size_bytes(U, aside=True) == 1077936128
    assert r.calls == [("lvcreate", "-y", "-n", LV, "-V", f"{GiB}b", "--thin", "vg0/pool0"),
                       ("lvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "lv_size", f"vg0/{LV}_resize")]
    r.stdout["lvs"] = ""
    with pytest.raises(DriverError, match="lvs gave no size"):
        await b.size_bytes(U)
