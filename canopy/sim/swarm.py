"""An agent process of the simulator: many real agents (canopy.agent.service.Agent, the fake driver, the
fake network node) in one process, sharing its bus connection, each with its own host record, heartbeat,
capacity and health reports, addressed by its own host name.

    python -m canopy.sim.swarm SPEC.json

SPEC names the configuration file, the hosts (name, data center, rack), the stats file and a folder for
answers. Signals drive the workloads that act on hosts:
    SIGUSR1   a power event: every agent stops, its guests lose power and its switch its flows; new agents
              start and reconcile (guests that should run are started again, flows reapplied)
    SIGUSR2   write each host's guests and a digest of its flows to <answers>/state-<index>.json
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.agent.reconcile import HostReconciler, NetNodeHook
from canopy.agent.service import Agent
from canopy.agent.virt.base import PowerState
from canopy.agent.virt.fake import FakeDriver
from canopy.config import Settings, load_settings
from canopy.rpc.base import Transport
from canopy.sim import probe

log = logging.getLogger("canopy.sim.swarm")
REGISTER_BATCH = 200  # registrations in flight at once per process: more would only queue on the database
TICK_S = 0.1


class Swarm:
    """The agents of one process, with one heartbeat task for all of them."""

    def __init__(self, settings: Settings, bus: Transport, hosts: list[list[str]], faults: dict[str, Any]) -> None:
        self.settings, self.bus, self.hosts, self.faults = settings, bus, hosts, faults
        self.rng = random.Random(hash(hosts[0][0]) if hosts else 0)  # one generator, not one per agent
        self.drivers: dict[str, FakeDriver] = {}
        self.agents: list[Agent] = []
        self.beats = 0
        self.silent: set[str] = set()
        self.restarts = 0
        self._beater: asyncio.Task[None] | None = None

    def _agent(self, name: str, dc: str, rack: str, reconcile: bool) -> Agent:
        s, fake = self.settings, self.settings.fake
        driver = self.drivers.get(name)
        if driver is None:
            driver = self.drivers[name] = FakeDriver(name, vcpus=fake.vcpus, memory_mb=fake.memory_mb,
                                                     local_gb=fake.disk_gb, spawn_delay_s=fake.spawn_delay_s,
                                                     op_delay_s=fake.op_delay_s)
        net = NetNode(name, FakeApplier(), reconcile_s=s.network.reconcile_s, full_sync_s=s.network.full_sync_s,
                      rng=self.rng)
        reconciler = None
        if reconcile:  # after a power event: the reconciler brings back what should run
            reconciler = HostReconciler(name, driver, self.bus, net=NetNodeHook(net),
                                        power_sync_s=s.agent.power_sync_s, reconcile_s=s.agent.reconcile_s)
        return Agent(name, driver, self.bus, heartbeat_s=s.agent.heartbeat_s, availability_zone="nova",
                     datacenter=dc, rack=rack, rng=self.rng, net=net, reconciler=reconciler, own_heartbeat=False)

    async def start(self, reconcile: bool = False) -> None:
        """Create and register every agent (in batches), then beat for all of them."""
        self.agents = [self._agent(name, dc, rack, reconcile) for name, dc, rack in self.hosts]
        self._apply_faults()
        for i in range(0, len(self.agents), REGISTER_BATCH):
            await asyncio.gather(*(a.start(register_timeout_s=600) for a in self.agents[i:i + REGISTER_BATCH]))
            probe.set_extra(agents_held=i + len(self.agents[i:i + REGISTER_BATCH]))
        self._beater = asyncio.create_task(self._beat_all(), name="heartbeats")

    def _apply_faults(self) -> None:
        """A fraction of hosts fail spawns, another goes silent (stops heartbeating)."""
        fail = float(self.faults.get("spawn_fail_fraction", 0.0))
        silent = float(self.faults.get("silent_fraction", 0.0))
        chooser = random.Random(11)
        for name in self.drivers:
            roll = chooser.random()
            if roll < fail:
                self.drivers[name].fail_on("spawn", "simulated host fault: spawn failed", times=1_000_000)
            elif roll < fail + silent:
                self.silent.add(name)

    async def _beat_all(self) -> None:
        """Every agent beats once per heartbeat interval, spread evenly over it, from this one task."""
        slots = max(1, round(self.settings.agent.heartbeat_s / TICK_S))
        tick = self.rng.randrange(slots)
        while True:
            t0 = time.monotonic()
            due = [a for a in self.agents[tick % slots::slots] if a.host not in self.silent]
            await asyncio.gather(*(a.beat() for a in due), return_exceptions=True)
            self.beats += len(due)
            probe.set_extra(heartbeats_sent=self.beats, agents_held=len(self.agents), restarts=self.restarts)
            tick += 1
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - t0)))

    async def stop(self) -> None:
        if self._beater is not None:
            self._beater.cancel()
            await asyncio.gather(self._beater, return_exceptions=True)
        for i in range(0, len(self.agents), 500):
            await asyncio.gather(*(a.stop() for a in self.agents[i:i + 500]), return_exceptions=True)

    async def power_event(self) -> None:
        """Every host loses power at once: agents stop, guests go off, switches lose their flows; then every
        agent starts again and reconciles."""
        await self.stop()
        for driver in self.drivers.values():
            for guest in driver.guests.values():
                guest.power, guest.reason = PowerState.SHUTDOWN, "power lost"
        self.restarts += 1
        await self.start(reconcile=True)

    def host_states(self) -> dict[str, Any]:
        """Each host's guests (uuid -> power state) and the digest of the flows its switch holds."""
        out = {}
        for agent in self.agents:
            applier = agent.net.applier
            flows = sorted(f"{k} {c} {a}" for k, (c, a) in applier.table.flows.items())  # type: ignore[attr-defined]
            out[agent.host] = {"guests": {u: int(g.power) for u, g in self.drivers[agent.host].guests.items()},
                               "flows": hashlib.sha1("\n".join(flows).encode()).hexdigest(), "n_flows": len(flows),
                               "synced": agent.net.program is not None}
        return out


async def run(spec: dict[str, Any]) -> None:
    """Start the swarm, answer signals, stop on SIGTERM."""
    from canopy.rpc.factory import make_transport

    settings = load_settings()
    stats, answers = Path(spec["stats"]), Path(spec["answers"])
    probe.start_writer(stats, f"agents-{spec['index']}")
    bus = make_transport(settings.bus, bind=False)
    await bus.start()
    swarm = Swarm(settings, bus, spec["hosts"], spec.get("faults", {}))
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    busy: set[asyncio.Task[Any]] = set()

    def later(coro: Any) -> None:
        task = loop.create_task(coro)
        busy.add(task)
        task.add_done_callback(busy.discard)

    async def dump() -> None:
        path = answers / f"state-{spec['index']}.json"
        path.with_suffix(".tmp").write_text(json.dumps(swarm.host_states()))
        path.with_suffix(".tmp").replace(path)

    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: later(swarm.power_event()))
    loop.add_signal_handler(signal.SIGUSR2, lambda: later(dump()))
    await swarm.start()
    from canopy.cli import tune_gc

    tune_gc()
    if os.environ.get("CANOPY_SIM_TRACEMALLOC"):
        _write_allocations(answers / f"tracemalloc-{spec['index']}.txt", len(swarm.agents))
    (answers / f"ready-{spec['index']}").write_text(str(len(swarm.agents)))
    await done.wait()
    await swarm.stop()
    await bus.close()
    probe.write_now(stats, f"agents-{spec['index']}")


def _write_allocations(path: Path, agents: int) -> None:
    """Where the agents' memory went, by line (started with CANOPY_SIM_TRACEMALLOC=1)."""
    import tracemalloc

    snap = tracemalloc.take_snapshot()
    top = snap.statistics("lineno")
    total = sum(s.size for s in top)
    lines = [f"{agents} agents: {total / 1024:.0f} KiB traced, {total / max(agents, 1) / 1024:.1f} KiB per agent"]
    lines += [f"{s.size / max(agents, 1):8.0f} B/agent  {s.count:8d}  {s.traceback}" for s in top[:40]]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    """`python -m canopy.sim.swarm SPEC.json`."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    os.environ["CANOPY_CONFIG"] = spec["config"]
    if os.environ.get("CANOPY_SIM_TRACEMALLOC"):
        import tracemalloc

        tracemalloc.start()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run(spec))


if __name__ == "__main__":
    main()
