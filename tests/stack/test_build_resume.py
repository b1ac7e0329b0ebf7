"""Builds survive a conductor's death: a conductor killed mid-build (its runs stopped abruptly, its leases
left as they were) is replaced by a new life of the same name, which takes its leases back at once and
resumes every build to ACTIVE; a conductor of another name takes them over once the leases expire.

The builds die at each step: after the scheduler claimed (the reply never arrived), after networking
made the ports (spawn never asked), and after the host started the guest (its reply never arrived). The
resumed builds find the claim, the ports and the guest, and make none of them twice."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from canopy.clock import Clock
from canopy.conductor.service import Conductor
from canopy.db import tables_cell as c
from canopy.rpc.base import Target
from canopy.rpc.calls import SelectHost, SpawnInstance
from tests.clouds import V, server_body, wait_for_server

BOOTS = 9
# Where each build dies, in turn: (message kind, whether the host ran it before the conductor died).
DEATHS = [(SelectHost, True), (SpawnInstance, False), (SpawnInstance, True)]


class DyingBus:
    """The bus as a conductor about to die sees it: a build's call at its chosen step never comes back."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.order: dict[str, int] = {}
        self.hung: set[str] = set()
        self.forever = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    async def call(self, target: Target, msg: Any, timeout: float | None = None) -> Any:
        uuid = getattr(msg, "instance_uuid", None) or getattr(getattr(msg, "instance", None), "uuid", None)
        if isinstance(msg, SelectHost | SpawnInstance) and uuid:
            kind, ran = DEATHS[self.order.setdefault(uuid, len(self.order)) % len(DEATHS)]
            if isinstance(msg, kind):
                if ran:
                    await self.bus.call(target, msg, timeout)
                self.hung.add(uuid)
                await self.forever.wait()
        return await self.bus.call(target, msg, timeout)


class LaterClock(Clock):
    """The real clock moved on by `offset_s` (a conductor that comes up after the leases ran out)."""

    def __init__(self, offset_s: float) -> None:
        self.offset = dt.timedelta(seconds=offset_s)

    def now(self) -> dt.datetime:
        return super().now() + self.offset


async def kill(conductor: Conductor) -> None:
    """Stop a conductor as SIGKILL would: its runs stop where they are, no lease is released or failed."""
    for task in [*conductor.active_runs.values(), *conductor._running, *conductor._loops]:
        task.cancel()
    await asyncio.gather(*conductor.active_runs.values(), *conductor._running, *conductor._loops,
                         return_exceptions=True)
    conductor._loops = []
    await conductor.netsync.stop()
    conductor.bus.unserve(Target("conductor"))
    conductor.bus.unserve(Target("conductor", conductor.name))


async def _doomed_builds(stack: Any, name: str) -> tuple[list[str], Conductor]:
    """Boot BOOTS servers on a conductor named `name` that dies at each build's chosen step."""
    await kill(stack.conductor)  # the stack's own conductor is gone: the doomed one takes every build
    bus = DyingBus(stack.cloud.bus)
    doomed = Conductor(_with_bus(stack.cloud, bus), name=name)
    await doomed.start()
    sids = []
    for n in range(BOOTS):
        resp = await stack.api.post("/compute/v2.1/servers", json=server_body(name=f"doomed-{n}"), headers=V)
        assert resp.status_code == 202, resp.text
        sids.append(resp.json()["server"]["id"])
    for _ in range(500):
        if len(bus.hung) == BOOTS:
            break
        await asyncio.sleep(0.02)
    assert len(bus.hung) == BOOTS, f"only {len(bus.hung)} builds reached their step"
    await kill(doomed)
    return sids, doomed


def _with_bus(cloud: Any, bus: Any) -> Any:
    import dataclasses

    return dataclasses.replace(cloud, bus=bus)


async def _check_nothing_doubled_or_leaked(stack: Any, sids: list[str]) -> None:
    for sid in sids:
        server = await wait_for_server(stack.api, sid, {"ACTIVE", "ERROR"}, timeout=30)
        assert server["status"] == "ACTIVE", server.get("fault")
        assert server.get("fault") is None
    guests = Counter(uuid for d in stack.drivers.values() for uuid in d.guests)
    assert guests == Counter(sids), "every server has exactly one guest"
    await _check_claims(stack)

    def counts(conn: Any) -> tuple[Any, Any, Any]:
        ports = dict(conn.execute(select(c.ports.c.device_id, func.count()).group_by(c.ports.c.device_id)).all())
        ips = conn.execute(select(func.count()).select_from(c.ip_allocations)).scalar()
        tasks = conn.execute(select(func.count()).select_from(c.tasks)).scalar()
        return ports, ips, tasks

    ports, ips, tasks = await stack.cloud.dbs.default_cell.read(counts)
    assert ports == dict.fromkeys(sids, 1), "one port per server, none made twice"
    assert ips == len(sids) and tasks == 0


async def _check_claims(stack: Any) -> None:
    """Each host's counters are the sum of the flavors of the instances it holds (none leaked, none doubled)."""

    def read(conn: Any) -> tuple[dict[str, tuple[int, int, int, int]], dict[str, tuple[int, int, int, int]]]:
        i, h = c.instances.c, c.hosts.c
        held: dict[str, tuple[int, int, int, int]] = {}
        for host, flavor in conn.execute(select(i.host, i.flavor).where(i.host.is_not(None), i.deleted.is_(False))):
            v, r, d, n = held.get(host, (0, 0, 0, 0))
            held[host] = (v + flavor["vcpus"], r + flavor["ram"], d + flavor["disk"], n + 1)
        counted = {row.name: (row.vcpus_used, row.memory_mb_used, row.local_gb_used, row.running_vms)
                   for row in conn.execute(select(h.name, h.vcpus_used, h.memory_mb_used, h.local_gb_used,
                                                  h.running_vms))}
        return counted, held

    counted, held = await stack.cloud.dbs.default_cell.read(read)
    assert counted == {name: held.get(name, (0, 0, 0, 0)) for name in counted}


async def test_a_conductor_killed_mid_build_resumes_every_build_when_it_restarts(stack: Any) -> None:
    sids, doomed = await _doomed_builds(stack, "conductor-x")
    leases = await stack.cloud.dbs.default_cell.read(lambda conn: conn.execute(
        select(c.tasks.c.lease_owner, c.tasks.c.lease_expires_at)).all())
    assert len(leases) == BOOTS and {owner for owner, _ in leases} == {"conductor-x"}
    assert min(until for _, until in leases) > stack.cloud.clock.now() + dt.timedelta(seconds=30)

    again = stack.conductor = Conductor(stack.cloud, name="conductor-x")  # its next life, on the same database
    await again.start()  # takes back its leases at once: the clock has not moved, the leases are live
    await _check_nothing_doubled_or_leaked(stack, sids)


async def test_another_conductor_takes_over_a_dead_ones_builds_after_the_lease(stack: Any) -> None:
    sids, _ = await _doomed_builds(stack, "conductor-x")
    clock = LaterClock(0)
    other = stack.conductor = Conductor(stack.cloud, name="conductor-y", clock=clock)
    await other.start()
    assert await other.take_back_own_tasks() == 0
    assert await other.sweep() == 0  # the dead one's leases are live: nobody may take them yet
    clock.offset = dt.timedelta(seconds=stack.settings.conductor.lease_s + 1)
    assert await other.sweep() == BOOTS
    await _check_nothing_doubled_or_leaked(stack, sids)


async def test_a_host_asked_twice_to_spawn_one_guest_makes_it_once(stack: Any) -> None:
    from canopy.agent.virt.base import PowerState
    from canopy.rpc.calls import InstanceSpec

    agent = stack.agents[0]
    agent.driver.spawn_delay_s = 0.2
    spec = InstanceSpec(uuid="7c0d3b2e-0000-4000-8000-000000000001", name="twice", hostname="twice", project_id="p",
                        vcpus=1, memory_mb=512, disk_gb=1, image_id="")
    # the first ask still spawning when the second comes (its conductor died and a new one resumed)
    first, second = await asyncio.gather(agent.handle(SpawnInstance(instance=spec)),
                                         agent.handle(SpawnInstance(instance=spec)))
    assert first.power_state == second.power_state == 1
    agent.driver.guests[spec.uuid].power = PowerState.SHUTDOWN  # asked again, the host starts the guest it holds
    third = await agent.handle(SpawnInstance(instance=spec))
    assert "adopted" in third.steps[0].details and third.power_state == 1
    assert list(agent.driver.guests) == [spec.uuid] and agent.driver.guests[spec.uuid].boots == 2
