"""An agent restart on a host with 1,000 ports, against a real Open vSwitch: the new process loads the
same flows (identical, not even re-added), wiring untouched, and a watcher polling the switch throughout
never sees the table shrink, let alone go empty. A change made while the agent was away is applied
without a gap either."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from canopy.agent.net import tables as t
from canopy.agent.net.applier import OvsApplier
from canopy.agent.net.node import NetNode
from canopy.agent.net.privateovs import PrivateOvs
from canopy.rpc.calls import NetPort, NetSegment, NetworkSync
from tests.integration.ovs_support import start_private_ovs

PORTS = 1000
BRIDGE = "br-rs"


@pytest.fixture(scope="module")
def ovs() -> Iterator[PrivateOvs]:
    yield from start_private_ovs()


def full_state(count: int) -> NetworkSync:
    seg = NetSegment(network_id="public", network_type="flat", physical_network="public")
    ports = [NetPort(id=f"{i:08x}-0000-4000-8000-000000000000", network_id="public", ofport=t.FIRST_VM_OFPORT + i,
                     mac_address=f"fa:16:3e:00:{i >> 8:02x}:{i & 255:02x}",
                     fixed_ips=[f"198.51.{100 + (i >> 8)}.{i & 255}"], rev=1.0) for i in range(count)]
    return NetworkSync(host="hv-r", full=True, segments=[seg], ports=ports, complete_networks=["public"])


def node(ovs: PrivateOvs, state: list[NetworkSync]) -> NetNode:
    async def request() -> NetworkSync:
        return state[0]

    applier = OvsApplier(BRIDGE, rundir=ovs.rundir, datapath_type="dummy", tap_type="dummy")
    return NetNode("hv-r", applier, request_sync=request, reconcile_s=3600)


class Watcher(threading.Thread):
    """Polls the bridge's flow count as fast as ovs-ofctl answers."""

    def __init__(self, ovs: PrivateOvs) -> None:
        super().__init__(daemon=True)
        self.ovs, self.counts, self.running = ovs, [], True

    def run(self) -> None:
        while self.running:
            out = self.ovs.ofctl("dump-aggregate", BRIDGE)
            self.counts.append(int(re.search(r"flow_count=(\d+)", out)[1]))  # type: ignore[index]

    def stop(self) -> list[int]:
        self.running = False
        self.join(10)
        return self.counts


def flows(ovs: PrivateOvs) -> list[str]:
    return sorted(line.strip() for line in ovs.ofctl("dump-flows", "--no-stats", BRIDGE).splitlines()
                  if "priority" in line)


def durations(ovs: PrivateOvs) -> list[float]:
    return [float(m) for m in re.findall(r"duration=([\d.]+)s", ovs.ofctl("dump-flows", BRIDGE))]


async def wait_loaded(n: NetNode) -> None:
    await n.wait_applied(lambda: n.program is not None, timeout=60)


async def test_restart_with_1000_ports_keeps_identical_flows_and_never_empties(ovs: PrivateOvs) -> None:
    desired = [full_state(PORTS)]
    first = node(ovs, desired)
    await first.start()
    await wait_loaded(first)
    before = flows(ovs)
    count = len(before)
    assert count > PORTS * 10
    interfaces = ovs.vsctl("--columns=_uuid,name,ofport", "list", "Interface")
    await first.stop()  # the agent process ends; the switch keeps running

    await asyncio.sleep(0.5)
    restarted_at = time.monotonic()
    watcher = Watcher(ovs)
    watcher.start()
    try:
        second = node(ovs, desired)
        await second.start()
        await wait_loaded(second)
        await asyncio.sleep(0.2)
    finally:
        seen = watcher.stop()
    await second.stop()
    assert seen and min(seen) == count, f"the table shrank during the restart: min {min(seen)} of {count}"
    assert flows(ovs) == before
    ages, since_restart = durations(ovs), time.monotonic() - restarted_at
    assert min(ages) > since_restart  # every flow is older than the restart: nothing was re-added
    assert ovs.vsctl("--columns=_uuid,name,ofport", "list", "Interface") == interfaces


async def test_a_change_made_while_the_agent_was_away_is_applied_without_a_gap(ovs: PrivateOvs) -> None:
    desired = [full_state(PORTS)]
    first = node(ovs, desired)
    await first.start()
    await wait_loaded(first)
    count = len(flows(ovs))
    await first.stop()
    desired[0] = full_state(PORTS - 1)  # one server was deleted meanwhile
    watcher = Watcher(ovs)
    watcher.start()
    try:
        second = node(ovs, desired)
        await second.start()
        await wait_loaded(second)
    finally:
        seen = watcher.stop()
    await second.stop()
    after = flows(ovs)
    gone = f"in_port={t.FIRST_VM_OFPORT + PORTS - 1} "
    assert not [f for f in after if gone in f] and len(after) < count
    assert min(seen) >= len(after) > 0
    wired: Any = ovs.vsctl("--columns=name", "find", "Interface", f"external_ids:canopy-bridge={BRIDGE}")
    assert wired.count("name") == PORTS - 1
