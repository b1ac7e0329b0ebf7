"""What a libvirt guest is made of on this host: its folder `<instances_path>/<uuid>/` with `disk.config`
(the config drive), `console.log` and `instance.json` (the images it uses, for cache eviction), its root
disk from the DiskBackend, its domain XML (customized per flavor, image and host), and its taps.

    builder = GuestBuilder(hv, config, cache, disks, host_custom)
    props = await builder.image_props(spec.image_id)
    domain = await builder.prepare(spec, builder.make_folder(spec.uuid), props)   # disks, drive, record
    xml = builder.xml(domain, builder.customization(props, spec))
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from canopy.agent import configdrive, inject
from canopy.agent.disk import growfs
from canopy.agent.disk.backend import DiskBackend, root_disk_spec
from canopy.agent.disk.cache import CachedImage, ImageCache
from canopy.agent.virt import customize
from canopy.agent.virt.base import DriverError
from canopy.agent.virt.domain_model import DiskSpec, DomainSpec, InterfaceSpec, read_taps
from canopy.agent.virt.libvirt.connection import Hypervisor
from canopy.agent.virt.vif import FakeTaps, TapDevices, tap_name
from canopy.config import LibvirtConfig
from canopy.rpc.calls import InstanceSpec, PortSpec

PREFIX = "canopy-"  # the domain's name: canopy-<uuid>
GiB = 1 << 30


class GuestTaps:
    """The guests' tap devices: Canopy makes and removes them when NICs are `ethernet`; with a bridge
    libvirt does, and these do nothing."""

    def __init__(self, vif_type: str, taps: TapDevices | FakeTaps) -> None:
        self.managed = vif_type == "ethernet"
        self.devices = taps

    async def plug(self, ports: list[PortSpec]) -> list[str]:
        """Make each port's tap before anything plugs it or the guest opens it; their names."""
        names = [tap_name(p.id) for p in ports]
        if self.managed:
            for name in names:
                await self.devices.ensure(name)
        return names

    async def ensure_for(self, xml: str) -> None:
        """Make the taps a domain's XML names (before it starts)."""
        if self.managed:
            for tap, _mac in read_taps(xml):
                await self.devices.ensure(tap)

    async def remove(self, names: list[str]) -> None:
        """Remove these taps (a missing one is not an error)."""
        if self.managed:
            for name in names:
                await self.devices.remove(name)

    async def remove_for(self, xml: str) -> None:
        """Remove the taps a domain's XML names."""
        await self.remove([tap for tap, _mac in read_taps(xml)])


class GuestBuilder:
    """Makes a guest's files on this host and the domain that uses them."""

    def __init__(self, hv: Hypervisor, config: LibvirtConfig, cache: ImageCache, disks: DiskBackend,
                 host_custom: customize.HostCustomization) -> None:
        self.hv = hv
        self.config = config
        self.cache = cache
        self.disks = disks
        self.host_custom = host_custom
        self.root = config.instances_path
        self.last_disk_ms = 0.0  # how long the last root disk took to make (the benchmark reports it)

    def instance_dir(self, uuid: str) -> Path:
        """The guest's folder."""
        return self.root / uuid

    def make_folder(self, uuid: str) -> Path:
        """The guest's folder, made if missing and readable by QEMU (it runs as its own user)."""
        folder = self.instance_dir(uuid)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        return folder

    async def image_props(self, image_id: str) -> dict[str, str]:
        """The image's string properties (customization, kernel, injection, grow_fs)."""
        meta = await self.cache.source.get_meta(image_id)
        return {k: v for k, v in meta.items() if isinstance(v, str)}

    def customization(self, props: dict[str, str], spec: InstanceSpec) -> customize.Customization:
        """The domain's customization from host, image and flavor."""
        return customize.resolve(self.host_custom, props, spec.flavor_extra_specs)

    def xml(self, domain: DomainSpec, custom: customize.Customization) -> str:
        """The domain XML for this host's accelerator, with the host's patches."""
        return customize.build_xml(domain, custom, self.hv.accel, self.host_custom.patches)

    async def prepare(self, spec: InstanceSpec, folder: Path, props: dict[str, str], *,
                      disks: DiskBackend | None = None, disk_key: str | None = None,
                      make_disk: bool = True) -> DomainSpec:
        """The disks and config drive on this host, and the domain description that uses them. The root
        disk is `disks.path(disk_key)` (default: this host's backend, the guest's uuid); `make_disk`
        False: it exists already (a migrated disk was written into it)."""
        backend, key = disks or self.disks, disk_key or spec.uuid
        base = await self.cache.get(spec.image_id)
        kernel = await self._optional_image(props.get("kernel_id"))
        ramdisk = await self._optional_image(props.get("ramdisk_id"))
        injected = inject.wanted(self.config.injection, props)  # issue 6: files instead of a config drive
        self._check_disk(spec, base, backend, injected)
        if make_disk:
            await self._make_disk(spec, base, backend, key, props, injected)
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
            domain_type=self.hv.domain_type(), kernel=str(kernel.path) if kernel else None,
            initrd=str(ramdisk.path) if ramdisk else None,
            cmdline=props.get("os_command_line") if kernel else None,
            disks=tuple(disks_xml), interfaces=tuple(nics), serial_log=str(folder / "console.log"),
            metadata=(("uuid", spec.uuid), ("name", spec.name), ("hostname", spec.hostname),
                      ("project", spec.project_id), ("image", spec.image_id)),
        )

    @staticmethod
    def _check_disk(spec: InstanceSpec, base: CachedImage, backend: DiskBackend, injected: bool) -> None:
        if spec.disk_gb and spec.disk_gb * GiB < base.virtual_size:
            raise DriverError(f"the flavor's disk ({spec.disk_gb} GB) is smaller than image {spec.image_id} "
                              f"({base.virtual_size} bytes)")
        if injected and backend.kind != "qcow2":
            raise DriverError(f"file injection writes into a qcow2 overlay; disk_backend {backend.kind!r} "
                              f"cannot inject (image {spec.image_id}): use the config drive")

    async def _make_disk(self, spec: InstanceSpec, base: CachedImage, backend: DiskBackend, key: str,
                         props: dict[str, str], injected: bool) -> None:
        t0 = time.monotonic()
        size = max(spec.disk_gb * GiB, base.virtual_size)
        if injected:
            await inject.inject_into_overlay(base.path, base.disk_format, Path(backend.path(key)), size,
                                             inject.spec_files(spec))
        else:
            await backend.create(key, base, size)
        if growfs.wanted(props):
            await backend.grow_fs(key, base)
        self.last_disk_ms = (time.monotonic() - t0) * 1000

    async def grow_fs(self, spec: InstanceSpec) -> None:
        """Grow the guest's filesystem to its root disk (images marked `canopy_grow_fs=host`)."""
        await self.disks.grow_fs(spec.uuid, await self.cache.get(spec.image_id))

    async def _optional_image(self, image_id: str | None) -> CachedImage | None:
        return await self.cache.get(image_id) if image_id else None

    def images_in_use(self) -> set[str]:
        """The images the guests on this host were made from (their bases must stay in the cache)."""
        used: set[str] = set()
        for record in self.root.glob("*/instance.json"):
            try:
                used.update(json.loads(record.read_text()).get("images", []))
            except (OSError, ValueError):
                continue
        return used
