"""Network benchmark: the flow compiler, Open vSwitch loads, IPAM, and port-create -> flows-applied.

    .venv/bin/python bench/network.py            # full
    .venv/bin/python bench/network.py --quick    # fewer repetitions and samples, same sizes

Figures (medians of repeated runs; the machine is shared, so they are noisy):
- compile time and flow count for 100, 1,000 and 5,000 ports on one host (each port with an IPv4 and an
  IPv6 address, a quarter with a QoS limit, and as many ports of the segment on other hosts);
- a private Open vSwitch (userspace `dummy` datapath): the first full load of 5,000 ports (bridge, taps,
  replace-flows), an agent restart's resync of the same host (compile, wiring check, replace-flows that
  changes nothing), and a one-port change (one bundle of adds) — with the 5,000 taps on the bridge, and
  again without them: the dummy datapath polls every dummy port in ovs-vswitchd's main loop, which makes
  every OpenFlow exchange slower as taps are added (a kernel or PMD datapath does not);
- IPAM: ports with one address each from a /16, one transaction per port, on SQLite and MariaDB;
- the all-in-one (in-process): POST /v2.0/ports with binding:host_id -> the host's agent has applied the
  port's flows, p50/p99, compile-only (the default) and applying to a private Open vSwitch.
- security groups: 2,500 and 5,000 ports in 25 and 50 groups of 10 rules (3 remote-group rules each):
  compile time and firewall flows (`--sg-only` runs just these).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from canopy.agent.net import tables as t  # noqa: E402
from canopy.agent.net.applier import OvsApplier  # noqa: E402
from canopy.agent.net.compiler import compile_host  # noqa: E402
from canopy.agent.net.model import (  # noqa: E402
    BandwidthLimit,
    Firewall,
    HostNetState,
    Neighbor,
    SecGroup,
    Segment,
    SgRule,
    VmPort,
    diff_programs,
)
from canopy.agent.net.node import NetNode  # noqa: E402
from canopy.agent.net.privateovs import PrivateOvs  # noqa: E402
from canopy.agent.net.secgroups import firewall_flows  # noqa: E402
from canopy.rpc.calls import NetPort, NetSegment, NetworkSync  # noqa: E402

SEG = Segment("public", None, "flat", t.network_key("flat", 7, None), uplink=7, physical_network="public")
MARIADB = "mysql+pymysql://root@127.0.0.1:3306"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


def host_state(n: int) -> HostNetState:
    ports, neighbors = [], []
    for i in range(n):
        ip4 = f"10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        ip6 = f"2001:db8::{i:x}"
        qos = BandwidthLimit(100_000, 10_000) if i % 4 == 0 else None
        ports.append(VmPort(f"{i:08x}-0000-4000-8000-000000000000", t.FIRST_VM_OFPORT + i,
                            f"fa:16:3e:{i >> 16:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}", SEG, (ip4,), (ip6,),
                            egress=qos))
        neighbors.append(Neighbor(f"n{i}", SEG.key, f"fa:17:3e:{i >> 16:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
                                  (f"10.{96 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",)))
    return HostNetState("bench", tuple(ports), tuple(neighbors))


def bench_compile(reps: int) -> dict[int, tuple[float, int]]:
    out = {}
    for n in (100, 1000, 5000):
        state = host_state(n)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            program = compile_host(state)
            times.append((time.perf_counter() - t0) * 1000)
        out[n] = (median(times), len(program.flows))
        print(f"compile {n:>5} ports: {median(times):7.1f} ms (median of {reps})  {len(program.flows):>7,} flows, "
              f"{len(program.meters)} meters")
    return out


def sg_state(n: int, groups: int) -> HostNetState:
    """`n` ports in `groups` security groups of 10 rules each (3 of them remote-group rules: the group
    itself over IPv4 and IPv6, and the next group on a database port), every member on this host."""
    base = host_state(n)
    gids = [f"sg-{g:03d}" for g in range(groups)]
    ports = tuple(dataclasses.replace(p, groups=(gids[i % groups],)) for i, p in enumerate(base.ports))
    sgs = []
    for g, gid in enumerate(gids):
        m = 1000 + g * 10
        sgs.append(SecGroup(gid, g + 1, (
            SgRule(m, "egress", 4), SgRule(m + 1, "egress", 6),
            SgRule(m + 2, "ingress", 4, 6, 22, 22, prefix="198.51.100.0/24"), SgRule(m + 3, "ingress", 4, 6, 80, 80),
            SgRule(m + 4, "ingress", 6, 6, 443, 443), SgRule(m + 5, "ingress", 4, 6, 8000, 8099),
            SgRule(m + 6, "ingress", 4, 1, 8), SgRule(m + 7, "ingress", 4, remote_group=gid),
            SgRule(m + 8, "ingress", 6, remote_group=gid),
            SgRule(m + 9, "ingress", 4, 6, 5432, 5432, remote_group=gids[(g + 1) % groups]))))
    members = {gid: [] for gid in gids}
    for p in ports:
        members[p.groups[0]].extend([*p.ipv4, *p.ipv6])  # type: ignore[index]
    return dataclasses.replace(base, ports=ports, firewall=Firewall(tuple(sgs), tuple(
        (gid, tuple(ips)) for gid, ips in members.items())))


def bench_sg(reps: int) -> dict[str, float]:
    """Security groups: compile time and flows of 5,000 ports in 50 groups, and at half the size."""
    out: dict[str, float] = {}
    for n, groups in ((2500, 25), (5000, 50)):
        state = sg_state(n, groups)
        plain = len(compile_host(dataclasses.replace(state, firewall=Firewall(),
                                                     ports=tuple(dataclasses.replace(p, groups=None)
                                                                 for p in state.ports))).flows)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            program = compile_host(state)
            times.append((time.perf_counter() - t0) * 1000)
        out[f"sg_compile_{n}_ms"] = median(times)
        fw_times = []
        for _ in range(reps):  # the firewall's own share: its flows alone, from the same state
            t0 = time.perf_counter()
            firewall_flows(state.ports, state.firewall)
            fw_times.append((time.perf_counter() - t0) * 1000)
        out[f"sg_firewall_only_{n}_ms"] = median(fw_times)
        out[f"sg_flows_{n}"] = len(program.flows) - plain
        print(f"security groups, {n} ports in {groups} groups of 10 rules: compile {median(times):.1f} ms "
              f"(median of {reps}; the firewall's flows alone {median(fw_times):.1f} ms), "
              f"{len(program.flows) - plain:,} firewall flows of {len(program.flows):,}")
    return out


def sync_of(state: HostNetState) -> NetworkSync:
    seg = NetSegment(network_id="public", network_type="flat", physical_network="public")
    ports = [NetPort(id=p.id, network_id="public", ofport=p.ofport, mac_address=p.mac, fixed_ips=[*p.ipv4, *p.ipv6],
                     bandwidth_limits=[{"direction": "egress", "max_kbps": p.egress.max_kbps,
                                        "max_burst_kbps": p.egress.max_burst_kbps}] if p.egress else [], rev=1.0)
             for p in state.ports]
    return NetworkSync(host="bench", full=True, segments=[seg], ports=ports, complete_networks=["public"])


async def bench_ovs(reps: int, wire: bool) -> dict[str, float]:
    """A private switch: first load, restart resync and one-port changes of a 5,000-port host (`wire`:
    with its 5,000 taps on the bridge; without, the flow table's side alone)."""
    folder = Path(tempfile.mkdtemp(prefix="canopy-bench-ovs-"))
    ovs = PrivateOvs(folder).start()
    label = "with 5000 taps" if wire else "flows only, no taps"
    try:
        state = host_state(5000)
        sync = sync_of(HostNetState("bench", state.ports))

        def applier() -> OvsApplier:
            return OvsApplier("br-bench", rundir=ovs.rundir, datapath_type="dummy", tap_type="dummy")

        def node() -> NetNode:
            async def request() -> NetworkSync:
                return sync

            return NetNode("bench", applier(), request_sync=request, uplink_ofports={"public": 7}, reconcile_s=3600)

        first = node()
        if not wire:
            first.applier.wire = _no_wiring  # type: ignore[method-assign]
        t0 = time.perf_counter()
        await first.sync_full()
        first_load = time.perf_counter() - t0
        base = first.program
        print(f"[{label}] first full load, 5000 ports ({len(base.flows):,} flows, "  # type: ignore[union-attr]
              f"{len(base.meters)} meters): {first_load:.2f} s")  # type: ignore[union-attr]
        resyncs = []
        for _ in range(reps):
            again = node()
            if not wire:
                again.applier.wire = _no_wiring  # type: ignore[method-assign]
            t0 = time.perf_counter()
            await again.sync_full()
            resyncs.append(time.perf_counter() - t0)
        print(f"[{label}] agent restart resync: {median(resyncs):.2f} s (median of {reps}; compile, wiring check, "
              "replace-flows changing nothing)")
        extra = VmPort("ffffffff-0000-4000-8000-000000000000", t.FIRST_VM_OFPORT + 6000, "fa:16:3e:ff:ff:ff", SEG,
                       ("10.200.0.1",), ("2001:db8:1::1",))
        bigger = compile_host(HostNetState("bench", (*state.ports, extra)))
        one, ap = [], applier()
        for _ in range(reps * 3):
            for old, new in ((base, bigger), (bigger, base)):
                t0 = time.perf_counter()
                await ap.change(diff_programs(old, new))  # type: ignore[arg-type]
                one.append((time.perf_counter() - t0) * 1000)
        adds = len(diff_programs(base, bigger).add)  # type: ignore[arg-type]
        print(f"[{label}] one-port change ({adds} flows, one bundle): {median(one):.0f} ms median, "
              f"{max(one):.0f} ms max of {len(one)}")
        full = []
        for _ in range(reps):
            t0 = time.perf_counter()
            await ap.replace(bigger)
            await ap.replace(base)  # type: ignore[arg-type]
            full.append((time.perf_counter() - t0) / 2)
        print(f"[{label}] replace-flows of the full set differing by one port: {median(full) * 1000:.0f} ms median")
        return {"first_load_s": first_load, "resync_s": median(resyncs), "one_port_ms": median(one),
                "replace_ms": median(full) * 1000}
    finally:
        ovs.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def _no_wiring(taps: Any) -> list[str]:
    return [tap.port_id for tap in taps]


def ipam_rate(url: str, count: int, concurrency: int) -> float:
    """Ports (one address each from a /16) per second, one transaction each."""
    from concurrent.futures import ThreadPoolExecutor

    from canopy.clock import Clock
    from canopy.db.engine import Databases
    from canopy.db.migrate import upgrade_all
    from canopy.network import networks as nets
    from canopy.network import ports as pt
    from canopy.network import subnets as sn

    dbs = Databases.from_urls(url, {"cell1": url}, pool_size=max(concurrency, 2))
    try:
        upgrade_all(dbs)
        now = Clock().now()
        with dbs.global_db.writer() as conn:
            net = nets.insert_network(conn, {"name": "bench", "project_id": "p"}, now)
            values = {"network_id": net["id"], "project_id": "p", **sn.addressing(4, "10.128.0.0/16")}
            sub = sn.insert_subnet(conn, values, now)
        cell = dbs.cell("cell1")

        def one(_: int) -> None:
            with cell.writer() as conn:
                pt.create_port(conn, network=net, subnets=[sub], project_id="p", now=now)

        one(0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(count)))
        return count / (time.perf_counter() - t0)
    finally:
        dbs.dispose()


def bench_ipam(quick: bool) -> dict[str, float]:
    from sqlalchemy import create_engine, text

    out = {}
    with tempfile.TemporaryDirectory() as d:
        out["sqlite"] = ipam_rate(f"sqlite:///{d}/ipam.db", 1000 if quick else 5000, 1)
    print(f"IPAM, SQLite: {out['sqlite']:,.0f} ports (allocations)/s, one transaction each")
    name = f"canopy_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{MARIADB}/mysql", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        count = 1000 if quick else 4000
        out["mariadb"] = ipam_rate(f"{MARIADB}/{name}", count, 1)
        out["mariadb_8"] = ipam_rate(f"{MARIADB}/{name}", count, 8)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
    print(f"IPAM, MariaDB: {out['mariadb']:,.0f}/s one at a time, {out['mariadb_8']:,.0f}/s with 8 in flight")
    return out


async def bench_latency(samples: int, apply: str) -> tuple[float, float]:
    """POST a bound port -> its host's agent applied its flows, in an in-process all-in-one."""
    import httpx

    from canopy.allinone import AllInOne
    from canopy.api.app import build_app
    from canopy.config import Settings
    from canopy.seed import PUBLIC_NETWORK_ID

    with tempfile.TemporaryDirectory(prefix="canopy-bench-lat-") as d:
        settings = Settings(data_dir=Path(d)).resolved()
        settings.api.rate_limits.enabled = False  # figures of the control plane, not of its limits
        settings.network.apply = apply  # type: ignore[assignment]
        aio = AllInOne(settings, hosts=4, serve_http=False)
        await aio.start()
        try:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(aio.cloud)),
                                       base_url="http://canopy.bench")
            body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": "admin"}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
            token = (await client.post("/identity/v3/auth/tokens", json=body)).headers["x-subject-token"]
            nodes = {a.host: a.net for a in aio.agents}
            lat = []
            for i in range(samples):
                host = f"hv-{i % 4 + 1:04d}"
                node = nodes[host]
                t0 = time.perf_counter()
                resp = await client.post("/network/v2.0/ports", headers={"X-Auth-Token": token}, json={"port": {
                    "network_id": PUBLIC_NETWORK_ID, "binding:host_id": host}})
                port_id = resp.json()["port"]["id"]
                await node.wait_applied(lambda pid=port_id, n=node: pid in n.applied_at, timeout=30)  # type: ignore[misc]
                lat.append((time.perf_counter() - t0) * 1000)
            await client.aclose()
        finally:
            await aio.stop()
    print(f"port create -> flows applied ({apply}), {samples} ports on 4 hosts: p50 {median(lat):.1f} ms, "
          f"p99 {p99(lat):.1f} ms")
    return median(lat), p99(lat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sg-only", action="store_true", help="only the security group figures")
    args = parser.parse_args()
    reps = 3 if args.quick else 7
    sg = bench_sg(reps)
    sg_figures = {"sg_compile_5000_ms": round(sg["sg_compile_5000_ms"], 1), "sg_flows_5000": sg["sg_flows_5000"],
                  "sg_compile_2500_ms": round(sg["sg_compile_2500_ms"], 1), "sg_flows_2500": sg["sg_flows_2500"],
                  "sg_firewall_only_5000_ms": round(sg["sg_firewall_only_5000_ms"], 1)}
    if args.sg_only:
        print(json.dumps(sg_figures))
        return
    compiled = bench_compile(reps)
    ovs = asyncio.run(bench_ovs(2 if args.quick else 5, wire=True))
    bare = asyncio.run(bench_ovs(2 if args.quick else 5, wire=False))
    ipam = bench_ipam(args.quick)
    samples = 40 if args.quick else 200
    fake50, fake99 = asyncio.run(bench_latency(samples, "compile"))
    ovs50, ovs99 = asyncio.run(bench_latency(samples, "private-ovs"))
    print(json.dumps({
        "compile_100_ms": round(compiled[100][0], 2), "compile_1000_ms": round(compiled[1000][0], 1),
        "compile_5000_ms": round(compiled[5000][0], 1), "flows_100": compiled[100][1], "flows_1000": compiled[1000][1],
        "flows_5000": compiled[5000][1], "first_load_5000_s": round(ovs["first_load_s"], 2),
        "resync_5000_s": round(ovs["resync_s"], 2), "one_port_apply_ms": round(ovs["one_port_ms"], 1),
        "replace_flows_one_port_diff_ms": round(ovs["replace_ms"]),
        "first_load_5000_no_taps_s": round(bare["first_load_s"], 2),
        "resync_5000_no_taps_s": round(bare["resync_s"], 2),
        "one_port_apply_no_taps_ms": round(bare["one_port_ms"], 1),
        "ipam_allocs_per_s": round(ipam["mariadb_8"]), "ipam_allocs_per_s_mariadb_serial": round(ipam["mariadb"]),
        "ipam_allocs_per_s_sqlite": round(ipam["sqlite"]),
        "port_to_flows_p50_ms": round(ovs50, 1), "port_to_flows_p99_ms": round(ovs99, 1),
        "port_to_flows_compile_only_p50_ms": round(fake50, 1), "port_to_flows_compile_only_p99_ms": round(fake99, 1),
        **sg_figures,
    }))


if __name__ == "__main__":
    main()
