"""The protocols a hypervisor driver implements, and the power states it reports.

Each protocol is a few methods, and a caller depends on the ones it uses: `VirtDriver` is the host, the
guests' lifecycle, power and console; `Mobility` (cold and live migration, snapshots, rescue/rebuild) is
a component of its own that a `MobileDriver` carries as `driver.mobility`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from canopy.rpc.calls import InstanceSpec, PortSpec
from canopy.rpc.calls_mobility import DiskInfo, IncomingReady, MigrationStats
from canopy.states import PowerState as PowerState  # re-exported: the agent's code takes it from here


class DriverError(Exception):
    """A driver operation failed; the message says what and where, for the instance fault."""


class InstanceNotFound(DriverError):
    """The driver holds no guest with that UUID."""


class HypervisorUnavailable(DriverError):
    """The hypervisor cannot be reached (yet): after a host reboot libvirt may start after the agent."""


@dataclass(frozen=True, slots=True)
class GuestStatus:
    """A guest's power state and why it is in it: "shutdown" (the guest shut itself down), "crashed" (it
    died), "destroyed" (powered off), "saved" (suspended to disk), "" when nothing more is known."""

    power: PowerState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What a hypervisor host offers."""

    hypervisor_type: str
    hypervisor_version: int
    vcpus: int
    memory_mb: int
    local_gb: int
    host_ip: str | None = None
    accelerator: str = ""  # kvm or tcg for real hypervisors
    cpu_info: dict[str, Any] = field(default_factory=dict)


class HostDriver(Protocol):
    """The hypervisor itself: is it there, what it offers, which guests it holds."""

    def host_info(self) -> HostInfo: ...

    async def wait_ready(self) -> None:
        """Return when the hypervisor answers; HypervisorUnavailable otherwise (the caller retries)."""
        ...

    async def close(self) -> None:
        """Release connections (the agent is stopping)."""
        ...

    async def guest_states(self) -> dict[str, GuestStatus]:
        """Every guest this driver holds, with its power state and the reason for it."""
        ...

    async def list_instances(self) -> dict[str, PowerState]: ...


class GuestLifecycle(Protocol):
    """Guests made and removed, and their network devices."""

    async def spawn(self, spec: InstanceSpec) -> None: ...

    async def destroy(self, uuid: str) -> None:
        """Remove the guest and everything it had here; a missing guest is not an error."""
        ...

    async def plug_vifs(self, uuid: str, ports: list[PortSpec]) -> list[str]:
        """Make sure each port's host device exists (idempotent); the device names, in port order."""
        ...


class PowerControl(Protocol):
    """A guest's power: on, off (clean or not), reboot, and its state."""

    async def power_on(self, uuid: str) -> None: ...

    async def shutdown(self, uuid: str, timeout_s: float) -> bool:
        """Ask the guest to shut down (ACPI); True if it was off within the timeout."""
        ...

    async def power_off(self, uuid: str) -> None: ...

    async def reboot(self, uuid: str, hard: bool) -> None: ...

    async def power_state(self, uuid: str) -> PowerState: ...


class PauseControl(Protocol):
    """A guest stopped and resumed with its memory kept (in place, or saved to disk)."""

    async def pause(self, uuid: str) -> None:
        """Stop the guest's CPUs; its memory stays in place."""
        ...

    async def unpause(self, uuid: str) -> None: ...

    async def suspend(self, uuid: str) -> None:
        """Save the guest's memory to disk and stop it."""
        ...

    async def resume(self, uuid: str) -> None: ...


class ConsoleReader(Protocol):
    """What a guest wrote to its serial console."""

    async def console_output(self, uuid: str, length: int | None) -> str:
        """The last `length` lines the guest wrote to its serial console (all when None)."""
        ...


class VirtDriver(HostDriver, GuestLifecycle, PowerControl, PauseControl, ConsoleReader, Protocol):
    """A hypervisor: creates, powers and destroys guests. Its mobility (`Mobility`) is a component of its own."""


class ColdMigration(Protocol):
    """Resize and cold migration: the guest set aside with its disk until confirmed or reverted; the disk
    travels between agents in chunks (no shared storage)."""

    async def migrate_out(self, uuid: str, timeout_s: float) -> DiskInfo:
        """Stop the guest and set it aside (disk kept) until confirm or revert; its disk's description."""
        ...

    async def read_disk(self, uuid: str, offset: int, length: int) -> bytes: ...

    async def finish_migration(self, spec: InstanceSpec, disk: DiskInfo, chunks: AsyncIterator[bytes] | None,
                               power_on: bool) -> None:
        """Define the guest from a received disk (`chunks`; None: the local set-aside one), grown to the spec."""
        ...

    async def confirm_migration(self, uuid: str) -> None: ...

    async def revert_migration(self, uuid: str, ports: list[PortSpec], power_on: bool) -> None: ...


class LiveMigration(Protocol):
    """A running guest moved to another host."""

    async def prepare_incoming(self, spec: InstanceSpec, disk: DiskInfo) -> IncomingReady:
        """Get ready for a live migration in; where the source migrates to."""
        ...

    async def live_migrate(self, uuid: str, to: IncomingReady) -> None: ...

    async def migration_stats(self, uuid: str) -> MigrationStats: ...

    async def abort_migration(self, uuid: str) -> None: ...


class Snapshots(Protocol):
    """A standalone image of a guest's disk."""

    async def snapshot(self, uuid: str, dest: Path) -> str:
        """Write a standalone image of the guest's disk to `dest`; its disk format."""
        ...


class RescueRebuild(Protocol):
    """A guest made again from an image, or booted from a rescue image with its own disk attached."""

    async def rebuild(self, spec: InstanceSpec, power_on: bool) -> None: ...

    async def rescue(self, spec: InstanceSpec, rescue_image_id: str) -> None: ...

    async def unrescue(self, uuid: str) -> None: ...


class Mobility(ColdMigration, LiveMigration, Snapshots, RescueRebuild, Protocol):
    """What a driver's mobility component does (issue 6): resize, move, snapshot, rebuild and rescue guests."""


@runtime_checkable
class MobileDriver(VirtDriver, Protocol):
    """A driver with a mobility component."""

    @property
    def mobility(self) -> Mobility: ...


@runtime_checkable
class InterfaceHotplug(Protocol):
    """A running (or stopped) guest's network interfaces added and removed (os-interface, issue 16)."""

    async def attach_interface(self, uuid: str, port: PortSpec) -> None:
        """Make the port's tap and add the NIC to the guest (live when it runs, and to its definition);
        attaching a NIC the guest has already is not an error."""
        ...

    async def detach_interface(self, uuid: str, port_id: str) -> None:
        """Remove the port's NIC from the guest and its tap; a NIC the guest lacks is not an error."""
        ...
