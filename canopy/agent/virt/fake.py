"""A simulated hypervisor. It keeps real state (guests, power states, capacity), takes the time it is
configured to take, and fails where it is told to, so tests and the simulator see honest behaviour.

    driver = FakeDriver("hv-1", spawn_delay_s=0.2)
    driver.fail_on("spawn", "disk image is corrupt")     # the next spawn raises DriverError
    driver.ignore_acpi.add(uuid)                          # this guest ignores shutdown requests
    driver.guest_halts(uuid) / driver.guest_dies(uuid)    # the guest shuts itself down / crashes
    await driver.mobility.migrate_out(uuid, 60)            # resize, migrate, snapshot…: a component of its own
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from canopy.agent.virt.base import DriverError, GuestStatus, HostInfo, InstanceNotFound, PowerState
from canopy.agent.virt.fake_mobility import FakeMobility
from canopy.agent.virt.vif import tap_name
from canopy.rpc.calls import InstanceSpec, PortSpec


@dataclass
class FakeGuest:
    """A simulated guest: its spec, power state (and why), boots, console lines, rescue image if rescued."""

    spec: InstanceSpec
    power: PowerState = PowerState.RUNNING
    boots: int = 1
    reason: str = ""
    console: list[str] = field(default_factory=list)
    rescue_image: str | None = None

    def boot(self) -> None:
        self.power, self.reason = PowerState.RUNNING, ""
        self.console.append(f"{self.spec.hostname} booted (boot {self.boots})")


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
    taps: set[str] = field(default_factory=set)
    _failures: dict[str, list[str]] = field(default_factory=dict)
    mobility: FakeMobility = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.mobility = FakeMobility(self.host, self.guests, self.spawn, self._step, lambda: self.op_delay_s)

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

    def adopt(self, spec: InstanceSpec, power: PowerState) -> None:
        """A guest this host held before the control plane restarted: real guests outlive their agent, so
        the simulated ones are taken back in the power state the database recorded."""
        self.guests[spec.uuid] = FakeGuest(spec, power=power, console=[
            f"{spec.hostname} kept running while the control plane restarted"])

    async def spawn(self, spec: InstanceSpec) -> None:
        await self._step("spawn", self.spawn_delay_s)
        if spec.uuid in self.guests:
            raise DriverError(f"fake: guest {spec.uuid} already exists on {self.host}")
        guest = self.guests[spec.uuid] = FakeGuest(spec)
        guest.boot()

    async def destroy(self, uuid: str) -> None:
        await self._step("destroy", self.op_delay_s)
        self.guests.pop(uuid, None)  # destroying what is gone is not an error

    async def power_on(self, uuid: str) -> None:
        await self._step("power_on", self.op_delay_s)
        guest = self._guest(uuid)
        if guest.power != PowerState.RUNNING:
            guest.boots += 1
            guest.boot()

    async def shutdown(self, uuid: str, timeout_s: float) -> bool:
        guest = self._guest(uuid)
        if uuid in self.ignore_acpi:
            await asyncio.sleep(timeout_s)  # the guest never answers; the caller waits the timeout out
            return guest.power == PowerState.SHUTDOWN
        await self._step("shutdown", self.op_delay_s)
        guest.power, guest.reason = PowerState.SHUTDOWN, "shutdown"
        return True

    async def power_off(self, uuid: str) -> None:
        await self._step("power_off", self.op_delay_s)
        guest = self._guest(uuid)
        guest.power, guest.reason = PowerState.SHUTDOWN, "destroyed"

    async def reboot(self, uuid: str, hard: bool) -> None:
        await self._step("reboot", self.op_delay_s)
        guest = self._guest(uuid)
        if not hard and uuid in self.ignore_acpi:
            raise DriverError(f"fake: guest {uuid} ignored the reboot request")
        guest.boots += 1
        guest.boot()

    async def power_state(self, uuid: str) -> PowerState:
        return self._guest(uuid).power

    async def list_instances(self) -> dict[str, PowerState]:
        return {uuid: g.power for uuid, g in self.guests.items()}

    async def pause(self, uuid: str) -> None:
        await self._step("pause", self.op_delay_s)
        guest = self._need(uuid, PowerState.RUNNING, "pause")
        guest.power = PowerState.PAUSED

    async def unpause(self, uuid: str) -> None:
        await self._step("unpause", self.op_delay_s)
        self._need(uuid, PowerState.PAUSED, "unpause").power = PowerState.RUNNING

    async def suspend(self, uuid: str) -> None:
        await self._step("suspend", self.op_delay_s)
        guest = self._need(uuid, PowerState.RUNNING, "suspend")
        guest.power, guest.reason = PowerState.SUSPENDED, "saved"

    async def resume(self, uuid: str) -> None:
        await self._step("resume", self.op_delay_s)
        guest = self._need(uuid, PowerState.SUSPENDED, "resume")
        guest.power, guest.reason = PowerState.RUNNING, ""

    def _need(self, uuid: str, power: PowerState, action: str) -> FakeGuest:
        guest = self._guest(uuid)
        if guest.power != power:
            raise DriverError(f"fake: cannot {action} guest {uuid}: it is {guest.power.name.lower()}")
        return guest

    async def console_output(self, uuid: str, length: int | None) -> str:
        lines = self._guest(uuid).console
        shown = lines if length is None else lines[-length:] if length > 0 else []  # as libvirt's: 0 lines is none
        return "\n".join(shown) + ("\n" if shown else "")

    async def guest_states(self) -> dict[str, GuestStatus]:
        return {uuid: GuestStatus(g.power, g.reason) for uuid, g in self.guests.items()}

    async def wait_ready(self) -> None:
        await self._step("wait_ready", 0.0)  # fail_on("wait_ready", …): the hypervisor stops answering

    async def close(self) -> None:
        return None

    async def plug_vifs(self, uuid: str, ports: list[PortSpec]) -> list[str]:
        names = [tap_name(p.id) for p in ports]
        self.taps.update(names)
        return names

    async def attach_interface(self, uuid: str, port: PortSpec) -> None:
        await self._step("attach_interface", self.op_delay_s)
        guest = self._guest(uuid)
        if all(p.id != port.id for p in guest.spec.ports):
            guest.spec = guest.spec.model_copy(update={"ports": [*guest.spec.ports, port]})
        self.taps.add(tap_name(port.id))

    async def detach_interface(self, uuid: str, port_id: str) -> None:
        await self._step("detach_interface", self.op_delay_s)
        guest = self._guest(uuid)
        guest.spec = guest.spec.model_copy(update={"ports": [p for p in guest.spec.ports if p.id != port_id]})
        self.taps.discard(tap_name(port_id))

    def guest_halts(self, uuid: str) -> None:
        """The guest shuts itself down (as `poweroff` inside it would)."""
        guest = self._guest(uuid)
        guest.power, guest.reason = PowerState.SHUTDOWN, "shutdown"

    def guest_dies(self, uuid: str) -> None:
        """The guest's emulator dies."""
        guest = self._guest(uuid)
        guest.power, guest.reason = PowerState.SHUTDOWN, "crashed"
