"""Boot throughput and latency through the HTTP API against an all-in-one with simulated hosts.

    .venv/bin/python bench/boot.py [--quick] [--hosts 1000] [--servers 2000] [--concurrency 16]

Layout: one all-in-one process (api, scheduler, conductor and the simulated agents on the in-process bus),
as `make run` starts it. All servers go to ONE flat network over every host, no ARP responder (the
network's default), port security on.

Creates servers with `concurrency` requests in flight, watches them reach ACTIVE by polling
`GET /servers/detail?changes-since=…` every 5 ms, and reads the server's own counters (the benchmark's
polling excluded): SQL statements, bus messages handled (`bus_msgs_per_boot`, and without the periodic
heartbeats), and the process's CPU time (`control_cpu_ms_per_boot`: the whole control plane and the
simulated agents, which share the process). `server_p50_ms`/`server_p99_ms` are create→ACTIVE from the
server's own timestamps (the boot action's start and its last update, when it finished), read after the
run for up to 200 servers. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cloud import BenchCloud  # noqa: E402

POLL_ORIGIN = "compute:servers:detail"
V = {"OpenStack-API-Version": "compute 2.87"}
PERIODIC_KINDS = ("heartbeat", "host_health", "capacity")  # bus messages that follow time, not boots


def cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bus_handled(cloud: BenchCloud) -> dict[str, float]:
    """Messages the process handled from its bus, by kind (from /metrics)."""
    text = httpx.get(cloud.url + "/metrics").text
    out: dict[str, float] = {}
    for m in re.finditer(r'^canopy_bus_messages_handled_total\{kind="([^"]*)",outcome="[^"]*"\} ([0-9.e+]+)$',
                         text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def server_latencies(cloud: BenchCloud, token: str, server_ids: list[str]) -> list[float]:
    """create→ACTIVE in ms from the server's own records: the boot action's start and its finish."""
    out = []
    with httpx.Client(base_url=cloud.url, headers={"X-Auth-Token": token, **V}, timeout=30) as c:
        for sid in server_ids:
            actions = c.get(f"/compute/v2.1/servers/{sid}/os-instance-actions").json()["instanceActions"]
            boot = next(a for a in actions if a["action"] == "create")
            start = dt.datetime.fromisoformat(boot["start_time"].replace("Z", "+00:00"))
            end = dt.datetime.fromisoformat(boot["updated_at"].replace("Z", "+00:00"))
            out.append((end - start).total_seconds() * 1000)
    return sorted(out)


def setup(cloud: BenchCloud, token: str) -> tuple[str, str]:
    """A network big enough for every server, no quota limits; returns (project id, network id)."""
    h = {"X-Auth-Token": token, **V}
    with httpx.Client(base_url=cloud.url, headers=h, timeout=30) as c:
        project = c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": token}).json()["token"]["project"]["id"]
        c.put(f"/compute/v2.1/os-quota-sets/{project}",
              json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}}).raise_for_status()
        net = c.post("/network/v2.0/networks", json={"network": {
            "name": "bench", "provider:network_type": "flat", "provider:physical_network": "bench"}})
        net.raise_for_status()
        net_id = net.json()["network"]["id"]
        # 198.18.0.0/15 is the benchmarking range (RFC 2544); these addresses never leave the database.
        c.post("/network/v2.0/subnets", json={"subnet": {
            "network_id": net_id, "ip_version": 4, "cidr": "198.18.0.0/19", "gateway_ip": "198.18.0.1"}}
               ).raise_for_status()
    return project, net_id


async def run(cloud: BenchCloud, servers: int, concurrency: int) -> dict[str, float]:
    token = cloud.token()
    _, net_id = setup(cloud, token)
    image = httpx.get(cloud.url + "/image/v2/images?name=canopy-tiny", headers={"X-Auth-Token": token}).json()
    image_id = image["images"][0]["id"]
    created: dict[str, float] = {}
    accepted: dict[str, float] = {}
    active: dict[str, float] = {}
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=cloud.url, headers={"X-Auth-Token": token, **V}, timeout=60,
                                 limits=limits) as client:
        before = cloud.statements()
        msgs_before, cpu_before = bus_handled(cloud), cpu_s(cloud.pid)
        todo = iter(range(servers))
        t_start = time.perf_counter()

        async def worker() -> None:
            for n in todo:
                t0 = time.perf_counter()
                resp = await client.post("/compute/v2.1/servers", json={"server": {
                    "name": f"b{n}", "flavorRef": "1", "imageRef": image_id, "networks": [{"uuid": net_id}]}})
                if resp.status_code != 202:
                    errors.append(resp.text)
                    continue
                sid = resp.json()["server"]["id"]
                created[sid], accepted[sid] = t0, time.perf_counter()

        async def poller() -> None:
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            while len(active) + len(errors) < servers:
                t_poll = dt.datetime.now(dt.UTC)
                resp = await client.get("/compute/v2.1/servers/detail", params={
                    "changes-since": since.strftime("%Y-%m-%dT%H:%M:%S.%f"), "limit": "1000"})
                now = time.perf_counter()
                for s in resp.json()["servers"]:
                    if s["status"] == "ACTIVE" and s["id"] not in active:
                        active[s["id"]] = now
                    elif s["status"] == "ERROR" and s["id"] not in active:
                        active[s["id"]] = now
                        errors.append(f"{s['id']}: {s.get('fault')}")
                since = t_poll - dt.timedelta(milliseconds=100)
                await asyncio.sleep(0.005)
                if now - t_start > 600:
                    break

        poll = asyncio.create_task(poller())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.wait_for(poll, 600)
        elapsed = time.perf_counter() - t_start
    cpu_used = cpu_s(cloud.pid) - cpu_before
    msgs_after = bus_handled(cloud)
    after = cloud.statements()
    total = sum(after.values()) - sum(before.values())
    polling = after.get(POLL_ORIGIN, 0) - before.get(POLL_ORIGIN, 0)
    lat = sorted((active[s] - created[s]) * 1000 for s in created if s in active)
    after_202 = sorted((active[s] - accepted[s]) * 1000 for s in accepted if s in active)
    by_origin = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    print("statements by origin during the run:", json.dumps(by_origin, indent=1), file=sys.stderr)
    if errors:
        print(f"{len(errors)} errors, first: {errors[0][:500]}", file=sys.stderr)
    msgs = {k: v - msgs_before.get(k, 0.0) for k, v in msgs_after.items() if v - msgs_before.get(k, 0.0)}
    print("bus messages handled by kind during the run:", json.dumps(msgs, indent=1), file=sys.stderr)
    periodic = sum(v for k, v in msgs.items() if k in PERIODIC_KINDS)
    server_side = server_latencies(cloud, token, list(active)[:200])
    n = max(len(lat), 1)
    return {
        "servers": len(lat), "errors": len(errors), "elapsed_s": round(elapsed, 2),
        "bus_msgs_per_boot": round(sum(msgs.values()) / n, 2),
        "bus_msgs_per_boot_without_heartbeats": round((sum(msgs.values()) - periodic) / n, 2),
        "control_cpu_ms_per_boot": round(cpu_used * 1000 / n, 2),
        "server_p50_ms": round(statistics.median(server_side), 1) if server_side else None,
        "server_p99_ms": round(server_side[max(0, int(len(server_side) * 0.99) - 1)], 1) if server_side else None,
        "servers_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 1) if lat else None,
        "queries_per_boot": round((total - polling) / max(len(lat), 1), 2),
        # The same latency measured from the 202 (excludes the create request's own queueing).
        "accepted_p50_ms": round(statistics.median(after_202), 1) if after_202 else None,
        "accepted_p99_ms": round(after_202[max(0, int(len(after_202) * 0.99) - 1)], 1) if after_202 else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 hosts, 200 servers")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    hosts, servers = (100, 200) if args.quick else (args.hosts, args.servers)
    env = {"CANOPY_FAKE__SPAWN_DELAY_S": "0", "CANOPY_FAKE__OP_DELAY_S": "0"}
    with BenchCloud(hosts, env) as cloud:
        result = asyncio.run(run(cloud, servers, args.concurrency))
    result = {"hosts": hosts, "concurrency": args.concurrency, "layout": "all-in-one, one process",
              "loadavg_1m": os.getloadavg()[0], **result}
    print(f"{result['servers']} servers on {hosts} hosts: {result['servers_per_s']} servers/s, "
          f"create→ACTIVE p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
          f"{result['queries_per_boot']} SQL statements per boot")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
