"""Cells benchmark (issue 19): enrollment rate, and the servers list across 3 cells.

    python bench/cells.py                   # 10,000 hosts, 100,000 servers
    python bench/cells.py --quick           # 1,500 hosts, 15,000 servers
    python bench/cells.py --backend mariadb # cells as MariaDB databases (127.0.0.1:3306 root), dropped after

A global database and 3 cell databases (SQLite files in a temp folder, or MariaDB databases created and
dropped), 3 data centers each run by one cell, racks of 40. The api is the real ASGI app in-process
(no TCP port: what is measured is the api and its databases, not loopback HTTP).

Enrollment: a simulated week — 7 daily batches (hundreds of hosts a day, time compressed): each batch is
pre-registered from a CSV with one token per host (`canopy host enroll`'s code), then every host's agent
enrolls through `POST /compute/v2.1/canopy-enroll` with its hardware report, 32 at a time. The rate is
hosts enrolled per second of enrollment requests (pre-registration reported apart).

Listing: 100,000 servers written straight into the cell databases (a third each, with their global
instance mappings), all in the demo project; `GET /compute/v2.1/servers?limit=100` as demo, the first page
and a later page (a marker a third of the way in), 200 samples each.

The last line is one JSON object: hosts, enroll_hosts_per_s, preregister_hosts_per_s, servers,
list_first_p50_ms, list_first_p99_ms, list_later_p50_ms, list_later_p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

import httpx  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402

from canopy.agent.enroll import enroll, hardware_report, simulated_facts  # noqa: E402
from canopy.agent.virt.fake import FakeDriver  # noqa: E402
from canopy.api.app import build_app  # noqa: E402
from canopy.config import Settings  # noqa: E402
from canopy.db import enrollment as enr  # noqa: E402
from canopy.db import inventory as inv  # noqa: E402
from canopy.db import tables_cell as c  # noqa: E402
from canopy.db import tables_global as g  # noqa: E402
from canopy.db.cells import register_cell  # noqa: E402
from canopy.db.migrate import upgrade_all, upgrade_part  # noqa: E402
from canopy.rpc.local import LocalTransport  # noqa: E402
from canopy.runtime import Cloud, open_databases  # noqa: E402
from canopy.seed import seed  # noqa: E402

CELLS = ("cell1", "cell2", "cell3")
RACK_SIZE = 40
DAYS = 7
MARIADB = "mysql+pymysql://root@127.0.0.1:3306"


def urls(backend: str, tmp: Path, tag: str) -> dict[str, str]:
    """The global and cell database URLs (MariaDB databases are created here, dropped by drop_all)."""
    names = ["global", *CELLS]
    if backend == "sqlite":
        return {n: f"sqlite:///{tmp / f'{n}.db'}" for n in names}
    engine = create_engine(MARIADB)
    with engine.begin() as conn:
        for n in names:
            conn.execute(text(f"CREATE DATABASE canopy_bench_{tag}_{n}"))
    engine.dispose()
    return {n: f"{MARIADB}/canopy_bench_{tag}_{n}" for n in names}


def drop_all(backend: str, tag: str) -> None:
    if backend != "mariadb":
        return
    engine = create_engine(MARIADB)
    with engine.begin() as conn:
        for n in ["global", *CELLS]:
            conn.execute(text(f"DROP DATABASE IF EXISTS canopy_bench_{tag}_{n}"))
    engine.dispose()


def open_cloud(tmp: Path, db_urls: dict[str, str]) -> Cloud:
    settings = Settings(data_dir=tmp / "var").resolved()
    settings.api.rate_limits.enabled = False  # figures of the control plane, not of its limits
    settings.auth.token_secret = "bench-secret"
    settings.database.global_url, settings.database.cell_url = db_urls["global"], db_urls["cell1"]
    settings.api.max_page_size = 1000
    dbs = open_databases(settings)
    upgrade_all(dbs)
    seed(dbs, settings.data_dir / "images")
    now = dt.datetime(2026, 1, 1)
    for cell in CELLS[1:]:
        with dbs.global_db.writer() as conn:
            register_cell(conn, cell, db_urls[cell], "", now)
        upgrade_part(dbs.add_cell(cell, db_urls[cell]).primary, "cell")
    return Cloud(settings=settings, dbs=dbs, bus=LocalTransport())


def make_racks(cloud: Cloud, hosts: int) -> list[str]:
    """3 data centers (dc2, dc3 run by cell2, cell3), racks of 40: each rack as `dc/rack`, enough for `hosts`."""
    now, out = cloud.clock.now(), []
    per_dc = -(-hosts // (len(CELLS) * RACK_SIZE))
    with cloud.dbs.global_db.writer() as conn:
        for n, cell in enumerate(CELLS, start=1):
            dc = f"dc{n}"
            inv.create_record(conn, inv.KINDS["datacenters"], {"name": dc, "cell_name": None if n == 1 else cell}, now)
            row = inv.create_record(conn, inv.KINDS["rows"], {"name": "row-a", "datacenter": dc}, now)
            for r in range(per_dc):
                inv.create_record(conn, inv.KINDS["racks"], {"name": f"r{r:03d}", "row_id": row["id"]}, now)
                out.append(f"{dc}/r{r:03d}")
    return out


def day_csv(names: list[str], racks: list[str], offset: int) -> str:
    lines = ["name,rack,serial,macs"]
    for k, name in enumerate(names):
        facts = simulated_facts(name)
        lines.append(f"{name},{racks[(offset + k) // RACK_SIZE]},{facts.serial},{' '.join(facts.nics.values())}")
    return "\n".join(lines) + "\n"


async def enroll_week(cloud: Cloud, http: httpx.AsyncClient, hosts: int) -> tuple[float, float]:
    """Pre-register and enroll `hosts` in DAYS batches; (enrolled per s, pre-registered per s)."""
    racks = make_racks(cloud, hosts)
    racks_per_dc = len(racks) // len(CELLS)
    names = [f"hv-{n:05d}" for n in range(hosts)]  # host n is in rack n // 40, of data center (rack // racks_per_dc)
    enroll_s = prereg_s = 0.0
    gate = asyncio.Semaphore(32)
    per_day = -(-hosts // DAYS)
    for day in range(DAYS):
        batch = names[day * per_day:(day + 1) * per_day]
        if not batch:
            break
        t0 = time.perf_counter()
        rows = enr.parse_hosts_csv(day_csv(batch, racks, day * per_day))
        tokens: list[tuple[str, str]] = []
        now = cloud.clock.now()
        with cloud.dbs.global_db.writer() as conn:
            enr.preregister(conn, rows, now)
            for cell_no, cell in enumerate(CELLS):
                mine = [n for n in batch if int(n[3:]) // RACK_SIZE // racks_per_dc == cell_no]
                tokens += zip(mine, enr.issue_tokens(conn, cell, list[str | None](mine), dt.timedelta(days=3),
                                                     now), strict=True)
        prereg_s += time.perf_counter() - t0
        t0 = time.perf_counter()

        async def one(name: str, token: str) -> None:
            async with gate:
                hw = hardware_report(FakeDriver(name, vcpus=64, memory_mb=262144, local_gb=2000),
                                     simulated_facts(name))
                await enroll(http, token, name, hw)

        await asyncio.gather(*(one(n, t) for n, t in tokens))
        enroll_s += time.perf_counter() - t0
        print(f"day {day + 1}: {len(batch)} hosts enrolled", file=sys.stderr)
    return hosts / enroll_s, hosts / prereg_s


def write_servers(cloud: Cloud, servers: int, project: str) -> list[str]:
    """`servers` ACTIVE servers, a third in each cell, with mappings; their ids in creation order."""
    t0, ids = dt.datetime(2026, 1, 1), []
    for n_cell, cell in enumerate(CELLS):
        rows, maps = [], []
        for k in range(n_cell, servers, len(CELLS)):
            sid, when = str(uuid.UUID(int=k + 1)), t0 + dt.timedelta(seconds=k)
            ids.append(sid)
            rows.append({"uuid": sid, "project_id": project, "user_id": "u", "name": f"vm-{k}", "flavor_id": "1",
                         "flavor": {"vcpus": 1, "ram": 512, "disk": 1, "name": "m1.tiny"}, "vm_state": "active",
                         "power_state": 1, "host": f"hv-{cell}", "created_at": when, "updated_at": when})
            maps.append({"instance_uuid": sid, "cell_name": cell, "project_id": project})
        for i in range(0, len(rows), 5000):
            with cloud.dbs.cell(cell).writer() as conn:
                conn.execute(insert(c.instances), rows[i:i + 5000])
            with cloud.dbs.global_db.writer() as conn:
                conn.execute(insert(g.instance_mappings), maps[i:i + 5000])
    return sorted(ids, key=lambda s: uuid.UUID(s).int)


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] if len(samples) > 1 else samples[0]


async def time_list(http: httpx.AsyncClient, token: str, query: str, samples: int) -> list[float]:
    out = []
    headers = {"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.87"}
    for _ in range(samples):
        t0 = time.perf_counter()
        resp = await http.get(f"/compute/v2.1/servers?{query}", headers=headers)
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200 and len(resp.json()["servers"]) == 100, resp.text[:300]
    return out


async def main(hosts: int, servers: int, backend: str, samples: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="canopy-bench-cells-") as tmp:
        try:
            cloud = open_cloud(Path(tmp), urls(backend, Path(tmp), tag))
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(cloud)), base_url="http://b")
            try:
                enroll_rate, prereg_rate = await enroll_week(cloud, http, hosts)
                body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                    "name": "demo", "domain": {"id": "default"}, "password": "demo"}}},
                    "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}
                resp = await http.post("/identity/v3/auth/tokens", json=body)
                token, project = resp.headers["x-subject-token"], resp.json()["token"]["project"]["id"]
                ids = write_servers(cloud, servers, project)
                first = await time_list(http, token, "limit=100", samples)
                marker = ids[len(ids) * 2 // 3]  # newest first: a third of the way in
                later = await time_list(http, token, f"limit=100&marker={marker}", samples)
            finally:
                await http.aclose()
                cloud.dbs.dispose()
        finally:
            drop_all(backend, tag)
    return {"backend": backend, "hosts": hosts, "enroll_hosts_per_s": round(enroll_rate, 1),
            "preregister_hosts_per_s": round(prereg_rate, 1), "servers": servers,
            "list_first_p50_ms": round(pct(first, 50), 1), "list_first_p99_ms": round(pct(first, 99), 1),
            "list_later_p50_ms": round(pct(later, 50), 1), "list_later_p99_ms": round(pct(later, 99), 1)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backend", choices=("sqlite", "mariadb"), default="sqlite")
    args = ap.parse_args()
    n_hosts, n_servers, n_samples = (1500, 15_000, 50) if args.quick else (10_000, 100_000, 200)
    print(json.dumps(asyncio.run(main(n_hosts, n_servers, args.backend, n_samples))))
