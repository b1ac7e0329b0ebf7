"""A simulated hypervisor. It keeps real state (guests, power states, capacity), takes the time it is
configured to take, and fails where it is told to, so tests and the simulator see honest behaviour.

    driver = FakeDriver("hv-1", spawn_delay_s=0.2)
    driver.fail_on("spawn", "disk image is corrupt")     # the next spawn raises DriverError
    driver.ignore_acpi.add(uuid)                          # this guest ignores shutdown requests
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from canopy.agent.virt.base import DriverError, HostInfo, InstanceNotFound, PowerState
from canopy.rpc.calls import InstanceSpec


@dataclass
class FakeGuest:
    spec: InstanceSpec
    power: PowerState = PowerState.RUNNING
    boots: int = 1


@dataclass
class FakeDriver:
    """A hypervisor simulated in memory."""

    host: str
    vcpus: int = 32
    memory_mb: int = 131072
    local_gb: int = 2000
    spawn_delay_s: float = 0.0
    op_delay_s: float = 0.0
    guests: dict[str, FakeGuest] = field(default_factory=dict)
    ignore_acpi: set[str] = field(default_factory=set)
    _failures: dict[str, list[str]] = field(default_factory=dict)

    def fail_on(self, operation: str, message: str, times: int = 1) -> None:
        """Make the next `times` calls of `operation` raise DriverError(message)."""
        self._failures.setdefault(operation, []).extend([message] * times)

    def host_info(self) -> HostInfo:
        return HostInfo("fake", 1000, self.vcpus, self.memory_mb, self.local_gb)

    async def _step(self, operation: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        pending = self._failures.get(operation)
        if pending:
            raise DriverError(pending.pop(0))

    def _guest(self, uuid: str) -> FakeGuest:
        guest = self.guests.get(uuid)
        if guest is None:
            raise InstanceNotFound(f"fake: no guest {uuid} on {self.host}")
        return guest

    async def spawn(self, spec: InstanceSpec) -> None:
        await self._step("spawn", self.spawn_delay_s)
        if spec.uuid in self.guests:
            raise DriverError(f"fake: guest {spec.uuid} already exists on {self.host}")
        self.guests[spec.uuid] = FakeGuest(spec)

    async def destroy(self, uuid: str) -> None:
        await self._step("destroy", self.op_delay_s)
        self.guests.pop(uuid, None)  # destroying what is gone is not an error

    async def power_on(self, uuid: str) -> None:
        await self._step("power_on", self.op_delay_s)
        guest = self._guest(uuid)
        if guest.power != PowerState.RUNNING:
            guest.power = PowerState.RUNNING
            guest.boots += 1

    async def shutdown(self, uuid: str, timeout_s: float) -> bool:
        guest = self._guest(uuid)
        if uuid in self.ignore_acpi:
            await asyncio.sleep(timeout_s)  # the guest never answers; the caller waits the timeout out
            return guest.power == PowerState.SHUTDOWN
        await self._step("shutdown", self.op_delay_s)
        guest.power = PowerState.SHUTDOWN
        return True

    async def power_off(self, uuid: str) -> None:
        await self._step("power_off", self.op_delay_s)
        self._guest(uuid).power = PowerState.SHUTDOWN

    async def reboot(self, uuid: str, hard: bool) -> None:
        await self._step("reboot", self.op_delay_s)
        guest = self._guest(uuid)
        if not hard and uuid in self.ignore_acpi:
            raise DriverError(f"fake: guest {uuid} ignored the reboot request")
        guest.power = PowerState.RUNNING
        guest.boots += 1

    async def power_state(self, uuid: str) -> PowerState:
        return self._guest(uuid).power

    async def list_instances(self) -> dict[str, PowerState]:
        return {uuid: g.power for uuid, g in self.guests.items()}
