"""The VirtDriver protocol every hypervisor driver implements, and the power states it reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from canopy.rpc.calls import InstanceSpec


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


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What a hypervisor host offers."""

    hypervisor_type: str
    hypervisor_version: int
    vcpus: int
    memory_mb: int
    local_gb: int
    host_ip: str | None = None


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
