"""Database benchmark: what a read replica takes off the primary, and what 10,000 hosts' heartbeats cost.

    python bench/db.py            # 12 s per phase
    python bench/db.py --quick    # 4 s per phase

A private MariaDB primary and replica (two mariadbd processes under a temp folder, GTID replication)
serve a whole in-process cloud (api, conductor, scheduler, 50 fake hypervisors). Two phases run the
same mixed API load (lists, shows, boots; 8 clients) together with a 10,000-host heartbeat storm
(heartbeats cast to the conductor at 10,000 / agent.heartbeat_s per second), once without and once
with the replica configured. The primary's query rate is MariaDB's own `Questions` counter (every
statement the server ran, executemany rows included); the replica's share is the API's read
transactions a replica served. A third phase runs the heartbeat storm alone and reports the
primary's UPDATEs per second. On one 2-core machine a replica competes with the primary for the same
cores, so the figure to read is what the primary no longer does, not total throughput. Rates are
averages over each phase (MariaDB's counters before and after); the machine is shared, so run it a
few times and take the median.

The last line is one JSON object: replica_read_share, primary_qps_with_replica,
primary_qps_without_replica, heartbeat_writes_per_s_10000_hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import datetime as dt
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

from sqlalchemy import insert  # noqa: E402
from tests.unit.test_boot_flow import V, server_body  # noqa: E402

from canopy.allinone import AllInOne  # noqa: E402
from canopy.api.app import build_app  # noqa: E402
from canopy.db import tables_cell as c  # noqa: E402
from canopy.rpc.calls import Heartbeat  # noqa: E402
from tests.conftest import ApiClient, make_settings  # noqa: E402
from tests.integration.replication import MariaDBPair  # noqa: E402

HOSTS_IN_STORM = 10_000
WORKERS = 8


def status(pair: MariaDBPair, role: str, *names: str) -> dict[str, int]:
    """MariaDB's global status counters on one side."""
    quoted = ",".join(f"'{n}'" for n in names)
    rows = pair.sql(role, f"SHOW GLOBAL STATUS WHERE Variable_name IN ({quoted})")
    return {r["Variable_name"]: int(r["Value"]) for r in rows}


async def rate(pair: MariaDBPair, names: tuple[str, ...], seconds: float) -> dict[str, float]:
    """The per-second rates of primary status counters over `seconds` (whole-phase averages: the
    conductor's flushes are periodic, so one-second samples would alternate between 0 and a burst)."""
    first = await asyncio.to_thread(status, pair, "p", *names)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    last = await asyncio.to_thread(status, pair, "p", *names)
    elapsed = time.monotonic() - started
    return {n: (last[n] - first[n] - (1 if n == "Questions" else 0)) / elapsed for n in names}  # less our SHOW


async def storm(aio: AllInOne, seconds: float, heartbeat_s: float) -> int:
    """Cast heartbeats of HOSTS_IN_STORM agents at their real rate for `seconds`; returns how many."""
    rate = HOSTS_IN_STORM / heartbeat_s
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        for n in range(sent, due):
            await aio.conductor.handle(Heartbeat(binary="canopy-agent", host=f"storm-{n % HOSTS_IN_STORM:05d}",
                                                 sent_at=time.time()))
        sent = due
        await asyncio.sleep(0.05)
    return sent


async def mixed_load(api: ApiClient, servers: list[str], seconds: float) -> int:
    """WORKERS clients looping over a read-heavy mix of API calls; returns how many requests they made."""
    done = 0
    ops = [("GET", "/compute/v2.1/servers/detail?limit=50", 30), ("GET", "/compute/v2.1/servers/{sid}", 30),
           ("GET", "/compute/v2.1/flavors/detail", 10), ("GET", "/network/v2.0/ports?limit=50", 15),
           ("GET", "/image/v2/images", 10), ("POST", "/compute/v2.1/servers", 5)]
    choices = [op for op in ops for _ in range(op[2])]

    async def worker(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            method, path, _ = rng.choice(choices)
            body = server_body(name=f"load-{uuid.uuid4().hex[:6]}") if method == "POST" else None
            # each request in a task and a context of its own, as a server runs it: its write positions
            # are its own (the ASGI test transport would otherwise run it in this worker's context)
            resp = await asyncio.create_task(api.request(method, path.format(sid=rng.choice(servers)),
                                                         as_user="demo", json=body, headers=V),
                                             context=contextvars.Context())
            assert resp.status_code < 400, resp.text
            done += 1

    await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    return done


async def start_cloud(pair: MariaDBPair, root: Path, replica: bool) -> tuple[AllInOne, ApiClient]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    url = pair.create_database(name)
    settings = make_settings(root / name)
    settings.api.rate_limits.enabled = False  # figures of the control plane, not of its limits
    settings.database.global_url = settings.database.cell_url = url
    settings.database.replica_urls = [pair.url("r", name)] if replica else []
    settings.database.pool_size = 16
    settings.fake.spawn_delay_s = settings.fake.op_delay_s = 0.0
    settings.conductor.stop_timeout_s = 0.5
    aio = AllInOne(settings, hosts=50, serve_http=False)
    await aio.start()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with aio.cloud.dbs.default_cell.writer() as conn:  # type: ignore[union-attr]
        conn.execute(insert(c.services), [
            {"uuid": str(uuid.uuid4()), "binary": "canopy-agent", "host": f"storm-{n:05d}", "version": "",
             "last_seen_at": now, "disabled": False, "forced_down": False, "created_at": now, "updated_at": now}
            for n in range(HOSTS_IN_STORM)])
    return aio, ApiClient(build_app(aio.cloud))


async def phase(pair: MariaDBPair, root: Path, replica: bool, seconds: float) -> dict[str, Any]:
    """The mixed load plus the heartbeat storm on one configuration."""
    aio, api = await start_cloud(pair, root, replica)
    try:
        servers = []
        for n in range(20):  # each in a task of its own, so this phase's context holds no write position
            resp = await asyncio.create_task(api.post("/compute/v2.1/servers", json=server_body(name=f"seed-{n}"),
                                                      as_user="demo", headers=V))
            servers.append(resp.json()["server"]["id"])
        await asyncio.sleep(1.0)
        db = aio.cloud.dbs.global_db  # type: ignore[union-attr]
        before = dict(db.routed)
        heartbeat_s = aio.settings.agent.heartbeat_s
        requests, _beats, rates = await asyncio.gather(mixed_load(api, servers, seconds),
                                                       storm(aio, seconds, heartbeat_s),
                                                       rate(pair, ("Questions", "Innodb_os_log_written"), seconds))
        routed = {k: v - before.get(k, 0) for k, v in db.routed.items()}
        reads = sum(v for k, v in routed.items() if k.startswith(("reader:", "fresh:")) and k != "fresh:fallback")
        on_replica = routed.get("reader:replica", 0) + routed.get("fresh:replica", 0)
        return {"primary_qps": rates["Questions"], "api_rps": requests / seconds,
                "redo_kib_s": rates["Innodb_os_log_written"] / 1024,
                "replica_share": on_replica / reads if reads else 0.0, "routed": routed}
    finally:
        await api.http.aclose()
        await aio.stop()


async def heartbeat_only(pair: MariaDBPair, root: Path, seconds: float) -> dict[str, float]:
    """The storm alone: the primary's UPDATEs and commits per second (medians of 1 s samples)."""
    aio, api = await start_cloud(pair, root, replica=True)
    try:
        flush_s = aio.settings.conductor.heartbeat_flush_s
        # a window of whole flush periods holds exactly that many flushes, wherever it starts
        window = flush_s * max(2, round(seconds / flush_s))
        storming = asyncio.create_task(storm(aio, window + 2 * flush_s, aio.settings.agent.heartbeat_s))
        await asyncio.sleep(flush_s)  # past the first flush, which holds less than a full period
        rates = await rate(pair, ("Com_update", "Innodb_os_log_written"), window)
        await storming
        return {"updates_per_s": rates["Com_update"], "redo_kib_s": rates["Innodb_os_log_written"] / 1024,
                "flush_s": aio.settings.conductor.heartbeat_flush_s, "heartbeat_s": aio.settings.agent.heartbeat_s}
    finally:
        await api.http.aclose()
        await aio.stop()


async def table_sizes(hosts: int, per_host: int) -> dict[str, float]:
    """MiB per table (data + indexes) with `hosts` hypervisors and `per_host` servers on each."""
    from tests.unit.test_query_budget_routes import boot_one, clone_servers

    root = Path(tempfile.mkdtemp(prefix="canopy-benchdb-"))
    with contextlib.ExitStack() as cleanup, MariaDBPair.start(root / "maria") as pair:
        cleanup.callback(shutil.rmtree, root, True)
        name = f"sizes_{uuid.uuid4().hex[:8]}"
        settings = make_settings(root / name)
        settings.api.rate_limits.enabled = False  # figures of the control plane, not of its limits
        settings.database.global_url = settings.database.cell_url = pair.create_database(name)
        settings.fake.spawn_delay_s = settings.fake.op_delay_s = 0.0
        aio = AllInOne(settings, hosts=hosts, serve_http=False)
        await aio.start()
        aio.api = ApiClient(build_app(aio.cloud))  # type: ignore[attr-defined]
        try:
            template, _ = await boot_one(aio, "template")
            for _ in range(per_host):
                await clone_servers(aio, template, hosts)
            tables = [r["t"] for r in pair.sql("p", "SELECT table_name AS t FROM information_schema.tables "
                                                    f"WHERE table_schema = '{name}'")]
            for table in tables:  # InnoDB's sizes in information_schema are estimates refreshed by ANALYZE
                pair.sql("p", f"ANALYZE TABLE {name}.{table}")
            rows = pair.sql("p", f"SELECT table_name AS t, (data_length + index_length) / 1048576 AS mib "
                                 f"FROM information_schema.tables WHERE table_schema = '{name}' ORDER BY 2 DESC")
            return {r["t"]: float(r["mib"]) for r in rows if float(r["mib"]) >= 0.05}
        finally:
            await aio.api.http.aclose()  # type: ignore[attr-defined]
            await aio.stop()


async def run(seconds: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="canopy-benchdb-"))
    try:
        with MariaDBPair.start(root / "maria") as pair:
            without = await phase(pair, root, replica=False, seconds=seconds)
            with_replica = await phase(pair, root, replica=True, seconds=seconds)
            beats = await heartbeat_only(pair, root, seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"without": without, "with": with_replica, "beats": beats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 s per phase instead of 12")
    parser.add_argument("--sizes", action="store_true", help="only measure table sizes for 1,000 hosts")
    args = parser.parse_args()
    if args.sizes:
        sizes = asyncio.run(table_sizes(1000, 20))
        print("MiB on the primary with 1,000 hosts and 20,000 servers (data + indexes, InnoDB):")
        for table, mib in sizes.items():
            print(f"  {table:<28} {mib:>8.1f}")
        print(json.dumps({"mib_per_1000_hosts": round(sum(sizes.values()), 1)}))
        return
    seconds = 4.0 if args.quick else 12.0
    r = asyncio.run(run(seconds))
    w, wo, b = r["with"], r["without"], r["beats"]
    print(f"mixed API load ({WORKERS} clients) + {HOSTS_IN_STORM:,}-host heartbeat storm, {seconds:.0f} s a phase, "
          "MariaDB primary + replica on loopback (averages over each phase; a shared machine: noisy)\n")
    print(f"{'':<18} {'primary q/s':>12} {'api req/s':>10} {'reads on replica':>17} {'redo KiB/s':>11}")
    print(f"{'without replica':<18} {wo['primary_qps']:>12,.0f} {wo['api_rps']:>10,.0f} {'-':>17}"
          f" {wo['redo_kib_s']:>11,.0f}")
    print(f"{'with replica':<18} {w['primary_qps']:>12,.0f} {w['api_rps']:>10,.0f} {w['replica_share']:>16.0%}"
          f" {w['redo_kib_s']:>11,.0f}")
    print(f"  read transactions by where they ran (with replica): {w['routed']}")
    print(f"\nheartbeats of {HOSTS_IN_STORM:,} hosts every {b['heartbeat_s']:.0f} s, flushed every "
          f"{b['flush_s']:.0f} s: {b['updates_per_s']:,.0f} UPDATE/s on the primary (one transaction a flush), "
          f"{b['redo_kib_s']:,.0f} KiB/s of redo log")
    print(json.dumps({"replica_read_share": round(w["replica_share"], 3),
                      "primary_qps_with_replica": round(w["primary_qps"]),
                      "primary_qps_without_replica": round(wo["primary_qps"]),
                      "heartbeat_writes_per_s_10000_hosts": round(b["updates_per_s"])}))


if __name__ == "__main__":
    main()
