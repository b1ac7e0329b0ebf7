"""An agent's view of its own host: cheap checks run every heartbeat interval, whose failures travel
with the heartbeat (`Heartbeat.health`: check name -> short detail) to the conductors, the `services`
table and `/healthcheck/fleet`.

    hypervisor          the driver answers (`wait_ready`: libvirt reconnects if needed, then a
                        getLibVersion round trip; the fake driver unless told `fail_on("wait_ready", …)`)
    switch              Open vSwitch answers (the start-up wait's `ovs-vsctl show`); only with a real switch
    network             a conductor delivered this host's network state (else no flows are loaded)
    disk:instances      free space on the instances path and the image cache path, each at least
    disk:image_cache    `[agent] min_free_disk_gb` (libvirt agents)
    disk:volume_group   the LVM volume group (or thin pool) exists and has that much free (LVM disks)

Each check runs with a timeout and never twice at once: a check still running from an earlier round
(libvirt hung in a call) is waited on again rather than started again, and reported as hung. The
heartbeat waits at most `wait_s` for a round and otherwise sends the last results it has.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from canopy.agent.disk.lvm import LvmBackend
from canopy.agent.net.node import NetNode
from canopy.agent.reconcile import NetNodeHook, NetworkHook, NoNetwork
from canopy.agent.virt.base import VirtDriver

Probe = Callable[[], Awaitable[str]]  # returns what it saw; raises when the check fails
DETAIL_MAX = 200  # characters of a detail: heartbeats stay small


class Unhealthy(Exception):
    """A check ran and found the host wanting; the message is the detail as is."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome: its name, whether it passed, and a short detail."""

    name: str
    ok: bool
    detail: str = ""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    detail = text if isinstance(exc, Unhealthy) else (f"{name}: {text}" if text else name)
    return detail[:DETAIL_MAX]


class HostHealth:
    """The checks of one host and their last results."""

    def __init__(self, probes: dict[str, Probe] | None = None, *, timeout_s: float = 5.0,
                 wait_s: float = 1.0) -> None:
        self.probes: dict[str, Probe] = dict(probes or {})
        self.timeout_s = timeout_s
        self.wait_s = wait_s
        self.results: dict[str, CheckResult] = {}
        self._round: asyncio.Task[list[CheckResult]] | None = None
        self._inflight: dict[str, tuple[asyncio.Task[str], float]] = {}  # name -> (its run, started at)

    def failing(self) -> dict[str, str]:
        """The failing checks of the last round, name -> detail (empty: healthy). Before any round has
        ended, `health` says so: an enrolling host must not look healthy before a check has run."""
        if self.probes and not self.results:
            return {"health": "no health check has completed yet"}
        return {r.name: r.detail for r in self.results.values() if not r.ok}

    async def run(self) -> list[CheckResult]:
        """One round: every check concurrently, each bounded by `timeout_s`; the results are kept."""
        results = await asyncio.gather(*(self._one(name, probe) for name, probe in self.probes.items()))
        self.results = {r.name: r for r in results}
        return results

    async def summary(self) -> dict[str, str]:
        """The failing checks for the next heartbeat: a fresh round if it ends within `wait_s`, else
        the last round's (the round goes on; the next heartbeat gets it)."""
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self.run(), name="health-checks")
        await asyncio.wait({self._round}, timeout=self.wait_s)
        return self.failing()

    async def stop(self) -> None:
        """Cancel the round and any check still running."""
        tasks = [t for t, _ in self._inflight.values()] + ([self._round] if self._round else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()
        self._round = None

    async def _one(self, name: str, probe: Probe) -> CheckResult:
        task, started = self._inflight.get(name) or (None, time.monotonic())
        if task is None:
            task = asyncio.ensure_future(probe())
            self._inflight[name] = (task, started)
        try:
            detail = await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
        except TimeoutError:
            return CheckResult(name, False, f"no answer for {time.monotonic() - started:.0f}s")
        except Exception as exc:
            self._inflight.pop(name, None)
            return CheckResult(name, False, _short(exc))
        self._inflight.pop(name, None)
        return CheckResult(name, True, detail[:DETAIL_MAX])


# -- the checks -------------------------------------------------------------------------------------

def hypervisor_probe(driver: VirtDriver) -> Probe:
    """The driver's hypervisor answers."""

    async def probe() -> str:
        await driver.wait_ready()
        info = driver.host_info()
        return f"{info.hypervisor_type} {info.hypervisor_version} answered"

    return probe


def switch_probe(hook: NetworkHook) -> Probe:
    """Open vSwitch answers, as the agent waits for it on start."""

    async def probe() -> str:
        await hook.wait_ready()
        return "Open vSwitch answered"

    return probe


def has_switch(hook: NetworkHook) -> bool:
    """Whether the hook wires a real switch (the fake applier and NoNetwork have none to check)."""
    if isinstance(hook, NoNetwork):
        return False
    return not isinstance(hook, NetNodeHook) or getattr(hook.node.applier, "vsctl", None) is not None


def network_probe(net: NetNode) -> Probe:
    """The agent's network node holds this host's desired state (a full sync from a conductor came)."""

    async def probe() -> str:
        if not net.state.synced:
            raise Unhealthy("no network state from a conductor yet: this host's flows are not loaded")
        return "network state loaded"

    return probe


def disk_probe(path: Path, min_free_gb: float,
               statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> Probe:
    """At least `min_free_gb` GiB free for unprivileged use on the filesystem holding `path`."""

    async def probe() -> str:
        st = await asyncio.to_thread(statvfs, path)
        free_gb = st.f_bavail * st.f_frsize / (1 << 30)
        if free_gb < min_free_gb:
            raise Unhealthy(f"{free_gb:.1f} GB free on {path}, below {min_free_gb:g} GB")
        return f"{free_gb:.1f} GB free on {path}"

    return probe


def volume_group_probe(lvm: LvmBackend, min_free_gb: float) -> Probe:
    """The LVM volume group (or thin pool) the guests' disks are made in exists and has room."""

    async def probe() -> str:
        free_gb = await lvm.free_bytes() / (1 << 30)
        where = f"volume group {lvm.vg}" + (f", thin pool {lvm.thin_pool}" if lvm.thin_pool else "")
        if free_gb < min_free_gb:
            raise Unhealthy(f"{free_gb:.1f} GB free in {where}, below {min_free_gb:g} GB")
        return f"{free_gb:.1f} GB free in {where}"

    return probe


def agent_probes(driver: VirtDriver, net: NetNode, hook: NetworkHook | None, disks: dict[str, Path],
                 min_free_gb: float) -> dict[str, Probe]:
    """The checks of an agent: its hypervisor, its switch (when it has one), its network state, and
    the free space of each named path (`disks`: name -> path, checked as `disk:<name>`)."""
    probes = {"hypervisor": hypervisor_probe(driver), "network": network_probe(net)}
    hook = hook or NetNodeHook(net)
    if has_switch(hook):
        probes["switch"] = switch_probe(hook)
    for name, path in disks.items():
        probes[f"disk:{name}"] = disk_probe(path, min_free_gb)
    backend = getattr(driver, "disks", None)
    if isinstance(backend, LvmBackend):
        probes["disk:volume_group"] = volume_group_probe(backend, min_free_gb)
    return probes
