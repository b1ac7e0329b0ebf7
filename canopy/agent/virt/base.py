"""The VirtDriver protocol every hypervisor driver implements, and the power states it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from canopy.rpc.calls import InstanceSpec, PortSpec


class PowerState(IntEnum):
    """Nova's power states, as the Compute API shows them."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


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


class VirtDriver(Protocol):
    """A hypervisor: creates, powers and destroys guests."""

    def host_info(self) -> HostInfo: ...

    async def spawn(self, spec: InstanceSpec) -> None: ...

    async def destroy(self, uuid: str) -> None: ...

    async def power_on(self, uuid: str) -> None: ...

    async def shutdown(self, uuid: str, timeout_s: float) -> bool:
        """Ask the guest to shut down (ACPI); True if it was off within the timeout."""
        ...

    async def power_off(self, uuid: str) -> None: ...

    async def reboot(self, uuid: str, hard: bool) -> None: ...

    async def power_state(self, uuid: str) -> PowerState: ...

    async def list_instances(self) -> dict[str, PowerState]: ...

    async def pause(self, uuid: str) -> None:
        """Stop the guest's CPUs; its memory stays in place."""
        ...

    async def unpause(self, uuid: str) -> None: ...

    async def suspend(self, uuid: str) -> None:
        """Save the guest's memory to disk and stop it."""
        ...

    async def resume(self, uuid: str) -> None: ...

    async def console_output(self, uuid: str, length: int | None) -> str:
        """The last `length` lines the guest wrote to its serial console (all when None)."""
        ...

    async def guest_states(self) -> dict[str, GuestStatus]:
        """Every guest this driver holds, with its power state and the reason for it."""
        ...

    async def wait_ready(self) -> None:
        """Return when the hypervisor answers; HypervisorUnavailable otherwise (the caller retries)."""
        ...

    async def close(self) -> None:
        """Release connections (the agent is stopping)."""
        ...

    async def plug_vifs(self, uuid: str, ports: list[PortSpec]) -> list[str]:
        """Make sure each port's host device exists (idempotent); the device names, in port order."""
        ...
