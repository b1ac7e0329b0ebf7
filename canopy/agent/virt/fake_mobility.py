"""The simulated hypervisor's mobility operations, with the same contract as the libvirt driver's: a guest
set aside for a resize or migration keeps its disk (bytes in memory) until confirmed or reverted; the
disk travels between agents in chunks; a live migration reports progress and can be aborted."""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from canopy.agent.virt.base import DriverError, InstanceNotFound, PowerState
from canopy.rpc.calls import InstanceSpec, PortSpec
from canopy.rpc.calls_mobility import DiskInfo, IncomingReady, MigrationStats

if TYPE_CHECKING:
    from canopy.agent.virt.fake import FakeGuest

GiB = 1 << 30
Step = Callable[[str, float], Awaitable[None]]  # the driver's step: waits, then fails if told to
# Destinations that prepared an incoming live migration, by URI (fake drivers live in one process).
_INCOMING: weakref.WeakValueDictionary[str, FakeMobility] = weakref.WeakValueDictionary()


@dataclass
class SetAside:
    """A guest set aside for a resize or migration, with its disk."""

    guest: FakeGuest
    disk: bytes


def fake_disk(spec: InstanceSpec) -> bytes:
    """A guest's simulated disk: small, but it names its image and size, so copies can be checked."""
    return f"fake-disk image={spec.image_id} gb={spec.disk_gb} uuid={spec.uuid}\n".encode()


class FakeMobility:
    """The fake driver's mobility, given the driver's parts: its guests, its spawn, its step (delay and
    scripted failures) and its current operation delay."""

    def __init__(self, host: str, guests: dict[str, FakeGuest], spawn: Callable[[InstanceSpec], Awaitable[None]],
                 step: Step, delay: Callable[[], float], live_steps: int = 4) -> None:
        self.host = host
        self.guests = guests
        self._spawn = spawn
        self._step = step
        self._delay = delay
        self.live_steps = live_steps  # a live migration copies in this many steps of the operation delay
        self.aside: dict[str, SetAside] = {}
        self.disks: dict[str, bytes] = {}  # each guest's disk content (made on first use)
        self.live: dict[str, MigrationStats] = {}

    def _guest(self, uuid: str) -> FakeGuest:
        guest = self.guests.get(uuid)
        if guest is None:
            raise InstanceNotFound(f"fake: no guest {uuid} on {self.host}")
        return guest

    def disk_of(self, uuid: str) -> bytes:
        """The guest's disk content."""
        guest = self._guest(uuid)
        return self.disks.setdefault(uuid, fake_disk(guest.spec))

    async def migrate_out(self, uuid: str, timeout_s: float) -> DiskInfo:
        await self._step("migrate_out", self._delay())
        disk = self.disk_of(uuid)
        guest = self.guests.pop(uuid)
        guest.power, guest.reason = PowerState.SHUTDOWN, "destroyed"
        self.aside[uuid] = SetAside(guest, disk)
        self.disks.pop(uuid, None)
        return DiskInfo(instance_uuid=uuid, size=len(disk), disk_format="raw", image_id=guest.spec.image_id)

    async def read_disk(self, uuid: str, offset: int, length: int) -> bytes:
        if uuid not in self.aside:
            raise InstanceNotFound(f"fake: no disk of {uuid} is set aside on {self.host}")
        return self.aside[uuid].disk[offset:offset + length]

    async def finish_migration(self, spec: InstanceSpec, disk: DiskInfo, chunks: AsyncIterator[bytes] | None,
                               power_on: bool) -> None:
        await self._step("finish_migration", self._delay())
        if chunks is None:
            data = self.aside[spec.uuid].disk
        else:
            data = b"".join([c async for c in chunks])
        if len(data) != disk.size:
            raise DriverError(f"fake: the disk of {spec.uuid} arrived with {len(data)} bytes, {disk.size} expected")
        await self._spawn(spec)
        had = re.search(rb"gb=(\d+)", data)
        grown = had is not None and spec.disk_gb > int(had.group(1))
        self.disks[spec.uuid] = data + (f"grown to {spec.disk_gb} GB\n".encode() if grown else b"")
        if not power_on:
            self.guests[spec.uuid].power = PowerState.SHUTDOWN

    async def confirm_migration(self, uuid: str) -> None:
        self.aside.pop(uuid, None)

    async def revert_migration(self, uuid: str, ports: list[PortSpec], power_on: bool) -> None:
        await self._step("revert_migration", self._delay())
        kept = self.aside.pop(uuid, None)
        if kept is None:
            raise DriverError(f"fake: nothing of {uuid} is set aside on {self.host} to revert to")
        self.guests[uuid] = kept.guest
        self.disks[uuid] = kept.disk
        if power_on:
            kept.guest.boots += 1
            kept.guest.boot()

    async def snapshot(self, uuid: str, dest: Path) -> str:
        await self._step("snapshot", self._delay())
        await asyncio.to_thread(dest.write_bytes, self.disk_of(uuid))
        return "raw"

    async def rebuild(self, spec: InstanceSpec, power_on: bool) -> None:
        await self._step("rebuild", self._delay())
        old = self._guest(spec.uuid)
        self.guests.pop(spec.uuid)
        self.disks.pop(spec.uuid, None)
        await self._spawn(spec)
        self.guests[spec.uuid].boots = old.boots + 1
        if not power_on:
            self.guests[spec.uuid].power = PowerState.SHUTDOWN

    async def rescue(self, spec: InstanceSpec, rescue_image_id: str) -> None:
        await self._step("rescue", self._delay())
        guest = self._guest(spec.uuid)
        guest.rescue_image = rescue_image_id
        guest.boots += 1
        guest.boot()
        guest.console.append(f"rescue {rescue_image_id}: second disk {self.disk_of(spec.uuid)!r}")

    async def unrescue(self, uuid: str) -> None:
        await self._step("unrescue", self._delay())
        guest = self._guest(uuid)
        if not guest.rescue_image:
            raise DriverError(f"fake: guest {uuid} is not rescued")
        guest.rescue_image = None
        guest.boots += 1
        guest.boot()

    async def prepare_incoming(self, spec: InstanceSpec, disk: DiskInfo) -> IncomingReady:
        await self._step("prepare_incoming", self._delay())
        uri = f"fake://{self.host}"
        _INCOMING[uri] = self
        return IncomingReady(uri=uri)

    async def live_migrate(self, uuid: str, to: IncomingReady) -> None:
        """Copies in `live_steps` steps of op_delay_s each; the guest keeps running; abort stops it."""
        dest = _INCOMING.get(to.uri)
        if dest is None:
            raise DriverError(f"fake: {to.uri} did not prepare for an incoming guest")
        disk = self.disk_of(uuid)
        steps = self.live_steps
        stats = self.live[uuid] = MigrationStats(memory_total=steps, disk_total=len(disk),
                                                 memory_remaining=steps, disk_remaining=len(disk))
        for step in range(1, steps + 1):
            await asyncio.sleep(self._delay())
            if uuid not in self.live:
                raise DriverError(f"fake: live migration of {uuid} was aborted")
            stats = stats.model_copy(update={"memory_processed": step, "memory_remaining": steps - step,
                                             "disk_processed": len(disk) * step // steps,
                                             "disk_remaining": len(disk) - len(disk) * step // steps})
            self.live[uuid] = stats
        await self._step("live_migrate", 0)
        self.live.pop(uuid, None)
        guest = self.guests.pop(uuid)
        dest.guests[uuid] = guest
        dest.disks[uuid] = self.disks.pop(uuid, disk)
        guest.console.append(f"migrated live to {dest.host}")

    async def migration_stats(self, uuid: str) -> MigrationStats:
        if uuid not in self.live:
            raise DriverError(f"fake: no live migration of {uuid} is running on {self.host}")
        return self.live[uuid]

    async def abort_migration(self, uuid: str) -> None:
        if self.live.pop(uuid, None) is None:
            raise DriverError(f"fake: no live migration of {uuid} is running on {self.host}")
