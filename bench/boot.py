"""Boot throughput and latency through the HTTP API against an all-in-one with simulated hosts.

    .venv/bin/python bench/boot.py [--quick] [--hosts 1000] [--servers 2000] [--concurrency 16]

Creates servers with `concurrency` requests in flight, watches them reach ACTIVE by polling
`GET /servers/detail?changes-since=…` every 20 ms, and reads the server's own SQL statement
counters (the benchmark's polling excluded). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cloud import BenchCloud  # noqa: E402

POLL_ORIGIN = "compute:servers:detail"
V = {"OpenStack-API-Version": "compute 2.87"}


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
                await asyncio.sleep(0.02)
                if now - t_start > 600:
                    break

        poll = asyncio.create_task(poller())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.wait_for(poll, 600)
        elapsed = time.perf_counter() - t_start
    after = cloud.statements()
    total = sum(after.values()) - sum(before.values())
    polling = after.get(POLL_ORIGIN, 0) - before.get(POLL_ORIGIN, 0)
    lat = sorted((active[s] - created[s]) * 1000 for s in created if s in active)
    after_202 = sorted((active[s] - accepted[s]) * 1000 for s in accepted if s in active)
    by_origin = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    print("statements by origin during the run:", json.dumps(by_origin, indent=1), file=sys.stderr)
    if errors:
        print(f"{len(errors)} errors, first: {errors[0][:500]}", file=sys.stderr)
    return {
        "servers": len(lat), "errors": len(errors), "elapsed_s": round(elapsed, 2),
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
    result = {"hosts": hosts, "concurrency": args.concurrency, **result}
    print(f"{result['servers']} servers on {hosts} hosts: {result['servers_per_s']} servers/s, "
          f"create→ACTIVE p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
          f"{result['queries_per_boot']} SQL statements per boot")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
