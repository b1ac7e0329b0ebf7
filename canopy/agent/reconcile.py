"""Start-up that survives a host reboot, and the power-state sync.

On a rebooted host libvirt, Open vSwitch and the agent start in no guaranteed order, so the agent first
waits for the hypervisor and the switch with backoff. Then it reconciles what the database says the
host holds (asked of a conductor: agents have no database credentials) against what the hypervisor has:

    for each guest the host should hold: its taps exist (made if missing) → plugged into the bridge →
        started if it should be running and is not
    guests the database does not know: reported, and destroyed only when configured
    flows: reapplied once every tap is back

Every step is idempotent: reconciling twice changes nothing the second time. Afterwards, and every
`power_sync_s`, guests whose power state changed (a guest that shut itself down, one that died) are
reported to a conductor, which updates the instance and records a fault for a guest that died.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from canopy import states
from canopy.agent.virt.base import DriverError, GuestStatus, HypervisorUnavailable, PowerState, VirtDriver
from canopy.rpc.base import BusError, Target, Transport
from canopy.rpc.calls import GuestPower, HostInstance, HostInstances, ListHostInstances, PortSpec, PowerStateSync

log = logging.getLogger("canopy.agent.reconcile")


class NetworkHook(Protocol):
    """What reconcile needs of the host's network agent (canopy/agent/net): a small seam, so the virt side
    and the flow side can change independently."""

    async def wait_ready(self) -> None:
        """Return when Open vSwitch answers; raise otherwise (the caller retries with backoff)."""
        ...

    async def plug(self, instance_uuid: str, ports: list[PortSpec], devices: list[str]) -> None:
        """Add the guest's taps (which exist) to the integration bridge; idempotent."""
        ...

    async def reapply(self) -> None:
        """Apply this host's flows again (after taps came back)."""
        ...


class NoNetwork:
    """No switch to wire (the fake driver, or a host whose network agent runs on its own)."""

    async def wait_ready(self) -> None:
        return None

    async def plug(self, instance_uuid: str, ports: list[PortSpec], devices: list[str]) -> None:
        return None

    async def reapply(self) -> None:
        return None


class NetNodeHook:
    """The hook over the network agent's NetNode (canopy/agent/net/node.py): plugging re-checks its wiring
    (which adds only taps that exist), reapplying loads its complete program again."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def wait_ready(self) -> None:
        vsctl = getattr(self.node.applier, "vsctl", None)  # a real switch; the fake one is always ready
        if vsctl is not None:
            await vsctl("--timeout=5", "show")

    async def plug(self, instance_uuid: str, ports: list[PortSpec], devices: list[str]) -> None:
        await self.node.plug()

    async def reapply(self) -> None:
        await self.node.reconcile()


async def wait_for(what: str, check: Callable[[], Awaitable[None]], timeout_s: float,
                   first_delay_s: float = 0.2, max_delay_s: float = 10.0) -> None:
    """Call `check` until it stops raising, with exponential backoff, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = first_delay_s
    while True:
        try:
            await check()
            return
        except (HypervisorUnavailable, OSError, RuntimeError, DriverError) as exc:
            if time.monotonic() + delay > deadline:
                raise HypervisorUnavailable(f"{what} was not ready after {timeout_s:g}s: {exc}") from exc
            log.warning("%s not ready (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


@dataclass
class ReconcileReport:
    """What one reconcile changed; `changed` is False when the host already matched."""

    started: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    evacuated: list[str] = field(default_factory=list)  # guests rebuilt elsewhere while this host was down
    missing: list[str] = field(default_factory=list)
    plugged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.started or self.removed or self.evacuated)


def should_run(inst: HostInstance) -> bool:
    """A guest that was running (active and powered on, no task in flight) is started again."""
    return inst.vm_state == states.ACTIVE and inst.power_state == PowerState.RUNNING and inst.task_state is None


class HostReconciler:
    """Reconciles one host on start and on a timer, and reports power-state changes."""

    def __init__(self, host: str, driver: VirtDriver, bus: Transport, *, net: NetworkHook | None = None,
                 power_sync_s: float = 10.0, reconcile_s: float = 300.0, ready_timeout_s: float = 3600.0,
                 remove_unknown: bool = False, call_timeout_s: float = 30.0,
                 housekeeping: Callable[[], Awaitable[object]] | None = None) -> None:
        self.host = host
        self.driver = driver
        self.bus = bus
        self.net = net or NoNetwork()
        self.power_sync_s = power_sync_s
        self.reconcile_s = reconcile_s
        self.ready_timeout_s = ready_timeout_s
        self.remove_unknown = remove_unknown
        self.call_timeout_s = call_timeout_s
        self.housekeeping = housekeeping  # e.g. evicting unused base images, after each reconcile
        self.last_report: ReconcileReport | None = None
        self._seen: dict[str, GuestStatus] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    async def wait_ready(self) -> None:
        """Wait for the hypervisor, then the switch (each with backoff)."""
        await wait_for(f"the hypervisor of {self.host}", self.driver.wait_ready, self.ready_timeout_s)
        await wait_for(f"Open vSwitch on {self.host}", self.net.wait_ready, self.ready_timeout_s)

    async def reconcile(self) -> ReconcileReport:
        """Bring the host in line with the database; idempotent."""
        async with self._lock:
            reply = await self.bus.call(Target("conductor"), ListHostInstances(host=self.host),
                                        timeout=self.call_timeout_s)
            assert isinstance(reply, HostInstances)
            actual = await self.driver.guest_states()
            report = ReconcileReport()
            for inst in reply.instances:
                await self._one(inst, actual.get(inst.uuid), report)
            known = {i.uuid for i in reply.instances}
            for uuid in reply.evacuated:  # Nova's rule too: an evacuated guest never comes back here
                if uuid not in known:
                    await self.driver.destroy(uuid)
                    report.evacuated.append(uuid)
            if report.evacuated:
                await self.bus.cast(Target("conductor"), PowerStateSync(host=self.host,
                                                                         evacuated_removed=report.evacuated))
            for uuid in sorted(set(actual) - known - set(reply.evacuated)):
                report.unknown.append(uuid)
                if self.remove_unknown:
                    await self.driver.destroy(uuid)
                    report.removed.append(uuid)
            if report.unknown:
                log.warning("host %s holds guests the database does not know: %s%s", self.host,
                            ", ".join(report.unknown), " (removed)" if self.remove_unknown else "")
            await self.net.reapply()
            if self.housekeeping is not None:
                await self.housekeeping()
            self.last_report = report
            return report

    async def _one(self, inst: HostInstance, status: GuestStatus | None, report: ReconcileReport) -> None:
        if status is None:
            if inst.vm_state not in (states.BUILDING, states.ERROR) and inst.task_state is None:
                report.missing.append(inst.uuid)
                log.warning("instance %s should be on %s but the hypervisor has no such guest", inst.uuid, self.host)
            return
        devices = await self.driver.plug_vifs(inst.uuid, inst.ports)  # taps first: they must exist to plug
        await self.net.plug(inst.uuid, inst.ports, devices)
        report.plugged += len(devices)
        if should_run(inst) and status.power != PowerState.RUNNING:
            log.info("reconcile: starting %s on %s (it was running; now %s)", inst.uuid, self.host,
                     PowerState(status.power).name.lower())
            try:
                await self.driver.power_on(inst.uuid)
                report.started.append(inst.uuid)
            except DriverError as exc:
                log.warning("reconcile: could not start %s: %s", inst.uuid, exc)

    async def sync_power(self, full: bool = False) -> list[GuestPower]:
        """Report guests whose power state changed since the last look (all of them when `full`)."""
        now = await self.driver.guest_states()
        changed = [_report(uuid, status) for uuid, status in sorted(now.items())
                   if full or self._seen.get(uuid) != status]
        self._seen = now
        if changed or full:
            unknown = self.last_report.unknown if (full and self.last_report) else []
            await self.bus.cast(Target("conductor"), PowerStateSync(host=self.host, guests=changed, full=full,
                                                                     unknown=unknown))
        return changed

    async def start(self) -> ReconcileReport:
        """Reconcile once, report every guest's power state, then keep both going on their timers."""
        report = await self.reconcile()
        await self.sync_power(full=True)
        self._loops = [asyncio.create_task(self._every(self.power_sync_s, self.sync_power), name="power-sync"),
                       asyncio.create_task(self._every(self.reconcile_s, self.reconcile), name="reconcile")]
        return report

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []

    async def _every(self, interval_s: float, fn: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await fn()
            except (BusError, DriverError) as exc:
                log.warning("%s on %s failed: %s", getattr(fn, "__name__", fn), self.host, exc)


def _report(uuid: str, status: GuestStatus) -> GuestPower:
    message = ""
    if status.reason in ("crashed", "failed"):
        message = f"the guest died unexpectedly (hypervisor: {status.power.name.lower()}, reason {status.reason})"
    return GuestPower(instance_uuid=uuid, power_state=int(status.power), reason=status.reason, message=message)
