"""The VirtDriver contract (tests/contract/virt.py) over a real tiny guest under QEMU (KVM, else TCG): the
libvirt driver alone, without a cloud around it. A few cases only: each boots a real guest."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from canopy.agent.disk.cache import ImageCache
from canopy.agent.virt.vif import TapDevices
from canopy.config import LibvirtConfig
from tests.contract.virt import MemoryImages, VirtDriverContract, VirtHarness, make_spec
from tests.integration import tinyguest


@pytest.fixture(scope="module")
async def qemu() -> AsyncIterator[tuple[Any, str]]:
    """A libvirt driver on this machine's qemu:///system, and the tiny guest's image held in memory."""
    try:
        guest = tinyguest.build()
        local = tinyguest.ensure_libvirt()
    except tinyguest.GuestUnavailable as exc:
        pytest.skip(f"no real guest on this machine: {exc}")
    from canopy.agent.virt.libvirt.driver import LibvirtDriver

    work = Path(tempfile.mkdtemp(prefix="canopy-contract-", dir="/var/tmp"))  # QEMU's user must reach it
    work.chmod(0o755)
    images = MemoryImages()
    kernel = images.add(guest.kernel.read_bytes(), "aki")
    ramdisk = images.add(guest.initrd.read_bytes(), "ari")
    image = images.add(guest.disk.read_bytes(), "qcow2", kernel_id=kernel, ramdisk_id=ramdisk,
                       os_command_line=tinyguest.CMDLINE)
    config = LibvirtConfig(instances_path=work / "instances", accel_probe_kernel=guest.kernel,
                           accel_probe_initrd=guest.initrd, accel_probe_cmdline=tinyguest.CMDLINE + " canopy.probe",
                           accel_probe_marker=tinyguest.PROBE_MARKER, accel_probe_timeout_s=10.0,
                           shutdown_retry_s=2.0)
    driver = LibvirtDriver("hv-contract-real", config, ImageCache(work / "cache", images), TapDevices())
    await driver.wait_ready()
    try:
        yield driver, image
    finally:
        for uuid in list(await driver.guest_states()):
            await driver.destroy(uuid)
        await driver.close()
        local.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
async def virt(qemu: tuple[Any, str]) -> AsyncIterator[VirtHarness]:
    driver, image = qemu
    async def nic_taps(uuid: str) -> list[str]:
        from canopy.agent.virt.domain_model import read_taps

        return [tap for tap, _ in read_taps(await driver.hv.xml_of(await driver.hv.dom(uuid)))]

    harness = VirtHarness("libvirt qemu", driver, lambda: make_spec(image, memory_mb=256),
                          mobility=driver.mobility, shutdown_s=90.0, nic_taps=nic_taps)
    yield harness
    await harness.cleanup()


class TestRealGuest(VirtDriverContract):
    """The cases that say most about a real hypervisor, each booting one guest."""

    cases = frozenset({"test_host_info_describes_the_host", "test_spawn_runs_the_guest", "test_power_off_and_on",
                       "test_clean_shutdown", "test_destroy_is_idempotent", "test_an_unknown_guest_is_not_found",
                       "test_interfaces_attach_and_detach_idempotently"})
