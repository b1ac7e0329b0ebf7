"""Scheduler benchmark: Canopy's placement engine on a synthetic fleet, and OpenStack Nova's own filter
scheduler on the same fleet and requests, side by side.

    .venv/bin/python bench/scheduler.py --hosts 10000 --db sqlite
    .venv/bin/python bench/scheduler.py --hosts 1000,10000,100000 --db mariadb --no-nova
    .venv/bin/python bench/scheduler.py --quick

Canopy figures: placements/s (decision + claim in the database; `--inflight` at once), decisions/s and
p50/p99 decision time (filters + weighers only, no claim), the time to load the index, and the memory
per host in the index. Nova figures: its default filters and weighers run through its HostManager on
HostState objects built from the same fleet, in a virtualenv of its own (created on first use under
~/.cache/canopy-bench/nova-venv with `pip install nova`; ~400 MB), without its database. Nova is
skipped above 10,000 hosts (about a second per decision at 10,000). The machine is shared, so figures
are noisy: medians of the per-decision times are reported. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert, text  # noqa: E402

from canopy.config import SchedulerConfig  # noqa: E402
from canopy.db import tables_cell as c  # noqa: E402
from canopy.db import tables_global as g  # noqa: E402
from canopy.db.engine import Database  # noqa: E402
from canopy.db.migrate import upgrade_part  # noqa: E402
from canopy.rpc.calls import SelectHost  # noqa: E402
from canopy.scheduler.request import Request  # noqa: E402
from canopy.scheduler.service import Scheduler  # noqa: E402
from canopy.scheduler.weighers import choose  # noqa: E402

NOVA_VENV = Path(os.environ.get("CANOPY_NOVA_VENV", Path.home() / ".cache/canopy-bench/nova-venv"))
NOVA_MAX_HOSTS = 10_000
MARIADB = "mysql+pymysql://root@127.0.0.1:3306"
FLAVORS = [(1, 2048, 20), (2, 4096, 40), (4, 8192, 80), (8, 16384, 160)]
ZONES = ["az1", "az2", "az3"]
SHAPES = [(32, 131072, 1000), (64, 262144, 2000), (96, 393216, 4000)]


# -- the synthetic fleet ---------------------------------------------------------------------------


def fleet_spec(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """N hosts: three shapes, 0–60 % used, three zones, 40 hosts a rack, 2 % disabled, 1 % agent down."""
    rng = random.Random(seed)
    hosts = []
    for i in range(n):
        vcpus, ram, disk = SHAPES[i % 3]
        share = rng.random() * 0.6
        hosts.append({"name": f"hv-{i:06d}", "vcpus": vcpus, "ram": ram, "disk": disk,
                      "vcpus_used": int(vcpus * 4 * share), "ram_used": int(ram * share) // 512 * 512,
                      "disk_used": int(disk * share), "zone": ZONES[i % 3], "rack": f"r{i // 40:05d}",
                      "enabled": rng.random() > 0.02, "up": rng.random() > 0.01})
    return hosts


def requests(n: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        vcpus, ram, disk = rng.choice(FLAVORS)
        out.append({"vcpus": vcpus, "ram": ram, "disk": disk, "project": f"p-{rng.randrange(20)}",
                    "zone": rng.choice(ZONES) if rng.random() < 0.5 else None})
    return out


def fill(db: Database, hosts: list[dict[str, Any]]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    old = now - dt.timedelta(hours=1)
    for start in range(0, len(hosts), 5000):
        chunk = hosts[start:start + 5000]
        with db.writer() as conn:
            conn.execute(insert(c.hosts), [dict(
                name=h["name"], uuid=str(uuid.uuid4()), hypervisor_type="QEMU", hypervisor_version=7002000,
                vcpus=h["vcpus"], memory_mb=h["ram"], local_gb=h["disk"], vcpus_used=h["vcpus_used"],
                memory_mb_used=h["ram_used"], local_gb_used=h["disk_used"], running_vms=0, cpu_allocation_ratio=4.0,
                ram_allocation_ratio=1.0, disk_allocation_ratio=1.0, reserved_vcpus=0, reserved_memory_mb=512,
                reserved_disk_gb=0, availability_zone=h["zone"], datacenter="dc1", rack=h["rack"],
                enabled=h["enabled"], created_at=old, updated_at=old) for h in chunk])
            conn.execute(insert(c.services), [dict(
                uuid=str(uuid.uuid4()), binary="canopy-agent", host=h["name"], version="1",
                last_seen_at=now if h["up"] else old, disabled=False, forced_down=False, created_at=old,
                updated_at=old) for h in chunk])
    with db.writer() as conn:  # one reserved aggregate, so tenant isolation has work to do
        agg_id = conn.execute(insert(g.aggregates).values(
            uuid=str(uuid.uuid4()), name="reserved", metadata={"filter_tenant_id": "p-0"}, created_at=old,
            updated_at=old, deleted=0)).inserted_primary_key[0]
        conn.execute(insert(g.aggregate_hosts), [{"aggregate_id": agg_id, "host": h["name"]}
                                                 for h in hosts[: max(1, len(hosts) // 50)]])


class Fleet:
    """A database holding the fleet: a SQLite file, or a fresh database on the machine's MariaDB."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tmp = tempfile.TemporaryDirectory(prefix="canopy-bench-sched-")
        self.name = f"canopy_bench_{uuid.uuid4().hex[:8]}"
        if kind == "sqlite":
            self.url = f"sqlite:///{self.tmp.name}/fleet.db"
        else:
            with create_engine(f"{MARIADB}/mysql", isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f"CREATE DATABASE {self.name}"))
            self.url = f"{MARIADB}/{self.name}"
        self.db = Database(self.url, pool_size=8)
        upgrade_part(self.db.primary, "global")
        upgrade_part(self.db.primary, "cell")

    def close(self) -> None:
        self.db.dispose()
        if self.kind != "sqlite":
            engine = create_engine(f"{MARIADB}/mysql", isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {self.name}"))
            engine.dispose()
        self.tmp.cleanup()


# -- Canopy ----------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run_canopy(db: Database, asks: list[dict[str, Any]], placements: int, inflight: int) -> dict[str, Any]:
    sched = Scheduler(db, None, rng=random.Random(3), config=SchedulerConfig(refresh_s=1.0, audit_interval_s=0))
    t0 = time.perf_counter()
    await sched.refresh(force=True)
    load_s = time.perf_counter() - t0
    ix, chain = sched.index, sched.chain
    reqs = [Request(a["vcpus"], a["ram"], a["disk"], availability_zone=a["zone"], project_id=a["project"])
            for a in asks]
    for req in reqs[:50]:  # warm the mask cache and NumPy
        choose(ix, chain.select(ix, req), sched.rng)
    times = []
    for req in reqs:
        t = time.perf_counter()
        choose(ix, chain.select(ix, req), sched.rng, sched.cfg.top_k)
        times.append(time.perf_counter() - t)
    cold = []
    for req in reqs[:500]:  # the same, with the cache of request-independent masks emptied each time
        chain._cache.clear()
        t = time.perf_counter()
        choose(ix, chain.select(ix, req), sched.rng, sched.cfg.top_k)
        cold.append(time.perf_counter() - t)
    msgs = [SelectHost(instance_uuid="", project_id=a["project"], vcpus=a["vcpus"], memory_mb=a["ram"],
                       disk_gb=a["disk"], availability_zone=a["zone"]) for a in asks[:placements]]
    gate = asyncio.Semaphore(inflight)

    async def place(msg: SelectHost) -> None:
        async with gate:
            await sched.select_host(msg)

    t = time.perf_counter()
    await asyncio.gather(*(place(m) for m in msgs))
    place_s = time.perf_counter() - t
    return {"load_s": load_s, "decisions_per_s": len(times) / sum(times), "p50_ms": percentile(times, 50) * 1e3,
            "p99_ms": percentile(times, 99) * 1e3, "uncached_p50_ms": percentile(cold, 50) * 1e3,
            "uncached_p99_ms": percentile(cold, 99) * 1e3, "placements_per_s": len(msgs) / place_s,
            "lost_races": sched.stats["lost_races"], "bytes_per_host": ix.bytes_per_host()}


# -- Nova ------------------------------------------------------------------------------------------

NOVA_HARNESS = r'''
import json, sys, time, uuid, warnings
warnings.simplefilter("ignore")
from oslo_utils import timeutils
from nova import config, objects
objects.register_all()
config.parse_args([], default_config_files=[], configure_db=False, init_rpc=False)
from nova.scheduler import host_manager
# HostManager.__init__ loads cells, aggregates and instances from Nova's databases: not here.
host_manager.HostManager.refresh_cells_caches = lambda self: None
host_manager.HostManager._init_aggregates = lambda self: None
host_manager.HostManager._init_instance_info = lambda self, *a, **k: None
spec = json.load(open(sys.argv[1]))
hm = host_manager.HostManager()
now, cell = timeutils.utcnow(), str(uuid.uuid4())
states = []
for h in spec["hosts"]:
    hs = host_manager.HostState(h["name"], h["name"], cell)
    cn = objects.ComputeNode(
        uuid=str(uuid.uuid4()), host=h["name"], hypervisor_hostname=h["name"], memory_mb=h["ram"],
        free_ram_mb=h["ram"] - h["ram_used"], local_gb=h["disk"], local_gb_used=h["disk_used"],
        free_disk_gb=h["disk"] - h["disk_used"], disk_available_least=h["disk"] - h["disk_used"], vcpus=h["vcpus"],
        vcpus_used=h["vcpus_used"], updated_at=now, numa_topology=None,
        pci_device_pools=objects.PciDevicePoolList(objects=[]), host_ip="192.0.2.1", hypervisor_type="QEMU",
        hypervisor_version=7002000, cpu_info="{}", supported_hv_specs=[], stats={}, metrics="[]",
        cpu_allocation_ratio=4.0, ram_allocation_ratio=1.0, disk_allocation_ratio=1.0)
    seen = now if h["up"] else now.replace(year=now.year - 1)
    svc = {"disabled": not h["enabled"], "forced_down": False, "last_seen_up": seen, "updated_at": seen,
           "created_at": seen, "host": h["name"], "binary": "nova-compute", "id": 1, "uuid": str(uuid.uuid4())}
    hs.update(compute=cn, service=svc, aggregates=[], inst_dict={})
    states.append(hs)
times = []
for a in spec["requests"]:
    flavor = objects.Flavor(memory_mb=a["ram"], vcpus=a["vcpus"], root_gb=a["disk"], ephemeral_gb=0, swap=0,
                            extra_specs={}, name="f", flavorid="f")
    rs = objects.RequestSpec(flavor=flavor, image=objects.ImageMeta.from_dict({"properties": {}}),
                             instance_group=None, scheduler_hints={}, ignore_hosts=None, force_hosts=None,
                             force_nodes=None, requested_destination=None, num_instances=1, project_id=a["project"],
                             availability_zone=a["zone"], instance_uuid=str(uuid.uuid4()))
    t = time.perf_counter()
    weighed = hm.get_weighed_hosts(list(hm.get_filtered_hosts(states, rs)), rs)
    weighed[0]
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "filters": [type(f).__name__ for f in hm.enabled_filters],
                  "weighers": len(hm.weighers)}))
'''


def nova_python() -> Path:
    """The peer's interpreter, installing Nova into its own virtualenv the first time."""
    python = NOVA_VENV / "bin" / "python"
    if not (python.exists() and subprocess.run([python, "-c", "import nova.scheduler.host_manager"],
                                               capture_output=True).returncode == 0):
        print(f"installing nova into {NOVA_VENV} (once; several minutes) …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(NOVA_VENV)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "nova"], check=True)
    return python


def run_nova(hosts: list[dict[str, Any]], asks: list[dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="canopy-bench-nova-") as tmp:
        spec, harness = Path(tmp) / "fleet.json", Path(tmp) / "harness.py"
        spec.write_text(json.dumps({"hosts": hosts, "requests": asks}))
        harness.write_text(NOVA_HARNESS)
        done = subprocess.run([nova_python(), str(harness), str(spec)], capture_output=True, text=True, timeout=3600,
                              cwd=tmp)
    if done.returncode != 0:
        raise RuntimeError(f"nova harness failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    times = out["times"]
    return {"decisions_per_s": len(times) / sum(times), "p50_ms": statistics.median(times) * 1e3,
            "p99_ms": percentile(times, 99) * 1e3, "decisions": len(times), "filters": out["filters"],
            "weighers": out["weighers"]}


# -- the run ---------------------------------------------------------------------------------------


def bench_size(n: int, kind: str, quick: bool, nova: bool, inflight: int) -> dict[str, Any]:
    hosts = fleet_spec(n)
    fleet = Fleet(kind)
    try:
        t = time.perf_counter()
        fill(fleet.db, hosts)
        print(f"\n{n:,} hosts on {kind}: fleet written in {time.perf_counter() - t:.1f} s", flush=True)
        asks = requests(1000 if quick else 5000)
        canopy = asyncio.run(run_canopy(fleet.db, asks, 500 if quick else 2000, inflight))
    finally:
        fleet.close()
    row: dict[str, Any] = {"hosts": n, "db": kind, "inflight": inflight,
                           **{k: v for k, v in canopy.items() if k != "bytes_per_host"},
                           "bytes_per_host": canopy["bytes_per_host"]["total"],
                           "bytes_per_host_arrays": canopy["bytes_per_host"]["arrays"]}
    print(f"  canopy: load {canopy['load_s']:.2f} s; {canopy['placements_per_s']:,.0f} placements/s "
          f"(decision + claim, {inflight} in flight); {canopy['decisions_per_s']:,.0f} decisions/s; "
          f"p50 {canopy['p50_ms']:.3f} ms, "
          f"p99 {canopy['p99_ms']:.3f} ms (mask cache emptied: p50 {canopy['uncached_p50_ms']:.3f}, p99 "
          f"{canopy['uncached_p99_ms']:.3f} ms); {row['bytes_per_host']:.0f} bytes/host "
          f"({row['bytes_per_host_arrays']:.0f} in arrays); lost races {canopy['lost_races']}", flush=True)
    if nova and n <= NOVA_MAX_HOSTS:
        count = 3 if n >= 10_000 and quick else 10 if n >= 10_000 else 20
        peer = run_nova(hosts, requests(count, seed=13))
        row.update(nova_decisions_per_s=peer["decisions_per_s"], nova_p50_ms=peer["p50_ms"],
                   nova_p99_ms=peer["p99_ms"], ratio_vs_nova=row["decisions_per_s"] / peer["decisions_per_s"])
        print(f"  nova:   {peer['decisions_per_s']:,.2f} decisions/s; p50 {peer['p50_ms']:.1f} ms over "
              f"{peer['decisions']} decisions ({', '.join(peer['filters'])}; {peer['weighers']} weighers)")
        print(f"  canopy / nova decision rate: {row['ratio_vs_nova']:,.0f}×", flush=True)
    elif nova:
        print(f"  nova:   skipped above {NOVA_MAX_HOSTS:,} hosts")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default=None, help="fleet sizes, comma-separated (default 1000,10000,100000)")
    ap.add_argument("--db", choices=["sqlite", "mariadb"], default="sqlite")
    ap.add_argument("--no-nova", action="store_true", help="skip the Nova peer")
    ap.add_argument("--quick", action="store_true", help="fewer requests (default sizes 1000,10000)")
    ap.add_argument("--inflight", type=int, default=None,
                    help="placements in flight at once (default 1 on SQLite, whose transactions run inline; 8 on "
                         "MariaDB, as a scheduler serving concurrent calls would)")
    args = ap.parse_args()
    inflight = args.inflight or (1 if args.db == "sqlite" else 8)
    sizes = [int(x) for x in (args.hosts or ("1000,10000" if args.quick else "1000,10000,100000")).split(",")]
    rows = [bench_size(n, args.db, args.quick, not args.no_nova, inflight) for n in sizes]
    print("\nhosts      placements/s  decisions/s   p50 ms   p99 ms  bytes/host  nova dec/s   ratio")
    for r in rows:
        nova = f"{r['nova_decisions_per_s']:>10.2f}  {r['ratio_vs_nova']:>6,.0f}×" if "ratio_vs_nova" in r else ""
        print(f"{r['hosts']:>7,}  {r['placements_per_s']:>12,.0f}  {r['decisions_per_s']:>11,.0f}  "
              f"{r['p50_ms']:>7.3f}  {r['p99_ms']:>7.3f}  {r['bytes_per_host']:>10.0f}  {nova}")
    last = dict(rows[-1])
    last.setdefault("nova_decisions_per_s", None)
    last.setdefault("ratio_vs_nova", None)
    print(json.dumps({**last, "runs": rows}))


if __name__ == "__main__":
    main()
