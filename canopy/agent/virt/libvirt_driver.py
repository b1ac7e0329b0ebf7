"""The libvirt/QEMU driver: real guests behind the VirtDriver protocol.

    driver = LibvirtDriver("hv-1", settings.libvirt, cache=ImageCache(...), taps=TapDevices(),
                           disks=backend_for(...))   # default: the backend [libvirt] disk_backend names
    await driver.wait_ready()          # connects, reads the host, picks the accelerator (KVM or TCG)
    await driver.spawn(spec)

Each guest has a folder `<instances_path>/<uuid>/` with `disk.config` (the config drive), `console.log`
(its serial console) and `instance.json` (which images it uses, for cache eviction). Its root disk comes
from a DiskBackend: `disk` in that folder (a qcow2 overlay over the cached base), or a logical volume
`/dev/<vg>/canopy-<uuid>` (LVM). The domain is named `canopy-<uuid>` and carries its uuid as libvirt's.
libvirt calls block, so each runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from canopy.agent import configdrive, inject
from canopy.agent.disk import growfs
from canopy.agent.disk.backend import DiskBackend, backend_for, root_disk_spec
from canopy.agent.disk.cache import CachedImage, ImageCache
from canopy.agent.virt import accel as accelmod
from canopy.agent.virt import customize
from canopy.agent.virt.base import (
    DriverError,
    GuestStatus,
    HostInfo,
    HypervisorUnavailable,
    InstanceNotFound,
    PowerState,
)
from canopy.agent.virt.domain_model import DiskSpec, DomainSpec, InterfaceSpec, read_serial_log, read_taps
from canopy.agent.virt.libvirt_host import HostFacts, guest_status, read_facts, tail_lines
from canopy.agent.virt.libvirt_mobility import LibvirtMobility
from canopy.agent.virt.vif import FakeTaps, TapDevices, tap_name
from canopy.config import LibvirtConfig
from canopy.optional import require_libvirt
from canopy.rpc.calls import InstanceSpec, PortSpec

libvirt = require_libvirt()  # an optional part: a one-line error naming the extra when missing

log = logging.getLogger("canopy.agent.libvirt")
T = TypeVar("T")
PREFIX = "canopy-"
GiB = 1 << 30

# libvirt prints every error to stderr by default; ours are raised as exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class LibvirtDriver(LibvirtMobility):
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
        self.accel = "tcg"
        self.facts: HostFacts | None = None
        self.last_disk_ms = 0.0  # how long the last root disk took to make (the benchmark reports it)
        self._conn: Any = None

    # -- connection ------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking libvirt call in a thread; libvirt errors become DriverErrors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise InstanceNotFound(f"libvirt on {self.host}: {exc}") from exc
            raise DriverError(f"libvirt on {self.host}: {exc}") from exc

    def _connection(self) -> Any:
        if self._conn is None or not self._conn.isAlive():
            try:
                self._conn = libvirt.open(self.config.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorUnavailable(f"libvirt at {self.config.uri} does not answer: {exc}") from exc
        return self._conn

    async def wait_ready(self) -> None:
        """Connect, read the host, and (once) decide the accelerator; HypervisorUnavailable if libvirt is down.
        Each call is a round trip (getLibVersion): the agent's health check calls it every heartbeat."""
        conn = await asyncio.to_thread(self._connection)
        await self._call(conn.getLibVersion)  # a DriverError when the daemon died or hangs up
        if self.facts is None:
            self.facts = await asyncio.to_thread(read_facts, conn, self.root)
            self.accel = await self._detect_accel(self.facts)
            log.info("libvirt %s on %s: %s %s, guests run with %s", self.config.uri, self.host,
                     self.facts.hypervisor_type, self.facts.hypervisor_version, self.accel.upper())

    async def _detect_accel(self, facts: HostFacts) -> str:
        if facts.hypervisor_type.upper() == "TEST":  # libvirt's in-memory driver (fast tests)
            return "test"
        if self.config.accel != "auto":
            return self.config.accel
        kernel = self.config.accel_probe_kernel or accelmod.builtin_probe(self.root / "accel-probe.elf")
        marker = self.config.accel_probe_marker if self.config.accel_probe_kernel else accelmod.MARKER
        probe = accelmod.ProbeSpec(kernel, self.config.accel_probe_initrd, self.config.accel_probe_cmdline,
                                   marker, self.config.accel_probe_timeout_s)
        return await accelmod.detect(self.root, facts.offers_kvm, probe, str(facts.hypervisor_version),
                                     self._boot_transient)

    async def _boot_transient(self, xml: str) -> Callable[[], Awaitable[None]]:
        dom = await self._call(self._connection().createXML, xml, 0)

        async def stop() -> None:
            try:
                await self._call(dom.destroy)
            except DriverError:
                pass

        return stop

    async def close(self) -> None:
        """Close the image client and the libvirt connection."""
        closer = getattr(self.cache.source, "close", None)
        if closer is not None:
            await closer()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

    def host_info(self) -> HostInfo:
        if self.facts is None:
            raise HypervisorUnavailable("the libvirt driver has not connected yet (wait_ready first)")
        f = self.facts
        return HostInfo(f.hypervisor_type, f.hypervisor_version, f.vcpus, f.memory_mb, f.local_gb,
                        accelerator=self.accel, cpu_info={**f.cpu_info, "accelerator": self.accel})

    # -- guests ----------------------------------------------------------------------------------

    def _domain_type(self) -> str:
        return {"kvm": "kvm", "tcg": "qemu", "test": "test"}[self.accel]

    async def _dom(self, uuid: str) -> Any:
        return await self._call(self._connection().lookupByUUIDString, uuid)

    def instance_dir(self, uuid: str) -> Path:
        return self.root / uuid

    async def spawn(self, spec: InstanceSpec) -> None:
        """Validate the customization, make the disks and config drive, plug the taps, define and start."""
        await self.wait_ready()
        meta = await self.cache.source.get_meta(spec.image_id)
        props = {k: v for k, v in meta.items() if isinstance(v, str)}
        custom = customize.resolve(self.host_custom, props, spec.flavor_extra_specs)
        f = self.facts
        assert f is not None
        if self.accel != "test":
            customize.check_for_host(custom, self.accel, set(f.cpu_models) or None, set(f.machines) or None)
        if await self._exists(spec.uuid):
            raise DriverError(f"guest {spec.uuid} already exists on {self.host}")
        folder = self.instance_dir(spec.uuid)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        try:
            domain = await self._prepare(spec, folder, props)
            xml = customize.build_xml(domain, custom, self.accel, self.host_custom.patches)
            await self.plug_vifs(spec.uuid, spec.ports)
            dom = await self._call(self._connection().defineXML, xml)
            await self._call(dom.create)
        except BaseException:
            await self._cleanup(spec.uuid, spec.ports)
            raise

    async def _prepare(self, spec: InstanceSpec, folder: Path, props: dict[str, str], *,
                       disks: DiskBackend | None = None, disk_key: str | None = None,
                       make_disk: bool = True) -> DomainSpec:
        """The disks and config drive on this host, and the domain description that uses them. The root
        disk is `disks.path(disk_key)` (default: this host's backend, the guest's uuid); `make_disk`
        False: it exists already (a migrated disk was written into it)."""
        backend, key = disks or self.disks, disk_key or spec.uuid
        base = await self.cache.get(spec.image_id)
        kernel = await self._optional_image(props.get("kernel_id"))
        ramdisk = await self._optional_image(props.get("ramdisk_id"))
        size = max(spec.disk_gb * GiB, base.virtual_size)
        if spec.disk_gb and spec.disk_gb * GiB < base.virtual_size:
            raise DriverError(f"the flavor's disk ({spec.disk_gb} GB) is smaller than image {spec.image_id} "
                              f"({base.virtual_size} bytes)")
        injected = inject.wanted(self.config.injection, props)  # issue 6: files instead of a config drive
        if injected and backend.kind != "qcow2":
            raise DriverError(f"file injection writes into a qcow2 overlay; disk_backend {backend.kind!r} "
                              f"cannot inject (image {spec.image_id}): use the config drive")
        if make_disk:
            t0 = time.monotonic()
            if injected:
                await inject.inject_into_overlay(base.path, base.disk_format, Path(backend.path(key)), size,
                                                 inject.spec_files(spec))
            else:
                await backend.create(key, base, size)
            if growfs.wanted(props):
                await self.grow_fs(spec, backend, key)
            self.last_disk_ms = (time.monotonic() - t0) * 1000
        disks_xml = [root_disk_spec(backend, key, "vda", spec.uuid[:20])]
        if self.config.config_drive and not injected:
            await asyncio.to_thread(configdrive.write, spec, folder / "disk.config")
            disks_xml.append(DiskSpec(path=str(folder / "disk.config"), target="vdb", format="raw", readonly=True))
        images = [i.image_id for i in (base, kernel, ramdisk) if i is not None]
        (folder / "instance.json").write_text(json.dumps({"images": images, "ports": [p.id for p in spec.ports]}))
        nics = [InterfaceSpec(mac=p.mac_address, tap=tap_name(p.id), kind=self.config.vif_type,
                              bridge=self.config.bridge, port_id=p.id, mtu=p.mtu) for p in spec.ports]
        return DomainSpec(
            name=PREFIX + spec.uuid, uuid=spec.uuid, memory_mib=spec.memory_mb, vcpus=spec.vcpus,
            domain_type=self._domain_type(), kernel=str(kernel.path) if kernel else None,
            initrd=str(ramdisk.path) if ramdisk else None,
            cmdline=props.get("os_command_line") if kernel else None,
            disks=tuple(disks_xml), interfaces=tuple(nics), serial_log=str(folder / "console.log"),
            metadata=(("uuid", spec.uuid), ("name", spec.name), ("hostname", spec.hostname),
                      ("project", spec.project_id), ("image", spec.image_id)),
        )

    async def grow_fs(self, spec: InstanceSpec, disks: DiskBackend | None = None, key: str | None = None) -> None:
        """Grow the guest's filesystem to its root disk (images marked `canopy_grow_fs=host`)."""
        backend, key = disks or self.disks, key or spec.uuid
        if backend.kind == "qcow2":
            base = await self.cache.get(spec.image_id)
            await growfs.grow_overlay(Path(backend.path(key)), base.path, base.disk_format)
        else:
            await growfs.grow_raw(backend.path(key), getattr(backend, "runner", None))

    async def _optional_image(self, image_id: str | None) -> CachedImage | None:
        return await self.cache.get(image_id) if image_id else None

    async def _exists(self, uuid: str) -> bool:
        try:
            await self._dom(uuid)
            return True
        except InstanceNotFound:
            return False

    async def _cleanup(self, uuid: str, ports: list[PortSpec]) -> None:
        """Undo a spawn that failed halfway: nothing half-written stays behind."""
        try:
            await self.destroy(uuid)
        except DriverError as exc:
            log.warning("cleanup of %s failed: %s", uuid, exc)
        if self.config.vif_type == "ethernet":
            for p in ports:
                await self.taps.remove(tap_name(p.id))

    async def destroy(self, uuid: str) -> None:
        """Power off, undefine, remove the taps, the root disk and the guest's folder; a missing guest is not
        an error."""
        taps: list[str] = []
        try:
            dom = await self._dom(uuid)
            taps = [tap for tap, _ in read_taps(await self._call(dom.XMLDesc, 0))]
            if await self._call(dom.isActive):
                await self._call(dom.destroy)
            await self._call(dom.undefineFlags, libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except InstanceNotFound:
            pass
        if self.config.vif_type == "ethernet":
            for tap in taps:
                await self.taps.remove(tap)
        await self.disks.remove(uuid)
        await asyncio.to_thread(shutil.rmtree, self.instance_dir(uuid), True)

    async def plug_vifs(self, uuid: str, ports: list[PortSpec]) -> list[str]:
        """Make each port's tap (ethernet mode) before anything plugs it or the guest opens it."""
        names = [tap_name(p.id) for p in ports]
        if self.config.vif_type == "ethernet":
            for name in names:
                await self.taps.ensure(name)
        return names

    async def _ensure_taps(self, dom: Any) -> None:
        if self.config.vif_type == "ethernet":
            for tap, _mac in read_taps(await self._call(dom.XMLDesc, 0)):
                await self.taps.ensure(tap)

    async def power_on(self, uuid: str) -> None:
        dom = await self._dom(uuid)
        if not await self._call(dom.isActive):
            await self._ensure_taps(dom)
            await self._call(dom.create)

    async def shutdown(self, uuid: str, timeout_s: float) -> bool:
        """Press the ACPI power button (again every shutdown_retry_s: a booting guest may miss it)."""
        dom = await self._dom(uuid)
        deadline = time.monotonic() + timeout_s
        next_press = 0.0
        while await self._call(dom.isActive):
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= next_press:
                try:
                    # the test driver knows no shutdown methods; QEMU must use ACPI (not the guest agent)
                    flags = 0 if self.accel == "test" else libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
                    await self._call(dom.shutdownFlags, flags)
                except DriverError:
                    if not await self._call(dom.isActive):  # it went off between the check and the press
                        break
                    raise
                next_press = now + self.config.shutdown_retry_s
            await asyncio.sleep(min(0.2, max(0.0, deadline - now)))
        return True

    async def power_off(self, uuid: str) -> None:
        dom = await self._dom(uuid)
        if await self._call(dom.isActive):
            await self._call(dom.destroy)

    async def reboot(self, uuid: str, hard: bool) -> None:
        """HARD: power off and start again. SOFT: the guest's own shutdown, then start (the caller bounds it)."""
        dom = await self._dom(uuid)
        if hard:
            await self.power_off(uuid)
        elif not await self.shutdown(uuid, float("inf")):
            raise DriverError(f"guest {uuid} did not shut down for a soft reboot")
        await self._ensure_taps(dom)
        if await self._call(dom.hasManagedSaveImage, 0):
            await self._call(dom.managedSaveRemove, 0)  # a hard reboot boots afresh, not from a saved state
        await self._call(dom.create)

    async def pause(self, uuid: str) -> None:
        await self._call((await self._dom(uuid)).suspend)

    async def unpause(self, uuid: str) -> None:
        await self._call((await self._dom(uuid)).resume)

    async def suspend(self, uuid: str) -> None:
        """Save the guest's memory to disk (libvirt's managed save) and stop it."""
        await self._call((await self._dom(uuid)).managedSave, 0)

    async def resume(self, uuid: str) -> None:
        dom = await self._dom(uuid)
        if not await self._call(dom.hasManagedSaveImage, 0):
            raise DriverError(f"guest {uuid} has no saved state to resume from")
        await self._ensure_taps(dom)
        await self._call(dom.create)

    async def power_state(self, uuid: str) -> PowerState:
        return (await self._status(await self._dom(uuid))).power

    async def _status(self, dom: Any) -> GuestStatus:
        state, reason = await self._call(dom.state, 0)
        saved = state == libvirt.VIR_DOMAIN_SHUTOFF and bool(await self._call(dom.hasManagedSaveImage, 0))
        return guest_status(state, reason, saved)

    async def guest_states(self) -> dict[str, GuestStatus]:
        domains = await self._call(self._connection().listAllDomains, 0)
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
        return {uuid: s.power for uuid, s in (await self.guest_states()).items()}

    async def console_output(self, uuid: str, length: int | None) -> str:
        """The tail of the serial console log (at most console_max_bytes are read)."""
        dom = await self._dom(uuid)
        path = read_serial_log(await self._call(dom.XMLDesc, 0))
        if not path or not Path(path).exists():
            return ""
        data = await asyncio.to_thread(_read_tail, Path(path), self.config.console_max_bytes)
        return tail_lines(data, length)

    async def evict_images(self) -> list[str]:
        """Drop cached bases no guest here uses, by age and free space."""
        return await asyncio.to_thread(self.cache.evict, self.images_in_use())

    def images_in_use(self) -> set[str]:
        """The images the guests on this host were made from (their bases must stay in the cache)."""
        used: set[str] = set()
        for record in self.root.glob("*/instance.json"):
            try:
                used.update(json.loads(record.read_text()).get("images", []))
            except (OSError, ValueError):
                continue
        return used


def _read_tail(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - limit))
        return f.read()
