"""The VirtDriver contract (tests/contract/virt.py) over the fake driver and libvirt's in-memory
`test:///default` (with real qcow2 overlays and config drives); the real QEMU guest runs it in
tests/integration/test_virt_contract_real.py."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from canopy.agent.disk.cache import ImageCache
from canopy.agent.virt.fake import FakeDriver
from canopy.agent.virt.vif import FakeTaps, tap_name
from canopy.config import LibvirtConfig
from tests.contract.virt import MemoryImages, VirtDriverContract, VirtHarness, make_spec, qcow2_bytes


async def _fake(tmp_path: Path) -> VirtHarness:
    driver = FakeDriver("hv-contract")

    async def nic_taps(uuid: str) -> list[str]:
        return [tap_name(p.id) for p in driver.guests[uuid].spec.ports]

    return VirtHarness("fake", driver, lambda: make_spec("img-1"), mobility=driver.mobility, nic_taps=nic_taps)


async def _libvirt_test(tmp_path: Path) -> VirtHarness:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (scripts/system-packages.txt: qemu-utils)")
    from canopy.agent.virt.libvirt.driver import LibvirtDriver

    images = MemoryImages()
    image = images.add(qcow2_bytes(tmp_path), "qcow2")
    config = LibvirtConfig(uri="test:///default", instances_path=tmp_path / "instances")
    driver = LibvirtDriver("hv-contract", config, ImageCache(tmp_path / "cache", images), FakeTaps())
    await driver.wait_ready()
    # no nic_taps: libvirt's test driver has no device hot-plug (the real QEMU guest runs that case)
    return VirtHarness("libvirt test:///default", driver, lambda: make_spec(image), mobility=driver.mobility)


DRIVERS = {"fake": _fake, "libvirt-test": _libvirt_test}


@pytest.fixture(params=sorted(DRIVERS))
async def virt(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VirtHarness]:
    harness = await DRIVERS[request.param](tmp_path)
    yield harness
    await harness.cleanup()
    await harness.driver.close()


class TestVirtDriver(VirtDriverContract):
    """Every case, on both drivers."""
