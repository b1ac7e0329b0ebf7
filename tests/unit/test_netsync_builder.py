"""The incremental program builder gives exactly what compile_host gives, after any sequence of
messages — neighbors coming, changing, moving and going, stale duplicates, local ports, VXLAN tunnels,
full syncs — and a message about a few neighbors does not start over."""

from __future__ import annotations

import random

import pytest

from canopy.agent.net.builder import ProgramBuilder
from canopy.agent.net.compiler import compile_host
from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.agent.net.state import DesiredState
from canopy.rpc.calls import NetNeighbor, NetPort, NetSegment, NetworkSync

FLAT = NetSegment(network_id="flat", network_type="flat", physical_network="public")
VX = NetSegment(network_id="vx", network_type="vxlan", segmentation_id=77)


def port(n: int, network: str = "flat", rev: float = 1.0, up: bool = True, ip: str | None = None) -> NetPort:
    return NetPort(id=f"local-{n}", network_id=network, mac_address=f"fa:16:3e:00:01:{n:02x}", ofport=100 + n,
                   fixed_ips=[ip or f"10.1.0.{n}"], rev=rev, admin_state_up=up)


def neighbor(n: int, network: str = "flat", rev: float = 1.0, ip: str | None = None, host: int = 0) -> NetNeighbor:
    return NetNeighbor(port_id=f"nb-{n}", network_id=network, mac_address=f"fa:16:3e:00:02:{n % 256:02x}",
                       ips=[ip or f"10.2.{n // 256}.{n % 256}"], host=f"h{host or n % 7}",
                       tunnel_ip=f"192.0.2.{(host or n % 7) + 1}", rev=rev)


def same(builder: ProgramBuilder, state: DesiredState, changed: set[str] | None) -> None:
    program, _ = builder.build(state, changed)
    expected = compile_host(state.host_state())
    assert program.flows == expected.flows
    assert program.meters == expected.meters
    assert program.ports == expected.ports


def test_a_neighbor_change_updates_a_fragment_and_its_diff_is_exact() -> None:
    state = DesiredState("me", tunnel_ip="192.0.2.100")
    state.merge(NetworkSync(host="me", full=True, segments=[FLAT], ports=[port(1)],
                            neighbors=[neighbor(i) for i in range(50)], complete_networks=["flat"]))
    builder = ProgramBuilder()
    same(builder, state, None)
    before = dict(builder.program.flows)  # type: ignore[union-attr]
    state.merge(NetworkSync(host="me", neighbors=[neighbor(50)], removed_neighbors=["nb-3"]))
    program, diff = builder.build(state, {"nb-50", "nb-3"})
    assert diff is not None and builder.rebuilds == 1
    assert program.flows == compile_host(state.host_state()).flows
    assert list(diff.add) == [k for k in program.flows if k.endswith("arp_tpa=10.2.0.50")]
    assert list(diff.delete) == [k for k in before if k.endswith("arp_tpa=10.2.0.3")]


@pytest.mark.parametrize("seed", range(12))
def test_any_sequence_of_messages_builds_what_compile_host_builds(seed: int) -> None:
    rng = random.Random(seed)
    state = DesiredState("me", tunnel_ip="192.0.2.1")  # h0's address: a neighbor there adds no tunnel
    builder = ProgramBuilder()
    state.merge(NetworkSync(host="me", full=True, segments=[FLAT, VX], ports=[port(1), port(2, "vx")],
                            neighbors=[neighbor(i, rng.choice(["flat", "vx"])) for i in range(30)],
                            complete_networks=["flat", "vx"]))
    same(builder, state, None)
    rev = 2.0
    for _ in range(60):
        rev += 1
        kind = rng.random()
        changed: set[str] | None = set()
        if kind < 0.45:  # neighbors come, change address or host, or collide with another's address
            news = [neighbor(rng.randrange(60), rng.choice(["flat", "vx"]), rev,
                             ip=rng.choice([None, None, "10.2.0.7", "10.1.0.1"]), host=rng.randrange(1, 9))
                    for _ in range(rng.randrange(1, 5))]
            msg = NetworkSync(host="me", neighbors=news)
        elif kind < 0.7:
            msg = NetworkSync(host="me", removed_neighbors=[f"nb-{rng.randrange(60)}" for _ in range(3)])
        elif kind < 0.8:  # a local port comes, goes down or up, or a neighbor moves here
            n = rng.randrange(1, 5)
            msg = NetworkSync(host="me", segments=[FLAT, VX],
                              ports=[port(n, rng.choice(["flat", "vx"]), rev, up=rng.random() < 0.8)])
            if rng.random() < 0.3:
                moved = rng.randrange(60)
                msg = NetworkSync(host="me", segments=[FLAT], ports=[NetPort(
                    id=f"nb-{moved}", network_id="flat", mac_address="fa:16:3e:00:03:01", ofport=200 + moved,
                    fixed_ips=[f"10.3.0.{moved}"], rev=rev)])
        elif kind < 0.9:
            msg = NetworkSync(host="me", removed_ports=[f"local-{rng.randrange(2, 5)}"], sent_at=rev)
        else:  # a full sync, or a network's complete neighbor list
            changed = None
            msg = NetworkSync(host="me", complete_networks=["flat"], neighbors=[neighbor(i, rev=rev) for i in range(9)])
        state.merge(msg)
        if changed is not None:
            changed.update(n.port_id for n in msg.neighbors)
            changed.update(msg.removed_neighbors)
            changed.update(p.id for p in msg.ports)
        same(builder, state, changed)
    assert builder.rebuilds < 45  # most messages were increments


async def test_the_node_applies_neighbor_changes_as_diffs_without_starting_over() -> None:
    applier = FakeApplier()
    full = NetworkSync(host="me", full=True, segments=[FLAT], ports=[port(1)],
                       neighbors=[neighbor(i) for i in range(200)], complete_networks=["flat"])

    async def request() -> NetworkSync:
        return full

    node = NetNode("me", applier, request_sync=request)
    await node.sync_full()
    for i in range(200, 220):
        await node.handle(NetworkSync(host="me", neighbors=[neighbor(i)]))
    await node.handle(NetworkSync(host="me", removed_neighbors=["nb-5"]))
    assert node.builder.rebuilds == 1 and applier.replaces == 1 and applier.changes == 21
    assert applier.table.flows == compile_host(node.state.host_state()).flows
