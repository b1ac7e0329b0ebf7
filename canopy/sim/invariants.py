"""What must hold at the end of every run, checked against the database and the agents themselves.

    servers_settled   every server ACTIVE, SHUTOFF or deleted, or ERROR with a fault
    capacity          each host's claims equal the sum of its servers' flavors, and fit the host
    ips_unique        no address allocated twice
    no_leaked_ports   no port still bound to a deleted server
    guests            each host holds exactly the guests the database puts there, in the power state recorded
    flows             each agent's switch holds exactly what the compiler gives for the database's state
    counts            the report's counts equal the database's
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from canopy.agent.virt.base import PowerState
from canopy.db import tables_cell as c
from canopy.db.engine import Databases

RUNNING, SHUTDOWN = int(PowerState.RUNNING), int(PowerState.SHUTDOWN)
MAX_EXAMPLES = 5


@dataclass
class Check:
    """One invariant's outcome, with a few examples of what broke it."""

    name: str
    ok: bool = True
    checked: int = 0
    violations: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, example: str) -> None:
        self.ok = False
        self.violations += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)


def _rows(dbs: Databases, cell: str, query: Any) -> list[dict[str, Any]]:
    with dbs.cell(cell).primary.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def servers_settled(dbs: Databases, cell: str, projects: list[str]) -> Check:
    i, f = c.instances.c, c.instance_faults.c
    check = Check("servers_settled")
    rows = _rows(dbs, cell, select(i.uuid, i.vm_state, i.task_state).where(
        i.deleted.is_(False), i.project_id.in_(projects)))
    faulted = {r["instance_uuid"] for r in _rows(dbs, cell, select(f.instance_uuid).distinct())}
    for r in rows:
        check.checked += 1
        if r["vm_state"] in ("active", "stopped") and r["task_state"] is None:
            continue
        if r["vm_state"] == "error" and r["uuid"] in faulted:
            continue
        check.fail(f"{r['uuid']}: {r['vm_state']}/{r['task_state']}")
    return check


def capacity(dbs: Databases, cell: str) -> Check:
    h, i = c.hosts.c, c.instances.c
    check = Check("capacity")
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in _rows(dbs, cell, select(i.host, i.flavor).where(i.deleted.is_(False), i.host.is_not(None))):
        fl = r["flavor"] or {}
        u = used[r["host"]]
        u[0] += int(fl.get("vcpus", 0))
        u[1] += int(fl.get("ram", 0))
        u[2] += int(fl.get("disk", 0)) + int(fl.get("ephemeral", 0) or 0)
    for r in _rows(dbs, cell, select(h.name, h.vcpus_used, h.memory_mb_used, h.local_gb_used, h.memory_mb,
                                     h.local_gb)):
        check.checked += 1
        claims = [r["vcpus_used"], r["memory_mb_used"], r["local_gb_used"]]
        if claims != used.get(r["name"], [0, 0, 0]):
            check.fail(f"{r['name']}: claims {claims} != servers {used.get(r['name'], [0, 0, 0])}")
        elif r["memory_mb_used"] > r["memory_mb"] or r["local_gb_used"] > r["local_gb"]:
            check.fail(f"{r['name']}: over capacity {claims}")
    return check


def ips_unique(dbs: Databases, cell: str) -> Check:
    a = c.ip_allocations.c
    check = Check("ips_unique")
    for r in _rows(dbs, cell, select(a.ip_address, func.count().label("n")).group_by(a.ip_address)):
        check.checked += 1
        if r["n"] > 1:
            check.fail(f"{r['ip_address']} allocated {r['n']} times")
    return check


def no_leaked_ports(dbs: Databases, cell: str) -> Check:
    p, i = c.ports.c, c.instances.c
    check = Check("no_leaked_ports")
    live = {r["uuid"] for r in _rows(dbs, cell, select(i.uuid).where(i.deleted.is_(False)))}
    for r in _rows(dbs, cell, select(p.id, p.device_id).where(p.device_owner.like("compute:%"))):
        check.checked += 1
        if r["device_id"] not in live:
            check.fail(f"port {r['id']} of gone server {r['device_id']}")
    return check


def guests(dbs: Databases, cell: str, states: dict[str, Any]) -> Check:
    i = c.instances.c
    check = Check("guests")
    want: dict[str, dict[str, str]] = defaultdict(dict)
    for r in _rows(dbs, cell, select(i.uuid, i.host, i.vm_state).where(i.deleted.is_(False), i.host.is_not(None))):
        want[r["host"]][r["uuid"]] = r["vm_state"]
    for host, st in states.items():
        check.checked += 1
        have = st["guests"]
        for uuid, vm_state in want.get(host, {}).items():
            power = have.get(uuid)
            if vm_state == "error":
                continue  # a failed build may or may not have left a guest; its fault says why
            if power is None:
                check.fail(f"{host}: {vm_state} server {uuid} has no guest")
            elif (vm_state == "active") != (power == RUNNING):
                check.fail(f"{host}: {vm_state} server {uuid} has a guest in power state {power}")
        for uuid in set(have) - set(want.get(host, {})):
            check.fail(f"{host}: guest {uuid} of no server on this host")
    return check


def flows(dbs: Databases, cell: str, states: dict[str, Any], uplinks: dict[str, int]) -> Check:
    """Each host's flow digest against the compiler's program for the database's state of that host."""
    from canopy.agent.net.compiler import compile_host
    from canopy.agent.net.state import state_of
    from canopy.network.desired import Topology, full_state

    check = Check("flows")

    async def expected_all() -> dict[str, str]:
        topo, out = Topology(), {}
        for host in states:
            sync = await full_state(dbs, cell, host, topo)
            program = compile_host(state_of(sync, uplinks).host_state())
            lines = sorted(f"{k} {cookie} {actions}" for k, (cookie, actions) in program.flows.items())
            out[host] = hashlib.sha1("\n".join(lines).encode()).hexdigest()
        return out

    expected = asyncio.run(expected_all())
    for host, st in states.items():
        check.checked += 1
        if st["flows"] != expected[host]:
            check.fail(f"{host}: {st['n_flows']} flows differ from the compiler's (synced={st['synced']})")
    return check


def counts(dbs: Databases, cell: str, projects: list[str], report: dict[str, Any]) -> Check:
    """The report's boots and live servers equal the database's."""
    i = c.instances.c
    check = Check("counts")
    rows = _rows(dbs, cell, select(i.deleted, func.count().label("n")).where(i.project_id.in_(projects))
                 .group_by(i.deleted))
    by = Counter({bool(r["deleted"]): r["n"] for r in rows})
    db_boots, db_live = by[True] + by[False], by[False]
    check.checked = 2
    if db_boots != report["boots"]:
        check.fail(f"report boots {report['boots']} != database {db_boots}")
    if db_live != report["servers_live"]:
        check.fail(f"report live servers {report['servers_live']} != database {db_live}")
    return check


def unchanged_since(dbs: Databases, cell: str, before: dict[str, str]) -> Check:
    """After a power event: every server that had settled before it is in the same state (it was not
    deleted, failed or stopped by the restart)."""
    i = c.instances.c
    check = Check("unchanged_by_storm")
    now = {r["uuid"]: (r["vm_state"], r["deleted"]) for r in _rows(dbs, cell, select(i.uuid, i.vm_state, i.deleted)
                                                                 .where(i.uuid.in_(list(before))))}
    for uuid, vm_state in before.items():
        check.checked += 1
        state, deleted = now.get(uuid, ("missing", True))
        if deleted or state != vm_state:
            check.fail(f"{uuid}: {vm_state} before the power event, {state}{' (deleted)' if deleted else ''} after")
    return check
