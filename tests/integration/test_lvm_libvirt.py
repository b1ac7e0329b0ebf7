"""The libvirt driver on the LVM disk backend (issue 6), on libvirt's `test:///default` driver: the exact
LVM command sequences of spawn, resize (confirm and revert), cold migration, snapshot, rebuild, rescue and
destroy, and the domain XML's block disk. LVM itself is simulated: a recording runner keeps each "logical
volume" as a plain file under a temporary device root (these machines have no device-mapper); qemu-img and
every byte the driver reads and writes are real."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]
import pytest

from canopy.agent.disk import qemuimg
from canopy.agent.disk.backend import Qcow2Backend, root_disk_spec
from canopy.agent.disk.cache import ImageCache
from canopy.agent.disk.commands import CommandResult, SubprocessRunner
from canopy.agent.disk.lvm import LvmBackend
from canopy.agent.virt import customize
from canopy.agent.virt.base import DriverError, PowerState
from canopy.agent.virt.domain_model import DiskSpec, DomainSpec
from canopy.agent.virt.libvirt.driver import LibvirtDriver
from canopy.agent.virt.vif import FakeTaps
from canopy.config import LibvirtConfig
from canopy.rpc.calls import InstanceSpec
from tests.contract.virt import MemoryImages, make_spec

pytestmark = pytest.mark.skipif(subprocess.run(["which", "qemu-img"], capture_output=True).returncode != 0,
                                reason="qemu-img is not installed (scripts/system-packages.txt: qemu-utils)")

GiB = 1 << 30
MARKER = b"CANOPY-LVM-DISK"
IMAGE_BYTES = 4 << 20  # the image's virtual size: a flavor with disk 0 gets an LV this big


@dataclass
class FakeLvm:
    """A CommandRunner that records every argv and acts out lvcreate/lvextend/lvrename/lvremove/lvs on files
    `<dev_root>/<vg>/<lv>` (failing as LVM does for a missing or existing LV); qemu-img runs for real."""

    dev_root: Path
    calls: list[tuple[str, ...]] = field(default_factory=list)
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)

    def _lv(self, ref: str) -> Path:
        return self.dev_root / ref

    async def run(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(tuple(argv))
        prog, args = argv[0], list(argv[1:])
        if prog in self.fail:
            rc, err = self.fail[prog]
            return CommandResult(tuple(argv), rc, "", err)
        if prog in ("qemu-img", "e2fsck", "resize2fs"):  # real, on the files standing in for LVs
            return await SubprocessRunner(60).run(argv)
        if prog == "lvcreate":
            name = args[args.index("-n") + 1]
            size = args[args.index("-V" if "-V" in args else "-L") + 1]
            vg = args[-1].split("/")[0]
            lv = self._lv(f"{vg}/{name}")
            if lv.exists():
                return self._err(argv, f'Logical Volume "{name}" already exists in volume group "{vg}"')
            lv.parent.mkdir(parents=True, exist_ok=True)
            with lv.open("wb") as f:
                f.truncate(int(size.rstrip("b")))
            return CommandResult(tuple(argv), 0)
        if prog == "lvextend":
            lv, size = self._lv(args[-1]), int(args[args.index("-L") + 1].rstrip("b"))
            if not lv.exists() or size < lv.stat().st_size:
                return self._err(argv, "cannot extend")
            os.truncate(lv, size)
            return CommandResult(tuple(argv), 0)
        if prog == "lvrename":
            vg, old, new = args
            if not self._lv(f"{vg}/{old}").exists() or self._lv(f"{vg}/{new}").exists():
                return self._err(argv, f"cannot rename {old} to {new}")
            os.replace(self._lv(f"{vg}/{old}"), self._lv(f"{vg}/{new}"))
            return CommandResult(tuple(argv), 0)
        if prog in ("lvremove", "lvs"):
            lv = self._lv(args[-1])
            if not lv.exists():
                return self._err(argv, f'Failed to find logical volume "{args[-1]}"')
            if prog == "lvremove":
                lv.unlink()
                return CommandResult(tuple(argv), 0)
            out = f"  {lv.stat().st_size}\n" if "lv_size" in args else f"  {lv.name}\n"
            return CommandResult(tuple(argv), 0, out)
        raise AssertionError(f"unexpected command {argv}")

    @staticmethod
    def _err(argv: Sequence[str], msg: str) -> CommandResult:
        return CommandResult(tuple(argv), 5, "", f"  {msg}\n")

    def take(self) -> list[tuple[str, ...]]:
        """The calls since the last take."""
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture(scope="module")
def marked_qcow2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A qcow2 image whose first bytes are MARKER."""
    tmp = tmp_path_factory.mktemp("img")
    raw = tmp / "disk.raw"
    with raw.open("wb") as f:
        f.write(MARKER)
        f.truncate(IMAGE_BYTES)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(tmp / "disk.qcow2")],
                   check=True)
    return (tmp / "disk.qcow2").read_bytes()


@dataclass
class Host:
    driver: LibvirtDriver
    lvm: FakeLvm
    dev: Path  # the "device root": <dev>/vg0/canopy-<uuid>

    def lv(self, uuid: str, aside: bool = False) -> Path:
        return self.dev / "vg0" / f"canopy-{uuid}{'_resize' if aside else ''}"


def make_host(tmp: Path, name: str, images: MemoryImages, thin_pool: str = "") -> Host:
    dev = tmp / name / "dev"
    lvm = FakeLvm(dev)
    config = LibvirtConfig(uri="test:///default", instances_path=tmp / name / "instances", disk_backend="lvm",
                           lvm_volume_group="vg0")
    cache = ImageCache(config.instances_path / "_base", images)
    disks = LvmBackend("vg0", thin_pool or None, runner=lvm, dev_root=str(dev))
    return Host(LibvirtDriver(name, config, cache, FakeTaps(), disks), lvm, dev)


@pytest.fixture
async def rig(tmp_path: Path, marked_qcow2: bytes) -> AsyncIterator[Any]:
    images = MemoryImages()
    image = images.add(marked_qcow2, "qcow2")
    hosts = [make_host(tmp_path, n, images) for n in ("hv-a", "hv-b")]
    for h in hosts:
        await h.driver.wait_ready()

    class Rig:
        pass

    r = Rig()
    r.images, r.image, r.a, r.b = images, image, hosts[0], hosts[1]  # type: ignore[attr-defined]
    yield r
    for h in hosts:
        for uuid in list(await h.driver.guest_states()):
            await h.driver.destroy(uuid)


def convert(base: Path, lv: Path) -> tuple[str, ...]:
    return ("qemu-img", "convert", "-q", "-n", "-f", "qcow2", "-O", "raw", str(base), str(lv))


def lvs(lv: str) -> tuple[str, ...]:
    return ("lvs", "--noheadings", "-o", "lv_name", f"vg0/{lv}")


def head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(len(MARKER))


def root_disk(xml: str) -> ET.Element:
    disk = ET.fromstring(xml).find("./devices/disk/target[@dev='vda']/..")
    assert disk is not None, xml
    return disk


async def domain_xml(h: Host, uuid: str) -> str:
    dom = await h.driver.hv.dom(uuid)
    return str(dom.XMLDesc(0))


def resized(spec: InstanceSpec, **kw: Any) -> InstanceSpec:
    return spec.model_copy(update=kw)


# -- the domain XML -------------------------------------------------------------------------------

@pytest.mark.parametrize(("disk", "expected"), [
    (root_disk_spec(LvmBackend("vg0"), "u-1", "vda", "u-1"),
     "<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native' />"
     "<source dev='/dev/vg0/canopy-u-1' /><target dev='vda' bus='virtio' /><serial>u-1</serial></disk>"),
    (root_disk_spec(Qcow2Backend(Path("/i")), "u-1", "vda", "u-1"),
     "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none' />"
     "<source file='/i/u-1/disk' /><target dev='vda' bus='virtio' /><serial>u-1</serial></disk>"),
    (DiskSpec(path="/i/disk.config", target="vdb", format="raw", readonly=True),
     "<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none' />"
     "<source file='/i/disk.config' /><target dev='vdb' bus='virtio' /><readonly /></disk>"),
])
def test_disk_xml(disk: DiskSpec, expected: str) -> None:
    spec = DomainSpec(name="canopy-u-1", uuid="u-1", memory_mib=128, vcpus=1, disks=(disk,))
    c = customize.resolve(customize.HostCustomization(), {}, {})
    xml = customize.build_xml(spec, c, "tcg", ())
    el = ET.fromstring(xml).find("./devices/disk")
    assert el is not None
    ET.indent(el, space="")
    el.tail = None
    assert ET.tostring(el, encoding="unicode").replace("\n", "").replace('"', "'") == expected


# -- the driver on LVM ----------------------------------------------------------------------------

async def test_spawn_resize_confirm_destroy_command_sequence(rig: Any) -> None:
    a: Host = rig.a
    spec = make_spec(rig.image, disk_gb=0)
    uuid, lv, aside = spec.uuid, f"canopy-{spec.uuid}", f"canopy-{spec.uuid}_resize"
    base = a.driver.cache.root / rig.image
    await a.driver.spawn(spec)
    assert a.lvm.take() == [("lvcreate", "-y", "-n", lv, "-L", f"{IMAGE_BYTES}b", "vg0"), convert(base, a.lv(uuid))]
    assert head(a.lv(uuid)) == MARKER and a.lv(uuid).stat().st_size == IMAGE_BYTES
    disk = root_disk(await domain_xml(a, uuid))
    assert disk.get("type") == "block"
    assert disk.find("source").get("dev") == str(a.lv(uuid))  # type: ignore[union-attr]
    assert disk.find("driver").attrib == {"name": "qemu", "type": "raw", "cache": "none", "io": "native"}  # type: ignore[union-attr]
    assert not (a.driver.instance_dir(uuid) / "disk").exists()  # no qcow2 file next to the LV

    # resize in place to a flavor with a 1 GiB disk and 2 vCPUs
    info = await a.driver.mobility.migrate_out(uuid, 5)
    assert (info.size, info.disk_format) == (IMAGE_BYTES, "raw")
    new = resized(spec, disk_gb=1, vcpus=2)
    await a.driver.mobility.finish_migration(new, info, None, power_on=True)
    assert a.lvm.take() == [
        lvs(aside),                                              # no stale set-aside LV
        ("lvrename", "vg0", lv, aside),
        ("lvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "lv_size", f"vg0/{aside}"),
        ("lvcreate", "-y", "-n", lv, "-L", f"{GiB}b", "vg0"),      # the new flavor's size
    ]
    assert a.lv(uuid).stat().st_size == GiB and head(a.lv(uuid)) == MARKER  # the old disk's bytes, copied
    assert head(a.lv(uuid, aside=True)) == MARKER
    xml = await domain_xml(a, uuid)
    assert ET.fromstring(xml).findtext("vcpu") == "2"
    assert root_disk(xml).find("source").get("dev") == str(a.lv(uuid))  # type: ignore[union-attr]
    assert await a.driver.power_state(uuid) == PowerState.RUNNING

    await a.driver.mobility.confirm_migration(uuid)
    assert a.lvm.take() == [lvs(aside), ("lvremove", "-y", f"vg0/{aside}")]
    assert not a.driver.mobility.aside_dir(uuid).exists()

    await a.driver.destroy(uuid)
    assert a.lvm.take() == [lvs(lv), ("lvremove", "-y", f"vg0/{lv}")]
    assert not a.lv(uuid).exists() and not a.driver.instance_dir(uuid).exists()
    assert uuid not in await a.driver.guest_states()


async def test_resize_revert_keeps_the_old_lv(rig: Any) -> None:
    a: Host = rig.a
    spec = make_spec(rig.image, disk_gb=0)
    uuid, lv, aside = spec.uuid, f"canopy-{spec.uuid}", f"canopy-{spec.uuid}_resize"
    await a.driver.spawn(spec)
    with a.lv(uuid).open("r+b") as f:  # the guest wrote something the revert must keep
        f.seek(IMAGE_BYTES - 5)
        f.write(b"GUEST")
    info = await a.driver.mobility.migrate_out(uuid, 5)
    await a.driver.mobility.finish_migration(resized(spec, disk_gb=1, vcpus=2), info, None, power_on=True)
    a.lvm.take()
    await a.driver.mobility.revert_migration(uuid, spec.ports, power_on=True)
    assert a.lvm.take() == [lvs(lv), ("lvremove", "-y", f"vg0/{lv}"), ("lvrename", "vg0", aside, lv)]
    assert a.lv(uuid).stat().st_size == IMAGE_BYTES and not a.lv(uuid, aside=True).exists()
    with a.lv(uuid).open("rb") as f:
        f.seek(IMAGE_BYTES - 5)
        assert f.read() == b"GUEST"
    xml = await domain_xml(a, uuid)
    assert ET.fromstring(xml).findtext("vcpu") == "1"
    assert root_disk(xml).find("source").get("dev") == str(a.lv(uuid))  # type: ignore[union-attr]
    assert await a.driver.power_state(uuid) == PowerState.RUNNING


async def test_cold_migration_pulls_the_lv_in_chunks(rig: Any) -> None:
    a, b = rig.a, rig.b
    spec = make_spec(rig.image, disk_gb=0)
    uuid = spec.uuid
    await a.driver.spawn(spec)
    with a.lv(uuid).open("r+b") as f:
        f.seek(3 << 20)
        f.write(b"WRITTEN-BY-GUEST")
    info = await a.driver.mobility.migrate_out(uuid, 5)
    reads: list[tuple[int, int]] = []

    async def pull() -> AsyncIterator[bytes]:  # what agent/mobility.pull_disk does over the bus
        offset = 0
        while offset < info.size:
            reads.append((offset, min(1 << 20, info.size - offset)))
            data = await a.driver.mobility.read_disk(uuid, *reads[-1])
            offset += len(data)
            yield data

    await b.driver.mobility.finish_migration(resized(spec, disk_gb=1), info, pull(), power_on=False)
    assert reads == [(n << 20, 1 << 20) for n in range(4)]
    assert b.lvm.take() == [("lvcreate", "-y", "-n", f"canopy-{uuid}", "-L", f"{GiB}b", "vg0")]
    assert b.lv(uuid).stat().st_size == GiB and head(b.lv(uuid)) == MARKER
    with b.lv(uuid).open("rb") as f:
        f.seek(3 << 20)
        assert f.read(16) == b"WRITTEN-BY-GUEST"
    assert await b.driver.power_state(uuid) == PowerState.SHUTDOWN
    await a.driver.mobility.confirm_migration(uuid)
    assert not a.lv(uuid, aside=True).exists() and not a.lv(uuid).exists()


async def test_migration_into_a_thin_lv_leaves_zeros_unwritten(rig: Any, tmp_path: Path) -> None:
    a, thin = rig.a, make_host(tmp_path, "hv-thin", rig.images, thin_pool="pool0")
    await thin.driver.wait_ready()
    spec = make_spec(rig.image, disk_gb=0)
    await a.driver.spawn(spec)
    with a.lv(spec.uuid).open("r+b") as f:
        f.seek(IMAGE_BYTES - 4)
        f.write(b"TAIL")
    info = await a.driver.mobility.migrate_out(spec.uuid, 5)

    async def pull() -> AsyncIterator[bytes]:
        for offset in range(0, info.size, 1 << 20):
            yield await a.driver.mobility.read_disk(spec.uuid, offset, 1 << 20)

    try:
        await thin.driver.mobility.finish_migration(spec, info, pull(), power_on=False)
        assert thin.lvm.take()[0] == ("lvcreate", "-y", "-n", f"canopy-{spec.uuid}", "-V", f"{IMAGE_BYTES}b",
                                      "--thin", "vg0/pool0")
        lv = thin.lv(spec.uuid)
        assert lv.read_bytes() == a.lv(spec.uuid, aside=True).read_bytes()
        # the first and last MiB hold data; the two all-zero MiB between were skipped (holes in the file)
        assert lv.stat().st_blocks * 512 <= 2 << 20
    finally:
        await thin.driver.destroy(spec.uuid)


async def test_failed_migration_leaves_no_lv_on_the_target(rig: Any, tmp_path: Path) -> None:
    a, b = rig.a, rig.b
    spec = make_spec(rig.image, disk_gb=0)
    await a.driver.spawn(spec)
    info = await a.driver.mobility.migrate_out(spec.uuid, 5)

    async def short() -> AsyncIterator[bytes]:
        yield await a.driver.mobility.read_disk(spec.uuid, 0, 1 << 20)

    with pytest.raises(DriverError, match=f"arrived with {1 << 20} bytes, {IMAGE_BYTES} expected"):
        await b.driver.mobility.finish_migration(spec, info, short(), power_on=True)
    assert not b.lv(spec.uuid).exists() and not b.driver.instance_dir(spec.uuid).exists()
    with pytest.raises(DriverError, match=r"is qcow2; hv-b keeps raw disks \(lvm\)"):
        await b.driver.mobility.finish_migration(spec, info.model_copy(update={"disk_format": "qcow2"}), short(), True)
    qcow2_host = LibvirtDriver("hv-q", LibvirtConfig(uri="test:///default", instances_path=tmp_path / "q"),
                               ImageCache(tmp_path / "q" / "_base", rig.images), FakeTaps())
    with pytest.raises(DriverError, match=r"is raw; hv-q keeps qcow2 disks \(qcow2\)"):
        await qcow2_host.mobility.finish_migration(spec, info, short(), True)
    assert not (tmp_path / "q" / spec.uuid).exists()
    # the source restores its guest from the set-aside LV
    await a.driver.mobility.revert_migration(spec.uuid, spec.ports, power_on=True)
    assert head(a.lv(spec.uuid)) == MARKER and await a.driver.power_state(spec.uuid) == PowerState.RUNNING


async def test_snapshot_reads_the_raw_lv(rig: Any, tmp_path: Path) -> None:
    a: Host = rig.a
    spec = make_spec(rig.image, disk_gb=0)
    await a.driver.spawn(spec)
    a.lvm.take()
    dest = tmp_path / "snap.qcow2"
    assert await a.driver.mobility.snapshot(spec.uuid, dest) == "qcow2"
    info = await qemuimg.info(dest)
    assert (info["format"], info["virtual-size"], info.get("backing-filename")) == ("qcow2", IMAGE_BYTES, None)
    raw = tmp_path / "snap.raw"
    await qemuimg.run("convert", "-f", "qcow2", "-O", "raw", str(dest), str(raw))
    assert head(raw) == MARKER
    assert a.lvm.take() == []  # qemu-img reads the LV's device directly; no LVM command
    assert await a.driver.power_state(spec.uuid) == PowerState.RUNNING  # paused for the copy, resumed


async def test_rebuild_makes_a_new_lv(rig: Any) -> None:
    a: Host = rig.a
    spec = make_spec(rig.image, disk_gb=0)
    lv = f"canopy-{spec.uuid}"
    await a.driver.spawn(spec)
    with a.lv(spec.uuid).open("r+b") as f:
        f.write(b"OVERWRITTEN")
    a.lvm.take()
    await a.driver.mobility.rebuild(spec, power_on=True)
    base = a.driver.cache.root / rig.image
    assert a.lvm.take() == [lvs(lv), ("lvremove", "-y", f"vg0/{lv}"),
                            ("lvcreate", "-y", "-n", lv, "-L", f"{IMAGE_BYTES}b", "vg0"),
                            convert(base, a.lv(spec.uuid))]
    assert head(a.lv(spec.uuid)) == MARKER


async def test_rescue_boots_an_overlay_with_the_lv_as_vdb(rig: Any) -> None:
    a: Host = rig.a
    spec = make_spec(rig.image, disk_gb=0)
    await a.driver.spawn(spec)
    a.lvm.take()
    await a.driver.mobility.rescue(spec, rig.image)
    assert a.lvm.take() == []  # the rescue disk is a qcow2 overlay in <uuid>/rescue/, not an LV
    devices = ET.fromstring(await domain_xml(a, spec.uuid)).find("devices")
    assert devices is not None
    got = {d.find("target").get("dev"): (d.get("type"), d.find("driver").get("type"),  # type: ignore[union-attr]
                                          d.find("source").get("file") or d.find("source").get("dev"))  # type: ignore[union-attr]
           for d in devices.findall("disk")}
    folder = a.driver.instance_dir(spec.uuid)
    assert got == {"vda": ("file", "qcow2", str(folder / "rescue" / "disk")),
                   "vdb": ("block", "raw", str(a.lv(spec.uuid))),
                   "vdc": ("file", "raw", str(folder / "rescue" / "disk.config"))}
    await a.driver.mobility.unrescue(spec.uuid)
    assert root_disk(await domain_xml(a, spec.uuid)).find("source").get("dev") == str(a.lv(spec.uuid))  # type: ignore[union-attr]
    assert not (folder / "rescue").exists()


async def test_lvcreate_failure_fails_the_spawn_and_leaves_nothing(rig: Any) -> None:
    a: Host = rig.a
    a.lvm.fail["lvcreate"] = (5, '  Volume group "vg0" has insufficient free space (10 extents): 256 required.')
    spec = make_spec(rig.image, disk_gb=1)
    with pytest.raises(DriverError, match=f"canopy-{spec.uuid} in volume group vg0 .*insufficient free space"):
        await a.driver.spawn(spec)
    assert not a.driver.instance_dir(spec.uuid).exists()
    with pytest.raises(libvirt.libvirtError):
        a.driver.hv.connection().lookupByUUIDString(spec.uuid)


async def test_injection_is_refused_on_lvm_before_any_disk(rig: Any) -> None:
    a: Host = rig.a
    image = rig.images.add(rig.images.images[rig.image][1], "qcow2", canopy_injection="true")
    spec = make_spec(image, disk_gb=0)
    with pytest.raises(DriverError, match="disk_backend 'lvm' cannot inject"):
        await a.driver.spawn(spec)
    assert a.lvm.take() == [lvs(f"canopy-{spec.uuid}")]  # only the cleanup's look-up
    assert not a.driver.instance_dir(spec.uuid).exists()


async def test_host_grows_the_filesystem_of_a_marked_image_on_its_lv(rig: Any, tmp_path: Path) -> None:
    from tests.integration.test_growfs import block_count, ext4_qcow2

    a: Host = rig.a
    image = rig.images.add(ext4_qcow2(tmp_path).read_bytes(), "qcow2", canopy_grow_fs="host")
    spec = make_spec(image, disk_gb=1)
    await a.driver.spawn(spec)
    lv = a.lv(spec.uuid)
    assert a.lvm.take()[-2:] == [("e2fsck", "-f", "-y", str(lv)), ("resize2fs", str(lv))]
    assert block_count(lv) * 1024 == GiB  # the filesystem fills the 1 GiB volume


# -- wiring ---------------------------------------------------------------------------------------

def test_agent_with_lvm_starts_and_without_a_volume_group_refuses(tmp_path: Path) -> None:
    from canopy.agent.virt.libvirt.wiring import libvirt_agent, libvirt_driver
    from canopy.config import Settings
    from canopy.rpc.local import LocalTransport

    s = Settings()
    s.libvirt.uri, s.libvirt.instances_path = "test:///default", tmp_path / "instances"
    s.libvirt.disk_backend, s.libvirt.lvm_volume_group, s.libvirt.lvm_thin_pool = "lvm", "vg0", "pool0"
    agent = libvirt_agent(s, "hv-1", LocalTransport(), taps=FakeTaps())
    disks = agent.driver.disks  # type: ignore[attr-defined]
    assert isinstance(disks, LvmBackend) and (disks.vg, disks.thin_pool) == ("vg0", "pool0")
    s.libvirt.disk_backend = "qcow2"
    assert isinstance(libvirt_driver(s, "hv-1").disks, Qcow2Backend)
    s.libvirt.disk_backend, s.libvirt.lvm_volume_group = "lvm", ""
    with pytest.raises(DriverError, match="lvm_volume_group"):
        libvirt_driver(s, "hv-1")
