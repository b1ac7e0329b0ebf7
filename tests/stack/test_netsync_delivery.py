"""How a conductor delivers network state: a boot reads nothing for it; on a flat network without an ARP
responder a boot is one message, to its own host; where hosts keep neighbors (an ARP responder, VXLAN) a
host's first port on a network brings the network's neighbors, the hosts serving it hear of new ports in
coalesced rounds (one cast per such host), every host ends with exactly the flows a full sync gives, and a
lost round heals at the next full sync."""

from __future__ import annotations

import asyncio
from typing import Any

from canopy.agent.net.compiler import compile_host
from canopy.agent.net.state import state_of
from canopy.network import desired
from canopy.rpc.calls import NetworkSync
from tests.clouds import V, arp_responder_on, node_of, open_group, server_body, wait_for_server
from tests.clouds import boot_port as boot

HOSTS = ("hv-0001", "hv-0002", "hv-0003", "hv-0004")


async def full_flows(stack: Any, host: str) -> dict[str, Any]:
    """What the host's switch holds after a full sync read fresh from the databases."""
    full = await desired.full_state(stack.cloud.dbs, stack.cloud.cell_name, host)
    return compile_host(state_of(full).host_state()).flows


async def converged(stack: Any, timeout: float = 5.0) -> None:
    """Wait until every host's switch holds what a full sync would give it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        wrong = [h for h in HOSTS if node_of(stack, h).program is None
                 or node_of(stack, h).applier.table.flows != await full_flows(stack, h)]  # type: ignore[attr-defined]
        if not wrong:
            return
        assert asyncio.get_running_loop().time() < deadline, f"not converged: {wrong}"
        await asyncio.sleep(0.05)


async def until(check: Any) -> None:
    while not check():
        await asyncio.sleep(0.02)


def is_neighbor_change(msg: Any) -> bool:
    return isinstance(msg, NetworkSync) and not msg.ports and bool(msg.neighbor_rows or msg.removed_neighbors)


def count_rounds(stack: Any) -> list[NetworkSync]:
    """Record the neighbor changes the conductor casts to the agents (and fail on any fanout of them)."""
    bus, rounds = stack.cloud.bus, []
    cast, fanout = bus.cast, bus.fanout

    async def recording(target: Any, msg: Any) -> None:
        if is_neighbor_change(msg):
            rounds.append(msg)
        await cast(target, msg)

    async def no_fanout(topic: str, msg: Any) -> None:
        assert not isinstance(msg, NetworkSync), "network state is never fanned out to every agent"
        await fanout(topic, msg)

    bus.cast, bus.fanout = recording, no_fanout
    return rounds


async def test_a_boot_reads_nothing_to_deliver_its_flows(stack: Any) -> None:
    async def _noop() -> None:
        return None

    async def _none_found() -> int:
        return 0

    stack.conductor.flush_heartbeats = _noop  # the periodic work also runs outside a request
    stack.conductor.sweep = _none_found
    await boot(stack, "warm-up", "admin", availability_zone="nova:hv-0001")  # loads the network's view
    counts = stack.cloud.dbs.statement_counts
    before = counts().copy()
    await boot(stack, "b", "admin", availability_zone="nova:hv-0002")
    after = counts()
    # The conductor's netsync flusher is the only thing that runs outside a request ("other").
    assert after["other"] == before.get("other", 0)
    await converged(stack)


async def test_neighbors_arrive_in_coalesced_rounds_and_every_host_ends_exact(stack: Any) -> None:
    await arp_responder_on(stack)
    rounds = count_rounds(stack)
    stack.conductor.netsync.neighbor_interval_s = 1.5
    await boot(stack, "first", "admin", availability_zone="nova:hv-0001")
    await converged(stack)
    rounds.clear()
    bodies = [server_body(name=f"s{n}", availability_zone=f"nova:{HOSTS[n % 4]}") for n in range(8)]
    created = await asyncio.gather(*(stack.api.post("/compute/v2.1/servers", json=b, headers=V) for b in bodies))
    for resp in created:
        await wait_for_server(stack.api, resp.json()["server"]["id"], {"ACTIVE"})
    await converged(stack, timeout=10)
    # Eight boots, each host's first or next port: the hosts serving the network heard of them in a few
    # rounds, one cast per host and round, never of their own ports.
    sent = {r.sent_at for r in rounds}
    assert 1 <= len(sent) <= 3, [(r.host, len(r.neighbor_rows)) for r in rounds]
    assert all(len([r for r in rounds if r.sent_at == at]) <= len(HOSTS) for at in sent)
    assert all(row[5] != r.host for r in rounds for row in r.neighbor_rows)
    # A delete: the other hosts forget the port, the same way.
    gone = created[0].json()["server"]["id"]
    assert (await stack.api.delete(f"/compute/v2.1/servers/{gone}")).status_code == 204
    await wait_for_server(stack.api, gone, {"DELETED"})  # the ports are gone from the database
    await asyncio.wait_for(until(lambda: any(r.removed_neighbors for r in rounds)), 10)
    await converged(stack)


async def test_a_first_port_brings_the_networks_neighbors_and_a_second_does_not(stack: Any) -> None:
    await arp_responder_on(stack)
    calls: list[NetworkSync] = []
    bus = stack.cloud.bus
    call = bus.call

    async def recording(target: Any, msg: Any, timeout: float | None = None) -> Any:
        if isinstance(msg, NetworkSync):
            calls.append(msg)
        return await call(target, msg, timeout=timeout)

    bus.call = recording
    for n, host in enumerate(("hv-0001", "hv-0002", "hv-0001")):
        await boot(stack, f"s{n}", "admin", availability_zone=f"nova:{host}")
    first_a, first_b, second_a = calls
    assert first_a.complete_networks and not first_a.neighbor_rows  # nobody else on the network yet
    assert first_b.complete_networks and len(first_b.neighbor_rows) == 1
    assert not second_a.complete_networks and not second_a.neighbor_rows
    await converged(stack)


async def test_a_lost_round_heals_at_the_next_full_sync(stack: Any) -> None:
    await arp_responder_on(stack)
    await boot(stack, "a", "admin", availability_zone="nova:hv-0001")
    bus = stack.cloud.bus
    cast, lost = bus.cast, asyncio.Event()

    async def lose(target: Any, msg: Any) -> None:
        if is_neighbor_change(msg):
            lost.set()
        else:
            await cast(target, msg)

    bus.cast = lose
    b = await boot(stack, "b", "admin", availability_zone="nova:hv-0002")
    await asyncio.wait_for(lost.wait(), 5)
    node = node_of(stack, "hv-0001")
    assert b["id"] not in node.state.neighbors
    bus.cast = cast
    await node.sync_full()
    assert b["id"] in node.state.neighbors
    await converged(stack)


async def test_a_boot_on_a_flat_network_without_responder_is_one_message_to_its_own_host(stack: Any) -> None:
    sent: list[tuple[str, NetworkSync]] = []
    bus = stack.cloud.bus
    call, cast, fanout = bus.call, bus.cast, bus.fanout

    async def calling(target: Any, msg: Any, timeout: float | None = None) -> Any:
        if isinstance(msg, NetworkSync):
            sent.append((target.host, msg))
        return await call(target, msg, timeout=timeout)

    async def casting(target: Any, msg: Any) -> None:
        if isinstance(msg, NetworkSync):
            sent.append((target.host, msg))
        await cast(target, msg)

    async def fanning(topic: str, msg: Any) -> None:
        if isinstance(msg, NetworkSync):
            sent.append(("*", msg))
        await fanout(topic, msg)

    await open_group(stack.api, "admin")  # no remote-group rule: a boot has no group peers to tell
    bus.call, bus.cast, bus.fanout = calling, casting, fanning
    for n, host in enumerate(HOSTS):
        await boot(stack, f"s{n}", "admin", availability_zone=f"nova:{host}", security_groups=[{"name": "open"}])
    netsync = stack.conductor.netsync
    assert netsync.pending_neighbor_changes == 0 and netsync.neighbor_rounds == 0  # nothing more will go
    assert [host for host, _ in sent] == list(HOSTS)
    assert all(len(m.ports) == 1 and not m.neighbor_rows and not m.complete_networks for _, m in sent)
    await converged(stack)
    assert all(not node_of(stack, h).state.neighbors for h in HOSTS)


async def test_a_boot_still_counts_against_the_projects_port_quota(stack: Any) -> None:
    demo = (await stack.api.get("/identity/v3/projects?name=demo")).json()["projects"][0]["id"]
    resp = await stack.api.put(f"/network/v2.0/quotas/{demo}", json={"quota": {"port": 1}})
    assert resp.status_code == 200, resp.text
    await boot(stack, "one", "demo")
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(name="two"), headers=V, as_user="demo")
    server = await wait_for_server(stack.api, resp.json()["server"]["id"], {"ERROR"}, as_user="demo")
    assert "Quota exceeded" in server["fault"]["message"]


async def test_host_ips_reads_known_hosts_and_leaves_unknown_ones_empty(stack: Any) -> None:
    cell = stack.cloud.dbs.cell(stack.cloud.cell_name)
    known = sorted(stack.drivers)[:2]
    ips = await cell.read(desired.host_ips, [*known, "hv-nowhere"])
    assert set(ips) == {*known, "hv-nowhere"} and ips["hv-nowhere"] is None
    for host in known:
        assert ips[host] == await cell.read(desired.host_ip, host)


async def test_a_lone_boot_waits_for_no_batching_window(stack: Any) -> None:
    # The window only gathers bursts: after a quiet spell a change goes at once (here it would be an hour).
    stack.conductor.netsync.batch_s = 3600.0
    port = await asyncio.wait_for(boot(stack, "lone", "admin", availability_zone="nova:hv-0001"), 30)
    assert port["binding:host_id"] == "hv-0001"
