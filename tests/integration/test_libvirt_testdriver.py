"""The libvirt driver's lifecycle on libvirt's in-memory `test:///default` driver, with real qcow2 overlays
(qemu-img), a real config drive (pycdlib), an image cache fed by an in-memory image source, and taps in
memory; plus reconcile and the power-state sync against a stand-in conductor on the in-process bus."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from canopy.agent import configdrive
from canopy.agent.disk import qemuimg
from canopy.agent.disk.cache import ImageCache, ImageCorrupt
from canopy.agent.reconcile import HostReconciler, wait_for
from canopy.agent.virt.base import DriverError, HypervisorUnavailable, InstanceNotFound, PowerState
from canopy.agent.virt.customize import InvalidCustomization
from canopy.agent.virt.libvirt.driver import LibvirtDriver
from canopy.agent.virt.vif import FakeTaps, tap_name
from canopy.config import LibvirtConfig
from canopy.rpc.base import Target
from canopy.rpc.calls import (
    HostInstance,
    HostInstances,
    ListHostInstances,
    PowerStateSync,
)
from canopy.rpc.local import LocalTransport
from canopy.rpc.messages import Message
from tests.contract.virt import MemoryImages, make_spec, qcow2_bytes

pytestmark = pytest.mark.skipif(subprocess.run(["which", "qemu-img"], capture_output=True).returncode != 0,
                                reason="qemu-img is not installed (scripts/system-packages.txt: qemu-utils)")


@pytest.fixture(scope="module")
def tiny_qcow2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return qcow2_bytes(tmp_path_factory.mktemp("img"))


@pytest.fixture
async def rig(tmp_path: Path, tiny_qcow2: bytes) -> AsyncIterator[Any]:
    images = MemoryImages()
    kernel = images.add(b"\x7fELF kernel" * 100, "aki")
    ramdisk = images.add(b"initramfs" * 100, "ari")
    image = images.add(tiny_qcow2, "qcow2", kernel_id=kernel, ramdisk_id=ramdisk, os_command_line="console=ttyS0")
    config = LibvirtConfig(uri="test:///default", instances_path=tmp_path / "instances")
    cache = ImageCache(tmp_path / "instances" / "_base", images)
    taps = FakeTaps()
    driver = LibvirtDriver("hv-test", config, cache, taps)
    await driver.wait_ready()

    class Rig:
        pass

    r = Rig()
    r.images, r.image, r.driver, r.taps, r.cache, r.tmp = images, image, driver, taps, cache, tmp_path  # type: ignore[attr-defined]
    yield r
    for uuid in list(await driver.guest_states()):
        await driver.destroy(uuid)


async def test_host_info_and_accelerator(rig: Any) -> None:
    info = rig.driver.host_info()
    assert info.hypervisor_type.upper() == "TEST"
    assert info.vcpus > 0 and info.memory_mb > 0 and info.local_gb > 0
    assert info.accelerator == "test"


async def test_lifecycle(rig: Any) -> None:
    d: LibvirtDriver = rig.driver
    spec = make_spec(rig.image)
    await d.spawn(spec)
    folder = d.instance_dir(spec.uuid)
    assert await d.power_state(spec.uuid) == PowerState.RUNNING
    # the disk is a qcow2 overlay over the cached base, grown to the flavor's size
    info = await qemuimg.info(folder / "disk")
    assert info["format"] == "qcow2" and info["virtual-size"] == 1 << 30
    assert info["backing-filename"] == str(rig.cache.root / rig.image)
    assert rig.taps.exists(tap_name(spec.ports[0].id))
    used = d.images_in_use()
    assert rig.image in used and len(used) == 3  # disk, kernel and ramdisk stay cached

    assert await d.shutdown(spec.uuid, 5)
    assert (await d.guest_states())[spec.uuid].reason == "shutdown"
    await d.power_on(spec.uuid)
    await d.pause(spec.uuid)
    assert await d.power_state(spec.uuid) == PowerState.PAUSED
    await d.unpause(spec.uuid)
    await d.suspend(spec.uuid)
    assert (await d.guest_states())[spec.uuid].power == PowerState.SUSPENDED
    await d.resume(spec.uuid)
    assert await d.power_state(spec.uuid) == PowerState.RUNNING
    await d.reboot(spec.uuid, hard=True)
    await d.reboot(spec.uuid, hard=False)
    assert await d.power_state(spec.uuid) == PowerState.RUNNING
    await d.power_off(spec.uuid)
    assert (await d.guest_states())[spec.uuid].reason == "destroyed"
    with pytest.raises(DriverError, match="no saved state"):
        await d.resume(spec.uuid)

    await d.destroy(spec.uuid)
    await d.destroy(spec.uuid)  # destroying what is gone is not an error
    assert spec.uuid not in await d.guest_states()
    assert not folder.exists()
    assert not rig.taps.exists(tap_name(spec.ports[0].id))
    with pytest.raises(InstanceNotFound):
        await d.power_on(spec.uuid)


async def test_console_output_reads_the_serial_log_tail(rig: Any) -> None:
    spec = make_spec(rig.image)
    await rig.driver.spawn(spec)
    log = rig.driver.instance_dir(spec.uuid) / "console.log"
    log.write_bytes(b"".join(f"line {n}\r\n".encode() for n in range(1, 101)))
    assert await rig.driver.console_output(spec.uuid, 3) == "line 98\nline 99\nline 100\n"
    assert (await rig.driver.console_output(spec.uuid, None)).count("\n") == 100


async def test_config_drive_layout(rig: Any) -> None:
    spec = make_spec(rig.image)
    await rig.driver.spawn(spec)
    files = configdrive.read_iso(rig.driver.instance_dir(spec.uuid) / "disk.config")
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == spec.uuid and meta["hostname"] == "web-1" and meta["name"] == "web 1"
    assert list(meta["public_keys"].values()) == ["ssh-ed25519 AAAAC3Nza test@canopy"]
    net = json.loads(files["openstack/latest/network_data.json"])
    assert net["links"][0]["ethernet_mac_address"] == "fa:16:3e:12:34:56"
    v4, v6 = net["networks"]
    assert (v4["type"], v4["ip_address"], v4["netmask"]) == ("ipv4", "203.0.113.10", "255.255.255.0")
    assert v4["routes"] == [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "203.0.113.1"}]
    assert (v6["type"], v6["ip_address"], v6["routes"][0]["gateway"]) == ("ipv6", "2001:db8::10", "2001:db8::1")
    assert net["services"] == [{"type": "dns", "address": "192.0.2.53"}]
    assert files["openstack/latest/user_data"] == b"hello"
    assert "openstack/2018-08-27/meta_data.json" in files


async def test_refused_customization_touches_nothing(rig: Any) -> None:
    spec = make_spec(rig.image, flavor_extra_specs={"hw:vif_model": "vmxnet9"})
    with pytest.raises(InvalidCustomization, match="hw:vif_model='vmxnet9'"):
        await rig.driver.spawn(spec)
    assert rig.images.downloads == 0
    assert not rig.driver.instance_dir(spec.uuid).exists()
    assert spec.uuid not in await rig.driver.guest_states()
    assert not rig.taps.devices


async def test_corrupt_image_fails_the_boot_and_leaves_nothing(rig: Any) -> None:
    rig.images.corrupt.add(rig.image)
    spec = make_spec(rig.image)
    with pytest.raises(ImageCorrupt, match="sha512"):
        await rig.driver.spawn(spec)
    assert not rig.driver.instance_dir(spec.uuid).exists()
    assert spec.uuid not in await rig.driver.guest_states()
    assert not rig.taps.devices
    assert rig.image not in rig.cache.cached() and not (rig.cache.root / rig.image).exists()
    rig.images.corrupt.clear()
    await rig.driver.spawn(spec)  # the next try downloads a good copy
    assert await rig.driver.power_state(spec.uuid) == PowerState.RUNNING


async def test_disk_smaller_than_image_is_refused(rig: Any, tmp_path: Path) -> None:
    big = rig.images.add(qcow2_bytes(tmp_path, "2G"), "qcow2")
    with pytest.raises(DriverError, match="smaller than image"):
        await rig.driver.spawn(make_spec(big))


# -- the image cache ------------------------------------------------------------------------------

async def test_concurrent_boots_share_one_download(tmp_path: Path, tiny_qcow2: bytes) -> None:
    images = MemoryImages()
    images.delay_s = 0.2
    image = images.add(tiny_qcow2, "qcow2")
    cache = ImageCache(tmp_path, images)
    got = await asyncio.gather(*(cache.get(image) for _ in range(8)))
    assert images.downloads == 1 and len({g.path for g in got}) == 1
    await cache.get(image)
    assert images.downloads == 1  # cached and verified: no second download


@pytest.mark.parametrize(("problem", "message"), [
    ("truncated", "truncated"),
    ("format", "claims disk_format qcow2 but its data is raw"),
    ("backing", "backing file"),
    ("raw-as-raw-is-fine", ""),
])
async def test_bad_images_are_refused(tmp_path: Path, tiny_qcow2: bytes, problem: str, message: str) -> None:
    images = MemoryImages()
    if problem == "truncated":
        image = images.add(tiny_qcow2, "qcow2")
        images.truncate.add(image)
    elif problem == "format":
        image = images.add(b"\0" * 65536, "qcow2")
    elif problem == "backing":
        (tmp_path / "secret").write_bytes(b"\0" * 65536)
        image = images.add(qcow2_bytes(tmp_path, "1M", backing=tmp_path / "secret"), "qcow2")
    else:
        image = images.add(b"\0" * 65536, "raw")
    cache = ImageCache(tmp_path / "cache", images)
    if not message:
        assert (await cache.get(image)).disk_format == "raw"
        return
    with pytest.raises(ImageCorrupt, match=message):
        await cache.get(image)
    assert list((tmp_path / "cache").iterdir()) == []


async def test_damaged_qcow2_with_a_valid_checksum_is_refused(tmp_path: Path, tiny_qcow2: bytes) -> None:
    data = bytearray(tiny_qcow2)
    data[4:8] = b"\0\0\0\x63"  # qcow2 version 99: the checksum is right, the image is not
    images = MemoryImages()
    image = images.add(bytes(data), "qcow2")
    with pytest.raises(ImageCorrupt):
        await ImageCache(tmp_path, images).get(image)


async def test_eviction_by_age_and_use(tmp_path: Path, tiny_qcow2: bytes) -> None:
    images = MemoryImages()
    old, used, fresh = (images.add(bytes([n]) * 4096, "raw") for n in range(3))
    now = [1000.0]
    cache = ImageCache(tmp_path, images, max_age_s=100, clock=lambda: now[0])
    await cache.get(old)
    await cache.get(used)
    now[0] = 1150.0
    await cache.get(fresh)
    assert cache.evict(in_use={used}) == [old]
    assert set(cache.cached()) == {used, fresh}
    assert not (tmp_path / old).exists()
    # short of free space: every unused base goes, oldest first
    cache.min_free_bytes = 1 << 62
    assert cache.evict(in_use={used}) == [fresh]
    assert set(cache.cached()) == {used}


# -- reconcile and power-state sync ---------------------------------------------------------------

class StandInConductor:
    """Answers ListHostInstances from a dict and records the power-state syncs it receives."""

    def __init__(self) -> None:
        self.instances: list[HostInstance] = []
        self.syncs: list[PowerStateSync] = []

    async def handle(self, msg: Message) -> Message | None:
        if isinstance(msg, ListHostInstances):
            return HostInstances(instances=self.instances)
        if isinstance(msg, PowerStateSync):
            self.syncs.append(msg)
        return None


async def test_reconcile_after_a_host_reboot(rig: Any) -> None:
    bus = LocalTransport()
    await bus.start()
    conductor = StandInConductor()
    bus.serve(Target("conductor"), conductor.handle)
    d: LibvirtDriver = rig.driver
    running, stopped, stray = make_spec(rig.image), make_spec(rig.image), make_spec(rig.image)
    for s in (running, stopped, stray):
        await d.spawn(s)
    await d.power_off(stopped.uuid)
    conductor.instances = [
        HostInstance(uuid=running.uuid, vm_state="active", power_state=1, ports=running.ports),
        HostInstance(uuid=stopped.uuid, vm_state="stopped", power_state=4, ports=stopped.ports),
    ]
    # the host "reboots": every guest is off and every tap is gone
    await d.power_off(running.uuid)
    await d.power_off(stray.uuid)
    rig.taps.devices.clear()
    rec = HostReconciler("hv-test", d, bus, power_sync_s=3600, reconcile_s=3600)
    await rec.wait_ready()
    first = await rec.start()
    try:
        assert first.started == [running.uuid]
        assert first.unknown == [stray.uuid] and first.removed == []
        assert rig.taps.exists(tap_name(running.ports[0].id)) and rig.taps.exists(tap_name(stopped.ports[0].id))
        assert await d.power_state(running.uuid) == PowerState.RUNNING
        assert await d.power_state(stopped.uuid) == PowerState.SHUTDOWN
        created = rig.taps.created
        second = await rec.reconcile()
        assert not second.changed and second.started == [] and rig.taps.created == created
        await asyncio.sleep(0)
        full = conductor.syncs[-1]
        assert full.full and full.unknown == [stray.uuid]
        assert {g.instance_uuid for g in full.guests} == {running.uuid, stopped.uuid, stray.uuid}
        # the guest shuts itself down: the next sync reports it, with no fault message
        await d.shutdown(running.uuid, 5)
        changed = await rec.sync_power()
        assert [(g.instance_uuid, g.reason, g.message) for g in changed] == [(running.uuid, "shutdown", "")]
        assert await rec.sync_power() == []
        rec.remove_unknown = True
        third = await rec.reconcile()
        assert third.removed == [stray.uuid] and stray.uuid not in await d.guest_states()
    finally:
        await rec.stop()
        await bus.close()


async def test_waiting_for_a_hypervisor_that_comes_up_late() -> None:
    tries = []

    async def check() -> None:
        tries.append(1)
        if len(tries) < 3:
            raise HypervisorUnavailable("libvirt is not up yet")

    await wait_for("libvirt", check, timeout_s=5, first_delay_s=0.01)
    assert len(tries) == 3
    with pytest.raises(HypervisorUnavailable, match="was not ready after"):
        await wait_for("libvirt", _never, timeout_s=0.05, first_delay_s=0.02)


async def _never() -> None:
    raise HypervisorUnavailable("down")


async def test_driver_waits_for_a_missing_libvirt(tmp_path: Path) -> None:
    config = LibvirtConfig(uri=f"qemu:///system?socket={tmp_path}/no-such-socket", instances_path=tmp_path / "i")
    driver = LibvirtDriver("hv-x", config, ImageCache(tmp_path / "c", MemoryImages()), FakeTaps())
    with pytest.raises(HypervisorUnavailable, match="does not answer"):
        await driver.wait_ready()


async def test_net_node_hook_delegates_to_the_network_agent() -> None:
    from canopy.agent.reconcile import NetNodeHook

    calls: list[str] = []

    class Node:
        class applier:  # noqa: N801 - a stand-in for the fake applier (no ovs-vsctl)
            pass

        async def plug(self) -> None:
            calls.append("plug")

        async def reconcile(self) -> None:
            calls.append("reconcile")

    hook = NetNodeHook(Node())
    await hook.wait_ready()
    await hook.plug("uuid", [], ["tap1"])
    await hook.reapply()
    assert calls == ["plug", "reconcile"]
