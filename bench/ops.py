"""Operability benchmark: what watching a large fleet costs the control plane.

    .venv/bin/python bench/ops.py            # 10,000 hosts, 20,000 servers
    .venv/bin/python bench/ops.py --quick    # 1,000 hosts, 2,000 servers

Runs in-process on SQLite (the embedded default) with a real conductor on the in-process bus:
- heartbeats: one conductor flush of every agent's heartbeat (a single UPDATE … executemany), and the
  steady-state database transactions per second that heartbeats cost (one per flush interval);
- the fleet view (`/healthcheck/fleet`), a `/metrics` scrape (with its fleet gauges) and a health check;
- a stuck-task sweep over every server (steady state: nothing stuck, the index answers);
- per-event costs: one JSON log line, one notification published, one API request's metrics.
Figures are medians of several runs; the machine is shared, so expect noise. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

from sqlalchemy import insert  # noqa: E402

from canopy.api.healthcheck import run_checks  # noqa: E402
from canopy.conductor.service import Conductor  # noqa: E402
from canopy.conductor.sweeper import StuckSweeper  # noqa: E402
from canopy.config import Settings  # noqa: E402
from canopy.db import tables_cell as c  # noqa: E402
from canopy.db.migrate import upgrade_all  # noqa: E402
from canopy.observability.access import observe_request  # noqa: E402
from canopy.observability.fleet import snapshot  # noqa: E402
from canopy.observability.logs import make_handler  # noqa: E402
from canopy.observability.notifications import Notifier, instance_payload  # noqa: E402
from canopy.observability.scrape import render  # noqa: E402
from canopy.rpc.calls import Heartbeat  # noqa: E402
from canopy.rpc.local import LocalTransport  # noqa: E402
from canopy.runtime import Cloud, open_databases  # noqa: E402

FLAVOR = {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1, "ephemeral": 0, "swap": 0,
          "extra_specs": {}}
STATES = ("active", "active", "active", "stopped", "error")


def fill(cloud: Cloud, hosts: int, servers: int, stuck: int) -> None:
    """N hosts with their agent services (a few down), 2N servers, `stuck` of them stuck in spawning."""
    now = cloud.clock.now()
    old = now - dt.timedelta(hours=2)
    host_rows, service_rows, instance_rows = [], [], []
    for n in range(hosts):
        name = f"hv-{n:05d}"
        host_rows.append({"name": name, "uuid": str(uuid.uuid4()), "vcpus": 64, "memory_mb": 262144,
                          "local_gb": 4000, "datacenter": f"dc{n % 3 + 1}", "rack": f"r{n // 40}",
                          "created_at": now, "updated_at": now})
        service_rows.append({"uuid": str(uuid.uuid4()), "binary": "canopy-agent", "host": name, "version": "0.1.0",
                             "last_seen_at": old if n % 100 == 0 else now, "disabled": n % 250 == 0,
                             "forced_down": False, "created_at": now, "updated_at": now})
    for n in range(servers):
        stuck_one = n < stuck
        instance_rows.append({
            "uuid": str(uuid.uuid4()), "project_id": f"p{n % 50:031d}", "user_id": "u" * 32, "name": f"vm-{n}",
            "flavor_id": "1", "flavor": FLAVOR, "vm_state": "building" if stuck_one else STATES[n % len(STATES)],
            "task_state": "spawning" if stuck_one else None, "host": f"hv-{n % hosts:05d}",
            "launched_at": None if stuck_one else old, "created_at": old, "updated_at": old, "deleted": False})
    with cloud.dbs.cell(cloud.cell_name).writer() as conn:
        conn.execute(insert(c.hosts), host_rows)
        conn.execute(insert(c.services), service_rows)
        for i in range(0, len(instance_rows), 5000):
            conn.execute(insert(c.instances), instance_rows[i:i + 5000])


async def median_ms(fn: Callable[[], Awaitable[Any]], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


async def per_call_async_us(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) / n * 1e6


def event_costs(cloud: Cloud) -> dict[str, float]:
    """One JSON log line, one API request's metrics (access log off, as at WARNING)."""
    logger = logging.getLogger("canopy.bench.line")
    handler = make_handler("json")
    handler.setStream(io.StringIO())  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    line_us = per_call_us(lambda: logger.info("spawn_instance %s", "f3b1…", extra={"instance_uuid": "x"}), 20000)
    scope = {"method": "GET", "path": "/compute/v2.1/servers", "route": None}
    logging.getLogger("canopy.api.access").setLevel(logging.WARNING)
    metrics_us = per_call_us(lambda: observe_request("compute", scope, 200, time.perf_counter()), 50000)
    return {"json_log_line_us": round(line_us, 2), "api_metrics_us": round(metrics_us, 2)}


async def main(quick: bool) -> dict[str, Any]:
    hosts = 1000 if quick else 10000
    servers, stuck, runs = 2 * hosts, 10, 5
    with tempfile.TemporaryDirectory(prefix="canopy-bench-ops-") as tmp:
        settings = Settings(data_dir=Path(tmp)).resolved()
        settings.api.rate_limits.enabled = False  # figures of the control plane, not of its limits
        dbs = open_databases(settings)
        upgrade_all(dbs)
        bus = LocalTransport()
        await bus.start()
        cloud = Cloud(settings=settings, dbs=dbs, bus=bus)
        t0 = time.perf_counter()
        fill(cloud, hosts, servers, stuck)
        print(f"{hosts:,} hosts, {servers:,} servers written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        cond = Conductor(cloud, name="conductor-bench")
        await cond.start()
        try:
            out = await measure(cloud, cond, hosts, servers, stuck, runs)
        finally:
            await cond.stop()
            await bus.close()
            dbs.dispose()
    return out


async def measure(cloud: Cloud, cond: Conductor, hosts: int, servers: int, stuck: int, runs: int) -> dict[str, Any]:
    now = time.time()

    async def flush() -> None:
        for n in range(hosts):
            await cond.handle(Heartbeat(binary="canopy-agent", host=f"hv-{n:05d}", service_version="0.1.0",
                                        sent_at=now))
        t0 = time.perf_counter()
        await cond.flush_heartbeats()
        flush_ms.append((time.perf_counter() - t0) * 1000)

    flush_ms: list[float] = []
    for _ in range(runs):
        await flush()
    sweeper = StuckSweeper(cond)
    cloud.settings.observability.task_deadlines_s["spawning"] = 60
    swept = await sweeper.sweep()
    assert swept == stuck, f"expected {stuck} stuck servers, swept {swept}"
    notifier = Notifier(cloud.bus, "canopy-conductor:bench")
    row = {"uuid": str(uuid.uuid4()), "project_id": "p", "user_id": "u", "name": "vm", "flavor": FLAVOR,
           "vm_state": "active", "power_state": 1, "host": "hv-00001",
           "addresses": {"public": [{"version": 4, "addr": "203.0.113.9", "mac": "fa:16:3e:00:00:01"}]}}
    stamp = cloud.clock.now()
    out = {
        "hosts": hosts, "servers": servers,
        "heartbeat_flush_ms": round(statistics.median(flush_ms), 1),
        "heartbeat_transactions_per_s": round(1 / cloud.settings.conductor.heartbeat_flush_s, 2),
        "heartbeat_rows_per_s": round(hosts / cloud.settings.agent.heartbeat_s, 1),
        "fleet_view_ms": round(await median_ms(lambda: snapshot(cloud), runs), 1),
        "metrics_scrape_ms": round(await median_ms(lambda: render(cloud), runs), 1),
        "healthcheck_ms": round(await median_ms(lambda: run_checks(cloud), runs), 1),
        "stuck_sweep_ms": round(await median_ms(sweeper.sweep, runs), 2),
        "stuck_swept": swept,
        "notification_us": round(await per_call_async_us(
            lambda: notifier.emit("instance.create.end", instance_payload(row, request_id="req-x"), stamp), 5000), 1),
        **event_costs(cloud),
    }
    return out


def report(out: dict[str, Any]) -> None:
    print(f"{out['hosts']:,} hosts, {out['servers']:,} servers on SQLite (medians; a shared machine: noisy)")
    print(f"  heartbeats: one flush of {out['hosts']:,} agents {out['heartbeat_flush_ms']} ms; "
          f"{out['heartbeat_transactions_per_s']} transactions/s per conductor ({out['heartbeat_rows_per_s']:,} "
          f"rows/s at 10 s heartbeats)")
    print(f"  fleet view {out['fleet_view_ms']} ms, /metrics scrape {out['metrics_scrape_ms']} ms, "
          f"health check {out['healthcheck_ms']} ms")
    print(f"  stuck-task sweep over {out['servers']:,} servers {out['stuck_sweep_ms']} ms "
          f"(first sweep moved {out['stuck_swept']} stuck servers to ERROR)")
    print(f"  per event: JSON log line {out['json_log_line_us']} µs, notification {out['notification_us']} µs, "
          f"API request metrics {out['api_metrics_us']} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 hosts instead of 10,000")
    args = parser.parse_args()
    logging.getLogger("canopy").setLevel(logging.ERROR)  # the sweep's warnings are expected here
    result = asyncio.run(main(args.quick))
    report(result)
    print(json.dumps(result))
