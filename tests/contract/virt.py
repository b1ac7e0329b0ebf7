"""The VirtDriver contract: every hypervisor driver must pass these same tests, unchanged.

A test module subclasses `VirtDriverContract` and provides a `virt` fixture: a `VirtHarness` with the
driver under test and a way to make a new guest's spec for it. tests/unit/test_virt_contract.py runs the
suite over the fake driver and libvirt's in-memory `test:///default`; tests/integration/
test_virt_contract_real.py over a real tiny guest under QEMU (a few cases: `cases` names them). Also
here: the in-memory image source and the spec builder the libvirt tests share.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from canopy.agent.virt.base import (
    DriverError,
    InstanceNotFound,
    InterfaceHotplug,
    Mobility,
    PowerState,
    VirtDriver,
)
from canopy.agent.virt.vif import tap_name
from canopy.rpc.calls import InstanceSpec, PortSpec


@dataclass
class VirtHarness:
    """One driver under the contract: how to make a guest's spec for it, and how long its guests take."""

    name: str
    driver: VirtDriver
    new_spec: Callable[[], InstanceSpec]
    mobility: Mobility | None = None  # None: the driver cannot snapshot (the snapshot case is skipped)
    shutdown_s: float = 5.0  # a clean shutdown's bound: a real guest must boot far enough to hear ACPI
    # the taps of a guest's NICs as the hypervisor holds them (None: the hot-plug case is skipped)
    nic_taps: Callable[[str], Awaitable[list[str]]] | None = None
    spawned: list[str] = field(default_factory=list)

    async def spawn(self) -> InstanceSpec:
        """A new running guest (destroyed by `cleanup`)."""
        spec = self.new_spec()
        self.spawned.append(spec.uuid)
        await self.driver.spawn(spec)
        return spec

    async def cleanup(self) -> None:
        """Destroy the guests this test made."""
        for uuid in self.spawned:
            await self.driver.destroy(uuid)
        self.spawned.clear()


class VirtDriverContract:
    """The behaviour every VirtDriver shares. Subclasses provide the `virt` fixture; `cases`, when set,
    names the only cases a slow driver runs."""

    cases: ClassVar[frozenset[str] | None] = None

    @pytest.fixture(autouse=True)
    def _only_listed_cases(self, request: pytest.FixtureRequest) -> None:
        if self.cases is not None and request.function.__name__ not in self.cases:
            pytest.skip(f"not among the cases this driver runs ({', '.join(sorted(self.cases))})")

    async def test_host_info_describes_the_host(self, virt: VirtHarness) -> None:
        info = virt.driver.host_info()
        assert info.hypervisor_type and info.hypervisor_version >= 0
        assert info.vcpus > 0 and info.memory_mb > 0 and info.local_gb > 0
        await virt.driver.wait_ready()  # ready again: a round trip, not an error

    async def test_spawn_runs_the_guest(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING
        assert (await virt.driver.list_instances())[spec.uuid] == PowerState.RUNNING
        assert (await virt.driver.guest_states())[spec.uuid].power == PowerState.RUNNING

    async def test_spawning_the_same_guest_twice_is_refused(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        with pytest.raises(DriverError, match="already exists"):
            await virt.driver.spawn(spec)
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING  # the first one is untouched

    async def test_power_off_and_on(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        await virt.driver.power_off(spec.uuid)
        await virt.driver.power_off(spec.uuid)  # already off: nothing to do
        status = (await virt.driver.guest_states())[spec.uuid]
        assert (status.power, status.reason) == (PowerState.SHUTDOWN, "destroyed")
        await virt.driver.power_on(spec.uuid)
        await virt.driver.power_on(spec.uuid)  # already on: nothing to do
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING

    async def test_clean_shutdown(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        assert await virt.driver.shutdown(spec.uuid, virt.shutdown_s)
        status = (await virt.driver.guest_states())[spec.uuid]
        assert (status.power, status.reason) == (PowerState.SHUTDOWN, "shutdown")

    async def test_hard_reboot_keeps_it_running(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        await virt.driver.reboot(spec.uuid, hard=True)
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING
        await virt.driver.power_off(spec.uuid)
        await virt.driver.reboot(spec.uuid, hard=True)  # a stopped guest is started
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING

    async def test_pause_and_suspend(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        await virt.driver.pause(spec.uuid)
        assert await virt.driver.power_state(spec.uuid) == PowerState.PAUSED
        await virt.driver.unpause(spec.uuid)
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING
        await virt.driver.suspend(spec.uuid)
        status = (await virt.driver.guest_states())[spec.uuid]
        assert (status.power, status.reason) == (PowerState.SUSPENDED, "saved")
        await virt.driver.resume(spec.uuid)
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING

    async def test_destroy_is_idempotent(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        await virt.driver.destroy(spec.uuid)
        await virt.driver.destroy(spec.uuid)  # destroying what is gone is not an error
        assert spec.uuid not in await virt.driver.list_instances()
        assert spec.uuid not in await virt.driver.guest_states()
        with pytest.raises(InstanceNotFound):
            await virt.driver.power_state(spec.uuid)

    async def test_an_unknown_guest_is_not_found(self, virt: VirtHarness) -> None:
        uuid = str(uuidlib.uuid4())
        for call in (virt.driver.power_state(uuid), virt.driver.power_on(uuid), virt.driver.power_off(uuid),
                     virt.driver.reboot(uuid, hard=True), virt.driver.shutdown(uuid, 1.0),
                     virt.driver.console_output(uuid, None)):
            with pytest.raises(InstanceNotFound):
                await call

    async def test_plug_vifs_names_the_ports_taps_in_order(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        ports = [spec.ports[0], spec.ports[0].model_copy(update={"id": str(uuidlib.uuid4())})]
        names = await virt.driver.plug_vifs(spec.uuid, ports)
        assert names == [tap_name(p.id) for p in ports]
        assert await virt.driver.plug_vifs(spec.uuid, ports) == names  # idempotent

    async def test_interfaces_attach_and_detach_idempotently(self, virt: VirtHarness) -> None:
        if virt.nic_taps is None or not isinstance(virt.driver, InterfaceHotplug):
            pytest.skip(f"{virt.name} cannot hot-plug interfaces")
        spec = await virt.spawn()
        extra = spec.ports[0].model_copy(update={"id": str(uuidlib.uuid4()), "mac_address": "fa:16:3e:00:00:99"})
        await virt.driver.attach_interface(spec.uuid, extra)
        await virt.driver.attach_interface(spec.uuid, extra)  # attached already: nothing to do
        assert await virt.nic_taps(spec.uuid) == [tap_name(spec.ports[0].id), tap_name(extra.id)]
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING
        # A running guest releases a NIC only once it answers the unplug request (a real one must have
        # booted that far): the detach is checked on the stopped guest, where it is the hypervisor's alone.
        await virt.driver.power_off(spec.uuid)
        await virt.driver.detach_interface(spec.uuid, extra.id)
        await virt.driver.detach_interface(spec.uuid, extra.id)  # gone already: nothing to do
        assert await virt.nic_taps(spec.uuid) == [tap_name(spec.ports[0].id)]
        await virt.driver.power_on(spec.uuid)
        assert await virt.nic_taps(spec.uuid) == [tap_name(spec.ports[0].id)]

    async def test_console_output_is_the_tail(self, virt: VirtHarness) -> None:
        spec = await virt.spawn()
        everything = await virt.driver.console_output(spec.uuid, None)
        assert isinstance(everything, str)
        assert await virt.driver.console_output(spec.uuid, 0) == ""
        last = await virt.driver.console_output(spec.uuid, 1)
        assert last.count("\n") <= 1 and everything.endswith(last)

    async def test_snapshot_writes_a_standalone_image(self, virt: VirtHarness, tmp_path: Path) -> None:
        if virt.mobility is None:
            pytest.skip(f"{virt.name} cannot snapshot")
        spec = await virt.spawn()
        dest = tmp_path / "snap"
        disk_format = await virt.mobility.snapshot(spec.uuid, dest)
        assert disk_format in ("raw", "qcow2") and dest.stat().st_size > 0
        assert await virt.driver.power_state(spec.uuid) == PowerState.RUNNING  # paused while read, not after


# -- what the libvirt tests share ----------------------------------------------------------------

class MemoryImages:
    """An image source holding images in memory, counting downloads; `corrupt` flips a byte on the wire."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.downloads = 0
        self.corrupt: set[str] = set()
        self.truncate: set[str] = set()
        self.delay_s = 0.0

    def add(self, data: bytes, disk_format: str, **props: str) -> str:
        image_id = str(uuidlib.uuid4())
        meta = {"id": image_id, "status": "active", "disk_format": disk_format, "container_format": "bare",
                "size": len(data), "checksum": hashlib.md5(data, usedforsecurity=False).hexdigest(),
                "os_hash_algo": "sha512", "os_hash_value": hashlib.sha512(data).hexdigest(), **props}
        self.images[image_id] = (meta, data)
        return image_id

    async def get_meta(self, image_id: str) -> dict[str, Any]:
        return dict(self.images[image_id][0])

    async def download(self, image_id: str) -> AsyncIterator[bytes]:
        self.downloads += 1
        data = self.images[image_id][1]
        if image_id in self.corrupt:
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        if image_id in self.truncate:
            data = data[: len(data) // 2]
        await asyncio.sleep(self.delay_s)
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]


def qcow2_bytes(tmp: Path, size: str = "16M", backing: Path | None = None) -> bytes:
    """A small qcow2 image's bytes (qemu-img create)."""
    path = tmp / f"img-{uuidlib.uuid4().hex[:6]}.qcow2"
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        args += ["-b", str(backing), "-F", "raw"]
    subprocess.run([*args, str(path), size], check=True)
    return path.read_bytes()


def make_spec(image_id: str, **kw: Any) -> InstanceSpec:
    """A guest's spec with one port (IPv4 and IPv6), a key and user data; `kw` overrides fields."""
    uuid = str(uuidlib.uuid4())
    port = PortSpec(id=str(uuidlib.uuid4()), mac_address="fa:16:3e:12:34:56", network_id="net-1",
                    fixed_ips=[{"subnet_id": "s1", "ip_address": "203.0.113.10"},
                               {"subnet_id": "s2", "ip_address": "2001:db8::10"}],
                    subnets=[{"id": "s1", "cidr": "203.0.113.0/24", "gateway_ip": "203.0.113.1",
                              "dns_nameservers": ["192.0.2.53"], "host_routes": []},
                             {"id": "s2", "cidr": "2001:db8::/64", "gateway_ip": "2001:db8::1",
                              "dns_nameservers": [], "host_routes": []}])
    base: dict[str, Any] = dict(uuid=uuid, name="web 1", hostname="web-1", project_id="p1", vcpus=1,
                                memory_mb=128, disk_gb=1, image_id=image_id, ports=[port],
                                key_data="ssh-ed25519 AAAAC3Nza test@canopy", user_data="aGVsbG8=")
    base.update(kw)
    return InstanceSpec(**base)
