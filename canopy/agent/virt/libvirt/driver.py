"""The libvirt/QEMU driver: real guests behind the VirtDriver protocols.

    driver = LibvirtDriver("hv-1", settings.libvirt, cache=ImageCache(...), taps=TapDevices(),
                           disks=backend_for(...))   # default: the backend [libvirt] disk_backend names
    await driver.wait_ready()          # connects, reads the host, picks the accelerator (KVM or TCG)
    await driver.spawn(spec)
    await driver.mobility.migrate_out(uuid, 60)   # resize, migrate, snapshot, rescue: mobility.py

Each guest has a folder `<instances_path>/<uuid>/` (builder.py); its root disk comes from a DiskBackend:
`disk` in that folder (a qcow2 overlay over the cached base), or a logical volume `/dev/<vg>/canopy-<uuid>`
(LVM). The domain is named `canopy-<uuid>` and carries its uuid as libvirt's. libvirt calls block, so each
runs in a worker thread (connection.py).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from canopy.agent.disk.backend import DiskBackend, backend_for
from canopy.agent.disk.cache import ImageCache
from canopy.agent.virt import customize
from canopy.agent.virt.base import DriverError, GuestStatus, HostInfo, InstanceNotFound, PowerState
from canopy.agent.virt.domain_model import InterfaceSpec, interface_xml, read_serial_log, read_taps
from canopy.agent.virt.libvirt.builder import PREFIX, GuestBuilder, GuestTaps
from canopy.agent.virt.libvirt.connection import Hypervisor
from canopy.agent.virt.libvirt.host import HostFacts, guest_status, tail_lines
from canopy.agent.virt.libvirt.mobility import LibvirtMobility
from canopy.agent.virt.vif import FakeTaps, TapDevices, tap_name
from canopy.config import LibvirtConfig
from canopy.optional import require_libvirt
from canopy.rpc.calls import InstanceSpec, PortSpec

libvirt = require_libvirt()  # an optional part: a one-line error naming the extra when missing
DETACH_TIMEOUT_S = 30.0  # how long a running guest may take to release a NIC asked to go
DETACH_POLL_S = 0.1

log = logging.getLogger("canopy.agent.libvirt")


class LibvirtDriver:
    """Guests on one host's libvirt (KVM when it boots guests here, else TCG)."""

    def __init__(self, host: str, config: LibvirtConfig, cache: ImageCache,
                 taps: TapDevices | FakeTaps | None = None, disks: DiskBackend | None = None) -> None:
        self.host = host
        self.config = config
        self.cache = cache
        self.taps = taps if taps is not None else TapDevices()
        self.root = config.instances_path
        self.disks: DiskBackend = disks or backend_for(config.disk_backend, config.instances_path,
                                                       config.lvm_volume_group, config.lvm_thin_pool)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # QEMU runs as its own user and must reach the guests' files
        self.host_custom = customize.HostCustomization(
            dict(config.customization),
            tuple(customize.parse_patch(p, i) for i, p in enumerate(config.patches)))
        self.hv = Hypervisor(host, config)
        self.guest_taps = GuestTaps(config.vif_type, self.taps)
        self.builder = GuestBuilder(self.hv, config, cache, self.disks, self.host_custom)
        self.mobility = LibvirtMobility(self.hv, self.builder, self.guest_taps, self.disks, guests=self)

    @property
    def accel(self) -> str:
        """kvm, tcg, or test (libvirt's in-memory driver); known after wait_ready."""
        return self.hv.accel

    @property
    def facts(self) -> HostFacts | None:
        """What the host offers; None before wait_ready."""
        return self.hv.facts

    @property
    def last_disk_ms(self) -> float:
        """How long the last root disk took to make (the benchmark reports it)."""
        return self.builder.last_disk_ms

    def instance_dir(self, uuid: str) -> Path:
        """The guest's folder."""
        return self.builder.instance_dir(uuid)

    # -- the host --------------------------------------------------------------------------------

    async def wait_ready(self) -> None:
        """Connect, read the host, and (once) decide the accelerator; HypervisorUnavailable if libvirt is down."""
        await self.hv.wait_ready()

    async def close(self) -> None:
        """Close the image client and the libvirt connection."""
        closer = getattr(self.cache.source, "close", None)
        if closer is not None:
            await closer()
        await self.hv.close()

    def host_info(self) -> HostInfo:
        """Capacity and hypervisor as read on connecting; HypervisorUnavailable before wait_ready."""
        f = self.hv.known_facts()
        return HostInfo(f.hypervisor_type, f.hypervisor_version, f.vcpus, f.memory_mb, f.local_gb,
                        accelerator=self.accel, cpu_info={**f.cpu_info, "accelerator": self.accel})

    async def guest_states(self) -> dict[str, GuestStatus]:
        """This agent's guests (their folders are here) with their power states."""
        domains = await self.hv.call(self.hv.connection().listAllDomains, 0)
        out = {}
        for dom in domains:
            # ours only: agents sharing one libvirt (tests, one machine) each see just their own folders
            if dom.name().startswith(PREFIX) and (self.root / dom.UUIDString()).is_dir():
                try:
                    out[dom.UUIDString()] = await self._status(dom)
                except InstanceNotFound:
                    continue  # undefined while we looked
        return out

    async def list_instances(self) -> dict[str, PowerState]:
        """This agent's guests and their power states."""
        return {uuid: s.power for uuid, s in (await self.guest_states()).items()}

    async def evict_images(self) -> list[str]:
        """Drop cached bases no guest here uses, by age and free space."""
        return await asyncio.to_thread(self.cache.evict, self.images_in_use())

    def images_in_use(self) -> set[str]:
        """The images the guests on this host were made from (their bases must stay in the cache)."""
        return self.builder.images_in_use()

    # -- lifecycle -------------------------------------------------------------------------------

    async def spawn(self, spec: InstanceSpec) -> None:
        """Validate the customization, make the disks and config drive, plug the taps, define and start."""
        await self.wait_ready()
        props = await self.builder.image_props(spec.image_id)
        custom = self.builder.customization(props, spec)
        f = self.hv.known_facts()
        if self.accel != "test":
            customize.check_for_host(custom, self.accel, set(f.cpu_models) or None, set(f.machines) or None)
        if await self.hv.exists(spec.uuid):
            raise DriverError(f"guest {spec.uuid} already exists on {self.host}")
        folder = self.builder.make_folder(spec.uuid)
        try:
            domain = await self.builder.prepare(spec, folder, props)
            xml = self.builder.xml(domain, custom)
            await self.plug_vifs(spec.uuid, spec.ports)
            dom = await self.hv.define(xml)
            await self.hv.call(dom.create)
        except BaseException:
            await self._cleanup(spec.uuid, spec.ports)
            raise

    async def _cleanup(self, uuid: str, ports: list[PortSpec]) -> None:
        """Undo a spawn that failed halfway: nothing half-written stays behind."""
        try:
            await self.destroy(uuid)
        except DriverError as exc:
            log.warning("cleanup of %s failed: %s", uuid, exc)
        await self.guest_taps.remove([tap_name(p.id) for p in ports])

    async def destroy(self, uuid: str) -> None:
        """Power off, undefine, remove the taps, the root disk and the guest's folder; a missing guest is not
        an error."""
        taps: list[str] = []
        try:
            dom = await self.hv.dom(uuid)
            taps = [tap for tap, _ in read_taps(await self.hv.xml_of(dom))]
            if await self.hv.call(dom.isActive):
                await self.hv.call(dom.destroy)
            await self.hv.call(dom.undefineFlags, libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except InstanceNotFound:
            pass
        await self.guest_taps.remove(taps)
        await self.disks.remove(uuid)
        await asyncio.to_thread(shutil.rmtree, self.instance_dir(uuid), True)

    async def plug_vifs(self, uuid: str, ports: list[PortSpec]) -> list[str]:
        """Make each port's tap (ethernet mode) before anything plugs it or the guest opens it."""
        return await self.guest_taps.plug(ports)

    def _nic(self, port: PortSpec) -> InterfaceSpec:
        return InterfaceSpec(mac=port.mac_address, tap=tap_name(port.id), kind=self.config.vif_type,
                             bridge=self.config.bridge, port_id=port.id, mtu=port.mtu)

    async def _nic_places(self, dom: Any, tap: str) -> tuple[str | None, int]:
        """The MAC of the NIC with this tap, and where it is: the definition and/or the running guest."""
        flags, mac = 0, None
        for xml_flags, place in ((libvirt.VIR_DOMAIN_XML_INACTIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG),
                                 (0, libvirt.VIR_DOMAIN_AFFECT_LIVE)):
            if place == libvirt.VIR_DOMAIN_AFFECT_LIVE and not await self.hv.call(dom.isActive):
                continue
            found = [m for t, m in read_taps(await self.hv.xml_of(dom, xml_flags)) if t == tap]
            if found:
                flags, mac = flags | place, found[0]
        return mac, flags

    async def attach_interface(self, uuid: str, port: PortSpec) -> None:
        """Make the port's tap, then add its NIC where it is missing: the definition, and the running guest."""
        dom = await self.hv.dom(uuid)
        _, present = await self._nic_places(dom, tap_name(port.id))
        wanted = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE
                                                     if await self.hv.call(dom.isActive) else 0)
        missing = wanted & ~present
        await self.guest_taps.plug([port])
        if missing:
            await self.hv.call(dom.attachDeviceFlags, interface_xml(self._nic(port)), int(missing))

    async def detach_interface(self, uuid: str, port_id: str) -> None:
        """Remove the port's NIC from the definition and the running guest, then its tap (idempotent)."""
        dom = await self.hv.dom(uuid)
        tap = tap_name(port_id)
        mac, present = await self._nic_places(dom, tap)
        if mac is not None and present:
            port = PortSpec(id=port_id, mac_address=mac, network_id="")
            await self.hv.call(dom.detachDeviceFlags, interface_xml(self._nic(port)), int(present))
            if present & libvirt.VIR_DOMAIN_AFFECT_LIVE:
                await self._wait_released(dom, tap)
        await self.guest_taps.remove([tap])

    async def _wait_released(self, dom: Any, tap: str) -> None:
        """A running guest lets go of a NIC when it answers the unplug request (ACPI), which QEMU reports
        after libvirt's call returned: wait for it, bounded, as Nova does."""
        deadline = time.monotonic() + DETACH_TIMEOUT_S
        while (await self._nic_places(dom, tap))[1] & libvirt.VIR_DOMAIN_AFFECT_LIVE:
            if time.monotonic() >= deadline:
                raise DriverError(f"the guest did not release the NIC on {tap} within {DETACH_TIMEOUT_S:g}s")
            await asyncio.sleep(DETACH_POLL_S)

    async def _ensure_taps(self, dom: Any) -> None:
        await self.guest_taps.ensure_for(await self.hv.xml_of(dom))

    # -- power -----------------------------------------------------------------------------------

    async def power_on(self, uuid: str) -> None:
        """Start the guest (its taps first); a running guest is left as it is."""
        dom = await self.hv.dom(uuid)
        if not await self.hv.call(dom.isActive):
            await self._ensure_taps(dom)
            await self.hv.call(dom.create)

    async def shutdown(self, uuid: str, timeout_s: float) -> bool:
        """Press the ACPI power button (again every shutdown_retry_s: a booting guest may miss it)."""
        dom = await self.hv.dom(uuid)
        deadline = time.monotonic() + timeout_s
        next_press = 0.0
        while await self.hv.call(dom.isActive):
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= next_press:
                try:
                    # the test driver knows no shutdown methods; QEMU must use ACPI (not the guest agent)
                    flags = 0 if self.accel == "test" else libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
                    await self.hv.call(dom.shutdownFlags, flags)
                except DriverError:
                    if not await self.hv.call(dom.isActive):  # it went off between the check and the press
                        break
                    raise
                next_press = now + self.config.shutdown_retry_s
            await asyncio.sleep(min(0.2, max(0.0, deadline - now)))
        return True

    async def power_off(self, uuid: str) -> None:
        """Pull the plug (a stopped guest stays stopped)."""
        dom = await self.hv.dom(uuid)
        if await self.hv.call(dom.isActive):
            await self.hv.call(dom.destroy)

    async def reboot(self, uuid: str, hard: bool) -> None:
        """HARD: power off and start again. SOFT: the guest's own shutdown, then start (the caller bounds it)."""
        dom = await self.hv.dom(uuid)
        if hard:
            await self.power_off(uuid)
        elif not await self.shutdown(uuid, float("inf")):
            raise DriverError(f"guest {uuid} did not shut down for a soft reboot")
        await self._ensure_taps(dom)
        if await self.hv.call(dom.hasManagedSaveImage, 0):
            await self.hv.call(dom.managedSaveRemove, 0)  # a hard reboot boots afresh, not from a saved state
        await self.hv.call(dom.create)

    async def power_state(self, uuid: str) -> PowerState:
        """The guest's power state."""
        return (await self._status(await self.hv.dom(uuid))).power

    async def _status(self, dom: Any) -> GuestStatus:
        state, reason = await self.hv.call(dom.state, 0)
        saved = state == libvirt.VIR_DOMAIN_SHUTOFF and bool(await self.hv.call(dom.hasManagedSaveImage, 0))
        return guest_status(state, reason, saved)

    async def pause(self, uuid: str) -> None:
        """Stop the guest's CPUs."""
        await self.hv.call((await self.hv.dom(uuid)).suspend)

    async def unpause(self, uuid: str) -> None:
        """Let a paused guest's CPUs run again."""
        await self.hv.call((await self.hv.dom(uuid)).resume)

    async def suspend(self, uuid: str) -> None:
        """Save the guest's memory to disk (libvirt's managed save) and stop it."""
        await self.hv.call((await self.hv.dom(uuid)).managedSave, 0)

    async def resume(self, uuid: str) -> None:
        """Start a suspended guest from its saved memory."""
        dom = await self.hv.dom(uuid)
        if not await self.hv.call(dom.hasManagedSaveImage, 0):
            raise DriverError(f"guest {uuid} has no saved state to resume from")
        await self._ensure_taps(dom)
        await self.hv.call(dom.create)

    # -- console ---------------------------------------------------------------------------------

    async def console_output(self, uuid: str, length: int | None) -> str:
        """The tail of the serial console log (at most console_max_bytes are read)."""
        dom = await self.hv.dom(uuid)
        path = read_serial_log(await self.hv.xml_of(dom))
        if not path or not Path(path).exists():
            return ""
        data = await asyncio.to_thread(_read_tail, Path(path), self.config.console_max_bytes)
        return tail_lines(data, length)


def _read_tail(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - limit))
        return f.read()
