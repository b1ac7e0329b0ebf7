"""A full sync is a snapshot read before it arrives: changes sent after that read (a boot's port, a
delete) may reach the agent first, and must not be lost under the snapshot. Found by the simulator's storm
(every agent restarts at once: one host's switch missed a port's flows until the next full sync); here the
interleaving is forced: the change is delivered while the agent's request for a full sync is on its way."""

from __future__ import annotations

import asyncio

import pytest

from canopy.agent.net.compiler import compile_host
from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.agent.net.state import state_of
from canopy.rpc.calls import NetPort, NetSegment, NetworkSync

FLAT = NetSegment(network_id="flat", network_type="flat", physical_network="public")


def port(n: int, rev: float = 1.0) -> NetPort:
    return NetPort(id=f"p{n}", network_id="flat", mac_address=f"fa:16:3e:00:01:{n:02x}", ofport=100 + n,
                   fixed_ips=[f"10.1.0.{n}"], rev=rev)


def full(*ports: NetPort) -> NetworkSync:
    return NetworkSync(host="me", full=True, segments=[FLAT], ports=list(ports), complete_networks=["flat"])


def delta(ports: tuple[NetPort, ...] | list[NetPort] = (), removed: tuple[str, ...] = (), sent_at: float = 0.0
          ) -> NetworkSync:
    return NetworkSync(host="me", segments=[FLAT] if ports else [], ports=list(ports), removed_ports=list(removed),
                       sent_at=sent_at)


class Conductor:
    """Answers a full sync with a snapshot the test releases when it wants (after delivering changes)."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.snapshot: asyncio.Future[NetworkSync] | None = None

    async def request(self) -> NetworkSync:
        self.snapshot = asyncio.get_running_loop().create_future()
        self.asked.set()
        return await self.snapshot


async def crossing(before: NetworkSync | None, snapshot: NetworkSync, changes: list[NetworkSync]
                   ) -> tuple[NetNode, FakeApplier]:
    """An agent (synced with `before`, or just restarted) asks for a full sync; `changes` arrive while the
    request is on its way; then the (older) snapshot."""
    applier, conductor = FakeApplier(), Conductor()
    node = NetNode("me", applier, request_sync=conductor.request)
    if before is not None:
        await node.handle(before)
    sync = asyncio.create_task(node.sync_full())
    await conductor.asked.wait()
    for change in changes:
        await node.handle(change)
    assert conductor.snapshot is not None
    conductor.snapshot.set_result(snapshot)
    await sync
    return node, applier


def flows_of(truth: NetworkSync) -> dict[str, tuple[int, str]]:
    return compile_host(state_of(truth).host_state()).flows


Case = tuple[str, NetworkSync | None, NetworkSync, list[NetworkSync], NetworkSync]
CASES: list[Case] = [
    # (what, state before, the snapshot, changes that cross it, what the database holds at the end)
    ("a boot on a restarted agent", None, full(port(1)), [delta([port(2, rev=5.0)])], full(port(1), port(2))),
    ("a delete on a restarted agent", None, full(port(1), port(2)), [delta(removed=("p2",), sent_at=9.0)],
     full(port(1))),
    ("a boot during a periodic full sync", full(port(1)), full(port(1)), [delta([port(2, rev=5.0)])],
     full(port(1), port(2))),
    ("a delete during a periodic full sync", full(port(1), port(2)), full(port(1), port(2)),
     [delta(removed=("p2",), sent_at=9.0)], full(port(1))),
    ("an older update the snapshot supersedes", None, full(port(1, rev=7.0)), [delta([port(1, rev=3.0)])],
     full(port(1, rev=7.0))),
    ("a removal older than the port's return", None, full(port(1), port(2, rev=8.0)),
     [delta(removed=("p2",), sent_at=6.0)], full(port(1), port(2, rev=8.0))),
]


@pytest.mark.parametrize(("what", "before", "snapshot", "changes", "truth"), CASES, ids=[c[0] for c in CASES])
async def test_changes_that_cross_a_full_sync_are_not_lost(
        what: str, before: NetworkSync | None, snapshot: NetworkSync, changes: list[NetworkSync],
        truth: NetworkSync) -> None:
    node, applier = await crossing(before, snapshot, changes)
    assert sorted(node.state.ports) == sorted(p.id for p in truth.ports), what
    assert applier.table.flows == flows_of(truth), what


async def test_changes_are_kept_only_while_a_full_sync_is_awaited() -> None:
    node, _ = await crossing(None, full(port(1)), [delta([port(2, rev=5.0)])])
    assert node.state.since_asked == [] and node.state.awaited_fulls == 0
    await node.handle(delta(removed=("p2",), sent_at=9.0))
    assert node.state.since_asked == []


async def test_too_many_crossing_changes_ask_for_another_full_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("canopy.agent.net.state.MAX_REPLAY", 2)
    applier, conductor = FakeApplier(), Conductor()
    node = NetNode("me", applier, request_sync=conductor.request)
    sync = asyncio.create_task(node.sync_full())
    await conductor.asked.wait()
    for n in (2, 3, 4):
        await node.handle(delta([port(n, rev=5.0)]))
    first = conductor.snapshot
    assert first is not None
    conductor.asked.clear()
    first.set_result(full(port(1)))
    await sync
    await conductor.asked.wait()  # the snapshot cannot be trusted: another one is asked for
    second = conductor.snapshot
    assert second is not None and second is not first
    second.set_result(full(port(1), port(2), port(3), port(4)))
    await node.wait_applied(lambda: len(node.state.ports) == 4)
    assert applier.table.flows == flows_of(full(port(1), port(2), port(3), port(4)))


async def test_a_failed_full_sync_stops_keeping_changes() -> None:
    async def failing() -> NetworkSync:
        raise TimeoutError("no conductor")

    node = NetNode("me", FakeApplier(), request_sync=failing)
    with pytest.raises(TimeoutError):
        await node.sync_full()
    assert node.state.awaited_fulls == 0
    await node.handle(delta([port(2, rev=5.0)]))
    assert node.state.since_asked == []
