"""Failed builds keep no claims: whatever step a build fails at, and whether or not a delete races it,
afterwards every host's counters are exactly the sum of the flavors of the instances it holds, a failed
server holds no host, no port and no guest.

The simulator found hosts whose claims exceeded their servers: a scheduler's reply lost after its claim
committed (a call timeout) failed the build at scheduling with no host known to the conductor, which
then cleared the instance's host without giving back the claim."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from canopy.conductor import netsync
from canopy.db import tables_cell as c
from canopy.rpc.base import CallTimeout, NoRoute, Target
from canopy.rpc.calls import SelectHost, SpawnInstance
from tests.clouds import V, server_body, wait_for_server
from tests.stack.test_build_resume import _check_claims

# What goes wrong for one build, and where.
FAULTS = ("none", "scheduler_unreachable", "scheduler_reply_lost", "network_fails", "spawn_refused",
          "spawn_reply_lost", "spawn_driver_error")


class FaultyBus:
    """The conductor's bus, failing each build's call as its fault says."""

    def __init__(self, bus: Any, faults: dict[str, str], drivers: dict[str, Any]) -> None:
        self.bus, self.faults, self.drivers = bus, faults, drivers

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    async def call(self, target: Target, msg: Any, timeout: float | None = None) -> Any:
        fault = ""
        if isinstance(msg, SelectHost):
            fault = self.faults.get(msg.instance_uuid, "")
            if fault == "scheduler_unreachable":
                raise NoRoute("nobody serves scheduler")
        elif isinstance(msg, SpawnInstance):
            fault = self.faults.get(msg.instance.uuid, "")
            if fault == "spawn_refused":
                raise NoRoute(f"nobody serves {target}")
            if fault == "spawn_driver_error":  # this host's next spawn: this one (nothing runs in between)
                self.drivers[target.host].fail_on("spawn", "fake: disk image is corrupt")
        reply = await self.bus.call(target, msg, timeout)
        if fault in ("scheduler_reply_lost", "spawn_reply_lost"):
            raise CallTimeout(f"{msg.kind} to {target}: no reply in {timeout}s")
        return reply


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_claims_equal_the_flavors_held_whatever_step_a_build_fails_at(stack: Any, monkeypatch: Any,
                                                                            seed: int) -> None:
    rng = random.Random(seed)
    faults: dict[str, str] = {}
    conductor = stack.conductor
    stack.settings.conductor.no_route_wait_s = 0.0  # an unreachable scheduler or host fails the step at once
    conductor.env.bus = FaultyBus(conductor.env.bus, faults, stack.drivers)
    real_ports_created = netsync.ports_created

    async def ports_created(env: Any, ports: list[Any]) -> None:
        await real_ports_created(env, ports)
        if ports and faults.get(ports[0].device_id) == "network_fails":
            raise RuntimeError("fake network node: could not apply the port's flows")

    monkeypatch.setattr(netsync, "ports_created", ports_created)
    sids, deleted = [], set()
    for n in range(21):
        fault = FAULTS[n % len(FAULTS)] if n < len(FAULTS) else rng.choice(FAULTS)
        flavor = rng.choice(["1", "2"])
        resp = await stack.api.post("/compute/v2.1/servers", json=server_body(name=f"f-{n}", flavorRef=flavor),
                                    headers=V)
        assert resp.status_code == 202, resp.text
        sid = resp.json()["server"]["id"]
        faults[sid] = fault
        sids.append(sid)
        if rng.random() < 0.3:  # a delete racing the build
            await asyncio.sleep(rng.choice([0, 0.001, 0.01]))
            assert (await stack.api.delete(f"/compute/v2.1/servers/{sid}", headers=V)).status_code == 204
            deleted.add(sid)
        if rng.random() < 0.5:
            await wait_for_server(stack.api, sid, {"ACTIVE", "ERROR", "DELETED"})
    for sid in sids:
        await wait_for_server(stack.api, sid, {"DELETED"} if sid in deleted else {"ACTIVE", "ERROR"}, timeout=30)
    await _check_claims(stack)
    instances = await stack.cloud.dbs.default_cell.read(lambda conn: [dict(r) for r in conn.execute(
        select(c.instances.c.uuid, c.instances.c.vm_state, c.instances.c.host, c.instances.c.deleted)).mappings()])
    ports = await stack.cloud.dbs.default_cell.read(lambda conn: Counter(conn.execute(
        select(c.ports.c.device_id)).scalars()))
    guests = Counter(uuid for d in stack.drivers.values() for uuid in d.guests)
    for row in instances:
        uuid, fault = row["uuid"], faults[row["uuid"]]
        if row["deleted"] or row["vm_state"] == "error":
            assert ports[uuid] == 0 and guests[uuid] == 0, (fault, row)
        if row["vm_state"] == "error":
            assert row["host"] is None, (fault, row)
        if fault == "none" and not row["deleted"]:
            assert row["vm_state"] == "active", row
    assert {faults[r["uuid"]] for r in instances if r["vm_state"] == "error"} <= set(FAULTS) - {"none"}
