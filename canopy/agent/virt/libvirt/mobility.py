"""The libvirt driver's mobility operations: resize and cold migration (the guest set aside, its disk
copied by the agents, grown and defined again), snapshots, rebuild, rescue and live migration.

A guest set aside for a resize or migration is its folder renamed `<uuid>_resize` with its domain XML
in `domain.xml`, and its domain undefined: two agents sharing one libvirt (one machine) never see the
same UUID twice, and a revert renames the folder back and defines the saved XML again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape as xml_escape

from canopy.agent.disk import growfs, qemuimg, transfer
from canopy.agent.disk.backend import DiskBackend, Qcow2Backend, root_disk_spec
from canopy.agent.virt.base import DriverError, GuestLifecycle, InstanceNotFound, PowerControl
from canopy.agent.virt.libvirt.builder import GuestBuilder, GuestTaps
from canopy.agent.virt.libvirt.connection import Hypervisor
from canopy.optional import require_libvirt
from canopy.rpc.calls import InstanceSpec, PortSpec
from canopy.rpc.calls_mobility import DiskInfo, IncomingReady, MigrationStats

libvirt = require_libvirt()  # an optional part: a one-line error naming the extra when missing

GiB = 1 << 30
RESCUE_DIR = "rescue"


class GuestControl(PowerControl, GuestLifecycle, Protocol):
    """What mobility asks of the driver: stop a guest (cleanly, else not), remove one."""


class LibvirtMobility:
    """The libvirt driver's mobility, given its parts: the connection, the guest builder (files, XML), the
    taps, the root-disk backend, and the driver's own guest control (shutdown, power off, destroy)."""

    def __init__(self, hv: Hypervisor, builder: GuestBuilder, taps: GuestTaps, disks: DiskBackend,
                 guests: GuestControl) -> None:
        self.hv = hv
        self.builder = builder
        self.taps = taps
        self.disks = disks
        self.guests = guests
        self.host = hv.host
        self.config = builder.config
        self.root = builder.root

    # -- helpers ---------------------------------------------------------------------------------

    def aside_dir(self, uuid: str) -> Path:
        """The folder of a guest set aside for a resize or migration."""
        return self.root / f"{uuid}_resize"

    async def _stop_guest(self, uuid: str, timeout_s: float) -> None:
        """A clean shutdown within the timeout, else power off (the disk must be still before it is copied)."""
        dom = await self.hv.dom(uuid)
        if await self.hv.call(dom.isActive):
            if not await self.guests.shutdown(uuid, timeout_s):
                await self.guests.power_off(uuid)

    async def _define(self, spec: InstanceSpec, power_on: bool, make_disk: bool = True, grown: bool = False) -> None:
        """Make the folder's files for `spec` (as spawn does), define, and start if asked. `make_disk` False:
        the root disk exists already (a migrated disk was received into it; `grown`: bigger than the guest's
        old disk). A grown disk's filesystem is grown here for `canopy_grow_fs=host` images."""
        await self.hv.wait_ready()
        props = await self.builder.image_props(spec.image_id)
        custom = self.builder.customization(props, spec)
        folder = self.builder.make_folder(spec.uuid)
        domain = await self.builder.prepare(spec, folder, props, make_disk=make_disk)
        if grown and growfs.wanted(props):
            await self.builder.grow_fs(spec)
        xml = self.builder.xml(domain, custom)
        await self.taps.plug(spec.ports)
        dom = await self.hv.define(xml)
        if power_on:
            await self.hv.call(dom.create)

    # -- resize and cold migration ---------------------------------------------------------------

    async def migrate_out(self, uuid: str, timeout_s: float) -> DiskInfo:
        """Stop the guest, keep its XML, set its disk aside (LVM: the LV renamed `canopy-<uuid>_resize`, so a
        resize in place can make a new one), undefine it and set its folder aside; the disk's description."""
        folder, aside = self.root / uuid, self.aside_dir(uuid)
        await self._stop_guest(uuid, timeout_s)
        dom = await self.hv.dom(uuid)
        xml = await self.hv.xml_of(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
        (folder / "domain.xml").write_text(xml)
        await self.disks.set_aside(uuid)
        try:
            await self.hv.call(dom.undefineFlags, libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except BaseException:
            await self.disks.restore(uuid)  # the guest stays as it was
            raise
        if aside.exists():
            await asyncio.to_thread(shutil.rmtree, aside)
        await asyncio.to_thread(os.replace, folder, aside)
        return await self._aside_info(uuid)

    async def _aside_info(self, uuid: str) -> DiskInfo:
        record = json.loads((self.aside_dir(uuid) / "instance.json").read_text())
        return DiskInfo(instance_uuid=uuid, size=await self.disks.aside_size(uuid),
                        disk_format=self.disks.disk_format, image_id=(record.get("images") or [""])[0])

    async def read_disk(self, uuid: str, offset: int, length: int) -> bytes:
        """Bytes of a set-aside disk (the target agent pulls them; no shared storage is assumed)."""
        path = Path(self.disks.aside_path(uuid))
        if not path.exists():
            raise InstanceNotFound(f"no disk of {uuid} is set aside on {self.host}")
        return await transfer.read_at(path, offset, length)

    async def finish_migration(self, spec: InstanceSpec, disk: DiskInfo, chunks: AsyncIterator[bytes] | None,
                               power_on: bool) -> None:
        """Receive the disk (or copy the local set-aside one) into the backend, grown to the new flavor (or
        kept at the old disk's size, if larger), define with the new flavor, start if asked."""
        if disk.disk_format != self.disks.disk_format:  # qcow2 host <-> LVM host: the formats differ
            raise DriverError(f"the disk of {spec.uuid} is {disk.disk_format}; {self.host} keeps "
                              f"{self.disks.disk_format} disks ({self.disks.kind})")
        try:
            self.builder.make_folder(spec.uuid)
            base = await self.builder.cache.get(spec.image_id)
            grown = await self.disks.receive(spec.uuid, disk.size, chunks, base,
                                             max(spec.disk_gb * GiB, base.virtual_size))
            await self._define(spec, power_on, make_disk=False, grown=grown)
        except BaseException:
            await self.guests.destroy(spec.uuid)
            raise

    async def confirm_migration(self, uuid: str) -> None:
        """The move is kept: delete the set-aside folder and disk, and the old guest's taps unless the guest
        runs here now (a resize in place keeps them)."""
        saved = self.aside_dir(uuid) / "domain.xml"
        if self.taps.managed and saved.exists() and not await self.hv.exists(uuid):
            await self.taps.remove_for(saved.read_text())
        await self.disks.remove_aside(uuid)
        await asyncio.to_thread(shutil.rmtree, self.aside_dir(uuid), True)

    async def revert_migration(self, uuid: str, ports: list[PortSpec], power_on: bool) -> None:
        """Put the set-aside guest back as it was (old flavor, old disk) and start it if asked."""
        aside, folder = self.aside_dir(uuid), self.root / uuid
        if not aside.exists():
            raise DriverError(f"nothing of {uuid} is set aside on {self.host} to revert to")
        if await self.hv.exists(uuid):
            await self.guests.destroy(uuid)  # a resize in place: the new guest goes first
        await asyncio.to_thread(shutil.rmtree, folder, True)
        await self.disks.restore(uuid)  # LVM: the old LV gets its name back (the saved XML names it)
        await asyncio.to_thread(os.replace, aside, folder)
        xml = (folder / "domain.xml").read_text()
        await self.taps.plug(ports)
        dom = await self.hv.define(xml)
        if power_on:
            await self.hv.call(dom.create)

    # -- snapshot, rebuild, rescue ---------------------------------------------------------------

    async def snapshot(self, uuid: str, dest: Path) -> str:
        """A standalone qcow2 of the guest's disk (paused while it is read; from the raw LV with LVM); returns
        the disk format."""
        dom = await self.hv.dom(uuid)
        state, _ = await self.hv.call(dom.state, 0)
        pause = state == libvirt.VIR_DOMAIN_RUNNING
        if pause:
            await self.hv.call(dom.suspend)
        try:
            # -U: QEMU holds the image's lock while the guest is defined and paused; nothing writes now
            await qemuimg.run("convert", "-U", "-f", self.disks.disk_format, "-O", "qcow2", self.disks.path(uuid),
                              str(dest), timeout_s=1800)
        finally:
            if pause:
                await self.hv.call(dom.resume)
        return "qcow2"

    async def rebuild(self, spec: InstanceSpec, power_on: bool) -> None:
        """A new disk from the spec's image; the same UUID, MACs and taps."""
        await self.guests.destroy(spec.uuid)
        await self._define(spec, power_on)

    async def rescue(self, spec: InstanceSpec, rescue_image_id: str) -> None:
        """Boot the rescue image as vda with the guest's own disk as vdb (its config drive after)."""
        uuid, folder = spec.uuid, self.root / spec.uuid
        await self._stop_guest(uuid, 10.0)
        dom = await self.hv.dom(uuid)
        (folder / "unrescue.xml").write_text(await self.hv.xml_of(dom, libvirt.VIR_DOMAIN_XML_INACTIVE))
        rfolder = folder / RESCUE_DIR
        rfolder.mkdir(exist_ok=True)
        rfolder.chmod(0o755)
        rspec = spec.model_copy(update={"image_id": rescue_image_id})
        props = await self.builder.image_props(rescue_image_id)
        custom = self.builder.customization(props, spec)
        # the rescue disk is a qcow2 overlay in <uuid>/rescue/ whatever the backend (unrescue deletes the folder)
        domain = await self.builder.prepare(rspec, rfolder, props, disks=Qcow2Backend(folder), disk_key=RESCUE_DIR)
        own = root_disk_spec(self.disks, uuid, "vdb", uuid[:20])
        disks = [domain.disks[0], own] + [dataclasses.replace(d, target="vdc") for d in domain.disks[1:]]
        domain = dataclasses.replace(domain, disks=tuple(disks))
        await self.taps.plug(spec.ports)
        new = await self.hv.define(self.builder.xml(domain, custom))
        await self.hv.call(new.create)

    async def unrescue(self, uuid: str) -> None:
        """Power off the rescue boot, define the guest's own XML again and start it."""
        folder = self.root / uuid
        saved = folder / "unrescue.xml"
        if not saved.exists():
            raise DriverError(f"guest {uuid} on {self.host} is not rescued")
        await self.guests.power_off(uuid)
        dom = await self.hv.define(saved.read_text())
        await asyncio.to_thread(shutil.rmtree, folder / RESCUE_DIR, True)
        saved.unlink()
        await self.taps.ensure_for(await self.hv.xml_of(dom))
        await self.hv.call(dom.create)

    # -- live migration (peer to peer, block migration) ------------------------------------------

    async def prepare_incoming(self, spec: InstanceSpec, disk: DiskInfo) -> IncomingReady:
        """The destination: its taps, the guest's folder with a fresh root disk from this host's copy of the
        base (the block copy fills it) and its config drive; where the source migrates to."""
        folder = self.builder.make_folder(spec.uuid)
        await self.builder.prepare(spec, folder, await self.builder.image_props(spec.image_id))
        await self.taps.plug(spec.ports)
        return IncomingReady(uri=self.config.migration_uri or str(self.config.uri), instances_path=str(self.root),
                             migration_address=self.config.migration_address)

    async def live_migrate(self, uuid: str, to: IncomingReady) -> None:
        """Move the running guest with libvirt peer-to-peer, copying its disk (only the top layer when both
        hosts hold the same base); its files' paths become the destination's; blocks until done."""
        dom = await self.hv.dom(uuid)
        copy = libvirt.VIR_MIGRATE_NON_SHARED_INC if self.disks.shares_base else libvirt.VIR_MIGRATE_NON_SHARED_DISK
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | copy
                 | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        live = await self.hv.xml_of(dom, libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        persistent = await self.hv.xml_of(dom, libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        params = migration_params(live, persistent, self.root, to)
        if self.config.live_migration_bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.config.live_migration_bandwidth_mib
        await self.hv.call(dom.migrateToURI3, to.uri, params, flags)
        await self.disks.remove(uuid)  # a logical volume is not in the folder
        await asyncio.to_thread(shutil.rmtree, self.root / uuid, True)
        await self.taps.remove_for(live)  # the guest's taps here are empty now: the NIC lives there

    async def migration_stats(self, uuid: str) -> MigrationStats:
        """The running job's progress; all zeros when no job runs any more (the guest just left, or the
        migration just ended) — a poll racing the end is not an error."""
        try:
            dom = await self.hv.dom(uuid)
            s = await self.hv.call(dom.jobStats, 0)
        except DriverError:  # InstanceNotFound included
            return MigrationStats()
        return MigrationStats(memory_total=s.get("memory_total", 0), memory_processed=s.get("memory_processed", 0),
                              memory_remaining=s.get("memory_remaining", 0), disk_total=s.get("disk_total", 0),
                              disk_processed=s.get("disk_processed", 0), disk_remaining=s.get("disk_remaining", 0))

    async def abort_migration(self, uuid: str) -> None:
        """Cancel the running migration job (the guest stays here)."""
        await self.hv.call((await self.hv.dom(uuid)).abortJob)


def migration_params(live_xml: str, persistent_xml: str, root: Path, to: IncomingReady) -> dict[str, Any]:
    """libvirt's migration parameters: the guest's XML with this host's instance folder replaced by the
    destination's (disk, config drive, console log, kernel), and the address the destination listens on
    for the memory stream and the disk copy."""
    params: dict[str, Any] = {}
    if to.instances_path and Path(to.instances_path) != root:
        here, there = xml_escape(f"{root}/"), xml_escape(f"{to.instances_path.rstrip('/')}/")
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = live_xml.replace(here, there)
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = persistent_xml.replace(here, there)
    if to.migration_address:
        address = f"[{to.migration_address}]" if ":" in to.migration_address else to.migration_address
        params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{address}"
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = to.migration_address
    return params
