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
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from canopy.agent.disk import growfs, qemuimg
from canopy.agent.disk.backend import DiskBackend, Qcow2Backend, root_disk_spec
from canopy.agent.disk.lvm import LvmBackend
from canopy.agent.virt import customize
from canopy.agent.virt.base import DriverError, InstanceNotFound
from canopy.agent.virt.domain_model import read_taps
from canopy.optional import require_libvirt
from canopy.rpc.calls import InstanceSpec, PortSpec
from canopy.rpc.calls_mobility import DiskInfo, IncomingReady, MigrationStats

libvirt = require_libvirt()  # an optional part: a one-line error naming the extra when missing

GiB = 1 << 30
RESCUE_DIR = "rescue"


class LibvirtMobility:
    """Mixed into LibvirtDriver (it provides _dom, _call, _prepare, destroy, shutdown, cache, root...)."""

    root: Path
    cache: Any
    config: Any
    accel: str
    host: str
    host_custom: Any
    facts: Any
    disks: DiskBackend

    # -- helpers ---------------------------------------------------------------------------------

    def aside_dir(self, uuid: str) -> Path:
        return self.root / f"{uuid}_resize"

    async def _stop_guest(self, uuid: str, timeout_s: float) -> None:
        """A clean shutdown within the timeout, else power off (the disk must be still before it is copied)."""
        dom = await self._dom(uuid)  # type: ignore[attr-defined]
        if await self._call(dom.isActive):  # type: ignore[attr-defined]
            if not await self.shutdown(uuid, timeout_s):  # type: ignore[attr-defined]
                await self.power_off(uuid)  # type: ignore[attr-defined]

    async def _define(self, spec: InstanceSpec, disk_from: Path | None, power_on: bool,
                      make_disk: bool = True, grown: bool = False) -> None:
        """Make the folder's files for `spec` (as spawn does), put `disk_from` in as its disk (rebased on
        this host's copy of the base and grown to the flavor), define, and start if asked. `make_disk`
        False: the root disk exists already (an LV a migrated disk was written into; `grown`: bigger than
        the guest's old disk). A grown disk's filesystem is grown here for `canopy_grow_fs=host` images."""
        await self.wait_ready()  # type: ignore[attr-defined]
        meta = await self.cache.source.get_meta(spec.image_id)
        props = {k: v for k, v in meta.items() if isinstance(v, str)}
        custom = customize.resolve(self.host_custom, props, spec.flavor_extra_specs)
        folder = self.root / spec.uuid
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        domain = await self._prepare(spec, folder, props, make_disk=make_disk)  # type: ignore[attr-defined]
        if disk_from is not None:
            grown = await self._adopt_disk(spec, folder / "disk", disk_from)
        if grown and growfs.wanted(props):
            await self.grow_fs(spec)  # type: ignore[attr-defined]
        xml = customize.build_xml(domain, custom, self.accel, self.host_custom.patches)
        await self.plug_vifs(spec.uuid, spec.ports)  # type: ignore[attr-defined]
        dom = await self._call(self._connection().defineXML, xml)  # type: ignore[attr-defined]
        if power_on:
            await self._call(dom.create)  # type: ignore[attr-defined]

    async def _adopt_disk(self, spec: InstanceSpec, fresh: Path, incoming: Path) -> bool:
        """Replace the fresh overlay with the guest's own disk, pointed at this host's base, grown to the
        flavor; whether it grew."""
        want = int((await qemuimg.info(fresh, "qcow2"))["virtual-size"])
        base = await self.cache.get(spec.image_id)
        await asyncio.to_thread(os.replace, incoming, fresh)
        # -u: only the backing file's name changes; the base's content is the same image on every host
        await qemuimg.run("rebase", "-q", "-u", "-f", "qcow2", "-F", base.disk_format, "-b", str(base.path),
                          str(fresh))
        have = int((await qemuimg.info(fresh, "qcow2"))["virtual-size"])
        if want > have:  # the new flavor's disk (its filesystem: the guest's to grow, or grow_fs)
            await qemuimg.run("resize", "-q", "-f", "qcow2", str(fresh), str(want))
        return want > have

    # -- resize and cold migration ---------------------------------------------------------------

    async def migrate_out(self, uuid: str, timeout_s: float) -> DiskInfo:
        """Stop the guest, keep its XML, set its disk aside (LVM: the LV renamed `canopy-<uuid>_resize`, so a
        resize in place can make a new one), undefine it and set its folder aside; the disk's description."""
        folder, aside = self.root / uuid, self.aside_dir(uuid)
        await self._stop_guest(uuid, timeout_s)
        dom = await self._dom(uuid)  # type: ignore[attr-defined]
        xml = await self._call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)  # type: ignore[attr-defined]
        (folder / "domain.xml").write_text(xml)
        await self.disks.set_aside(uuid)
        try:
            await self._call(dom.undefineFlags, libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)  # type: ignore[attr-defined]
        except BaseException:
            await self.disks.restore(uuid)  # the guest stays as it was
            raise
        if aside.exists():
            await asyncio.to_thread(shutil.rmtree, aside)
        await asyncio.to_thread(os.replace, folder, aside)
        return await self._aside_info(uuid)

    async def _aside_info(self, uuid: str) -> DiskInfo:
        aside = self.aside_dir(uuid)
        record = json.loads((aside / "instance.json").read_text())
        if isinstance(self.disks, LvmBackend):  # the whole LV is sent: its size is a whole number of extents
            size = await self.disks.size_bytes(uuid, aside=True)
        else:
            size = (aside / "disk").stat().st_size
        return DiskInfo(instance_uuid=uuid, size=size, disk_format=self.disks.disk_format,
                        image_id=(record.get("images") or [""])[0])

    async def read_disk(self, uuid: str, offset: int, length: int) -> bytes:
        """Bytes of a set-aside disk (the target agent pulls them; no shared storage is assumed)."""
        path = Path(self.disks.aside_path(uuid))
        if not path.exists():
            raise InstanceNotFound(f"no disk of {uuid} is set aside on {self.host}")
        return await asyncio.to_thread(_read_at, path, offset, length)

    async def finish_migration(self, spec: InstanceSpec, disk: DiskInfo, chunks: AsyncIterator[bytes] | None,
                               power_on: bool) -> None:
        """Receive the disk (or copy the local set-aside one), grow it, define with the new flavor, start."""
        if disk.disk_format != self.disks.disk_format:  # qcow2 host <-> LVM host: the formats differ
            raise DriverError(f"the disk of {spec.uuid} is {disk.disk_format}; {self.host} keeps "
                              f"{self.disks.disk_format} disks ({self.disks.kind})")
        if isinstance(self.disks, LvmBackend):
            await self._finish_on_lvm(self.disks, spec, disk, chunks, power_on)
            return
        incoming = self.root / f"{spec.uuid}.incoming"
        try:
            if chunks is None:
                await asyncio.to_thread(shutil.copyfile, self.aside_dir(spec.uuid) / "disk", incoming)
            else:
                await _write_chunks(incoming, chunks)
            if incoming.stat().st_size != disk.size:
                raise DriverError(f"the disk of {spec.uuid} arrived with {incoming.stat().st_size} bytes, "
                                  f"{disk.size} expected")
            await self._define(spec, incoming, power_on)
        except BaseException:
            incoming.unlink(missing_ok=True)
            await self.destroy(spec.uuid)  # type: ignore[attr-defined]
            raise

    async def _finish_on_lvm(self, lvm: LvmBackend, spec: InstanceSpec, disk: DiskInfo,
                             chunks: AsyncIterator[bytes] | None, power_on: bool) -> None:
        """A new LV of the new flavor's disk (or the old disk's size, if larger), the guest's raw disk written
        into it (the source agent's chunks, or read from the set-aside LV for a resize in place), defined."""
        try:
            dev = await lvm.create_blank(spec.uuid, max(spec.disk_gb * GiB, disk.size))
            if chunks is None:
                chunks = _read_chunks(Path(lvm.aside_path(spec.uuid)), disk.size)
            written = await _write_into(Path(dev), chunks, skip_zeros=lvm.thin_pool is not None)
            if written != disk.size:
                raise DriverError(f"the disk of {spec.uuid} arrived with {written} bytes, {disk.size} expected")
            await self._define(spec, None, power_on, make_disk=False, grown=spec.disk_gb * GiB > disk.size)
        except BaseException:
            await self.destroy(spec.uuid)  # type: ignore[attr-defined]
            raise

    async def confirm_migration(self, uuid: str) -> None:
        """The move is kept: delete the set-aside folder and disk, and the old guest's taps unless the guest
        runs here now (a resize in place keeps them)."""
        saved = self.aside_dir(uuid) / "domain.xml"
        if (self.config.vif_type == "ethernet" and saved.exists()
                and not await self._exists(uuid)):  # type: ignore[attr-defined]
            for tap, _mac in read_taps(saved.read_text()):
                await self.taps.remove(tap)  # type: ignore[attr-defined]
        await self.disks.remove_aside(uuid)
        await asyncio.to_thread(shutil.rmtree, self.aside_dir(uuid), True)

    async def revert_migration(self, uuid: str, ports: list[PortSpec], power_on: bool) -> None:
        """Put the set-aside guest back as it was (old flavor, old disk) and start it if asked."""
        aside, folder = self.aside_dir(uuid), self.root / uuid
        if not aside.exists():
            raise DriverError(f"nothing of {uuid} is set aside on {self.host} to revert to")
        if await self._exists(uuid):  # type: ignore[attr-defined]
            await self.destroy(uuid)  # a resize in place: the new guest goes first
        await asyncio.to_thread(shutil.rmtree, folder, True)
        await self.disks.restore(uuid)  # LVM: the old LV gets its name back (the saved XML names it)
        await asyncio.to_thread(os.replace, aside, folder)
        xml = (folder / "domain.xml").read_text()
        await self.plug_vifs(uuid, ports)  # type: ignore[attr-defined]
        dom = await self._call(self._connection().defineXML, xml)  # type: ignore[attr-defined]
        if power_on:
            await self._call(dom.create)  # type: ignore[attr-defined]

    # -- snapshot, rebuild, rescue ---------------------------------------------------------------

    async def snapshot(self, uuid: str, dest: Path) -> str:
        """A standalone qcow2 of the guest's disk (paused while it is read; from the raw LV with LVM); returns
        the disk format."""
        dom = await self._dom(uuid)  # type: ignore[attr-defined]
        state, _ = await self._call(dom.state, 0)  # type: ignore[attr-defined]
        pause = state == libvirt.VIR_DOMAIN_RUNNING
        if pause:
            await self._call(dom.suspend)  # type: ignore[attr-defined]
        try:
            # -U: QEMU holds the image's lock while the guest is defined and paused; nothing writes now
            await qemuimg.run("convert", "-U", "-f", self.disks.disk_format, "-O", "qcow2", self.disks.path(uuid),
                              str(dest), timeout_s=1800)
        finally:
            if pause:
                await self._call(dom.resume)  # type: ignore[attr-defined]
        return "qcow2"

    async def rebuild(self, spec: InstanceSpec, power_on: bool) -> None:
        """A new disk from the spec's image; the same UUID, MACs and taps."""
        await self.destroy(spec.uuid)  # type: ignore[attr-defined]
        await self._define(spec, None, power_on)

    async def rescue(self, spec: InstanceSpec, rescue_image_id: str) -> None:
        """Boot the rescue image as vda with the guest's own disk as vdb (its config drive after)."""
        uuid, folder = spec.uuid, self.root / spec.uuid
        await self._stop_guest(uuid, 10.0)
        dom = await self._dom(uuid)  # type: ignore[attr-defined]
        (folder / "unrescue.xml").write_text(await self._call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE))  # type: ignore[attr-defined]
        rfolder = folder / RESCUE_DIR
        rfolder.mkdir(exist_ok=True)
        rfolder.chmod(0o755)
        rspec = spec.model_copy(update={"image_id": rescue_image_id})
        meta = await self.cache.source.get_meta(rescue_image_id)
        props = {k: v for k, v in meta.items() if isinstance(v, str)}
        custom = customize.resolve(self.host_custom, props, spec.flavor_extra_specs)
        # the rescue disk is a qcow2 overlay in <uuid>/rescue/ whatever the backend (unrescue deletes the folder)
        domain = await self._prepare(rspec, rfolder, props, disks=Qcow2Backend(folder),  # type: ignore[attr-defined]
                                     disk_key=RESCUE_DIR)
        own = root_disk_spec(self.disks, uuid, "vdb", uuid[:20])
        disks = [domain.disks[0], own] + [dataclasses.replace(d, target="vdc") for d in domain.disks[1:]]
        domain = dataclasses.replace(domain, disks=tuple(disks))
        xml = customize.build_xml(domain, custom, self.accel, self.host_custom.patches)
        await self.plug_vifs(uuid, spec.ports)  # type: ignore[attr-defined]
        new = await self._call(self._connection().defineXML, xml)  # type: ignore[attr-defined]
        await self._call(new.create)  # type: ignore[attr-defined]

    async def unrescue(self, uuid: str) -> None:
        """Power off the rescue boot, define the guest's own XML again and start it."""
        folder = self.root / uuid
        saved = folder / "unrescue.xml"
        if not saved.exists():
            raise DriverError(f"guest {uuid} on {self.host} is not rescued")
        await self.power_off(uuid)  # type: ignore[attr-defined]
        dom = await self._call(self._connection().defineXML, saved.read_text())  # type: ignore[attr-defined]
        await asyncio.to_thread(shutil.rmtree, folder / RESCUE_DIR, True)
        saved.unlink()
        await self._ensure_taps(dom)  # type: ignore[attr-defined]
        await self._call(dom.create)  # type: ignore[attr-defined]

    # -- live migration (peer to peer, block migration) ------------------------------------------

    async def prepare_incoming(self, spec: InstanceSpec, disk: DiskInfo) -> IncomingReady:
        """The destination: its taps, the guest's folder with a fresh overlay on this host's copy of the base
        (the block copy fills its top layer) and its config drive; where the source migrates to."""
        folder = self.root / spec.uuid
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        meta = await self.cache.source.get_meta(spec.image_id)
        await self._prepare(spec, folder, {k: v for k, v in meta.items() if isinstance(v, str)})  # type: ignore[attr-defined]
        await self.plug_vifs(spec.uuid, spec.ports)  # type: ignore[attr-defined]
        return IncomingReady(uri=self.config.migration_uri or str(self.config.uri), instances_path=str(self.root),
                             migration_address=self.config.migration_address)

    async def live_migrate(self, uuid: str, to: IncomingReady) -> None:
        """Move the running guest with libvirt peer-to-peer, copying the top layer of its disk (both hosts
        hold the same base); its files' paths become the destination's; blocks until done."""
        dom = await self._dom(uuid)  # type: ignore[attr-defined]
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_NON_SHARED_INC
                 | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        live = await self._call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_MIGRATABLE)  # type: ignore[attr-defined]
        persistent = await self._call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_MIGRATABLE  # type: ignore[attr-defined]
                                      | libvirt.VIR_DOMAIN_XML_INACTIVE)
        params = migration_params(live, persistent, self.root, to)
        if self.config.live_migration_bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.config.live_migration_bandwidth_mib
        await self._call(dom.migrateToURI3, to.uri, params, flags)  # type: ignore[attr-defined]
        await self.disks.remove(uuid)  # type: ignore[attr-defined]  # a logical volume is not in the folder
        await asyncio.to_thread(shutil.rmtree, self.root / uuid, True)
        if self.config.vif_type == "ethernet":  # the guest's taps here are empty now: the NIC lives there
            for tap, _mac in read_taps(live):
                await self.taps.remove(tap)  # type: ignore[attr-defined]

    async def migration_stats(self, uuid: str) -> MigrationStats:
        """The running job's progress; all zeros when no job runs any more (the guest just left, or the
        migration just ended) — a poll racing the end is not an error."""
        try:
            dom = await self._dom(uuid)  # type: ignore[attr-defined]
            s = await self._call(dom.jobStats, 0)  # type: ignore[attr-defined]
        except DriverError:  # InstanceNotFound included
            return MigrationStats()
        return MigrationStats(memory_total=s.get("memory_total", 0), memory_processed=s.get("memory_processed", 0),
                              memory_remaining=s.get("memory_remaining", 0), disk_total=s.get("disk_total", 0),
                              disk_processed=s.get("disk_processed", 0), disk_remaining=s.get("disk_remaining", 0))

    async def abort_migration(self, uuid: str) -> None:
        await self._call((await self._dom(uuid)).abortJob)  # type: ignore[attr-defined]


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


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


async def _write_chunks(path: Path, chunks: AsyncIterator[bytes]) -> None:
    with path.open("wb") as f:
        async for chunk in chunks:
            await asyncio.to_thread(f.write, chunk)


async def _read_chunks(path: Path, size: int, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    """The first `size` bytes of a disk (a block device or file) in chunks."""
    offset = 0
    while offset < size:
        data = await asyncio.to_thread(_read_at, path, offset, min(chunk, size - offset))
        if not data:
            return
        offset += len(data)
        yield data


async def _write_into(path: Path, chunks: AsyncIterator[bytes], skip_zeros: bool = False) -> int:
    """Write chunks from the start of an existing disk (a block device: never truncated), synced; the bytes
    received. `skip_zeros`: the disk reads as zeros where nothing was written (a new thin LV), so all-zero
    chunks are skipped rather than written (which would allocate them)."""
    written = 0
    with path.open("r+b") as f:
        async for chunk in chunks:
            if skip_zeros and chunk.count(0) == len(chunk):
                f.seek(len(chunk), os.SEEK_CUR)
            else:
                await asyncio.to_thread(f.write, chunk)
            written += len(chunk)
        await asyncio.to_thread(f.flush)
        await asyncio.to_thread(os.fsync, f.fileno())
    return written
