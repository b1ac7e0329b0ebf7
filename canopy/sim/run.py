"""One simulation run: start the cloud, drive the workload with live progress, measure, check the
invariants, write the report."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import select

from canopy.sim import invariants as inv
from canopy.sim.control import Layout, SimCloud
from canopy.sim.measure import Sample, api_routes, delta, percentile, sample
from canopy.sim.profile import Profile
from canopy.sim.report import series_of, write_report
from canopy.sim.topology import subnet_for
from canopy.sim.workload import Driver

console = Console(stderr=True)


def simulate(layout: Layout, profile: Profile, duration_s: float, report_dir: Path, *,
             quiet: bool = False) -> dict[str, Any]:
    """Run one simulation and return its report (also written to `report_dir`)."""
    layout.public_ip_hold_s = profile.public_ip_hold_s
    cloud = SimCloud(layout, report_dir / "work")
    t_start = time.monotonic()
    try:
        cloud.write_config()
        cloud.migrate_and_seed()
        cloud.start_control()
        cloud.start_agents(profile.faults and dict(profile.faults), dict(profile.enroll))
        cloud.wait_agents(max(120.0, layout.hosts / 20), _printer(quiet, layout.hosts))
        started_s = time.monotonic() - t_start
        report = asyncio.run(_drive(cloud, profile, duration_s, quiet))
        report["startup_s"] = round(started_s, 1)
        report.update(_check(cloud, report))
    finally:
        cloud.stop()
    report.update(layout=asdict(layout), profile=profile.name, duration_s=duration_s,
                  command=" ".join(["canopy", "sim", *sys.argv[2:]]) if "sim" in sys.argv[:3] else "")
    write_report(report_dir, {k: v for k, v in report.items() if k != "_series"}, report.pop("_series", {}))
    cloud.drop_database()
    return report


def _printer(quiet: bool, hosts: int) -> Any:
    last = [0.0]

    def show(held: int) -> None:
        if not quiet and time.monotonic() - last[0] > 2:
            last[0] = time.monotonic()
            console.print(f"agents registered: {held}/{hosts}")

    return show


async def _drive(cloud: SimCloud, profile: Profile, duration_s: float, quiet: bool) -> dict[str, Any]:
    driver = Driver(cloud.api_urls, profile)
    await driver.setup()
    expected = int(profile.rate * duration_s * 1.5) + 64 if profile.rate else 20_000
    subnet = subnet_for(expected)
    await driver.add_subnet(subnet)
    samples = [sample(cloud)]
    events: list[str] = []
    run = asyncio.create_task(driver.run(duration_s))
    t0, end_of_offer = time.monotonic(), None
    with Live(_table(driver, samples, 0.0), console=console, refresh_per_second=2, transient=quiet) as live:
        while not run.done():
            await asyncio.sleep(1.0)
            elapsed = time.monotonic() - t0
            samples.append(sample(cloud))
            if end_of_offer is None and elapsed >= duration_s:
                end_of_offer = len(samples) - 1
            _events(cloud, driver, duration_s, elapsed, events)
            live.update(_table(driver, samples, elapsed))
        await run
    samples.append(sample(cloud))
    await driver.close()
    report = _figures(cloud, driver, samples, end_of_offer or len(samples) - 1)
    report.update(public_subnet=subnet, public_ip_hold_s=profile.public_ip_hold_s, events=events,
                  projects=[u["project_id"] for u in driver.users])
    report["_series"] = series_of(samples, driver.stats.series)
    report["_storm_before"] = getattr(cloud, "storm_before", None)
    return report


def _events(cloud: SimCloud, driver: Driver, duration_s: float, elapsed: float, events: list[str]) -> None:
    """The profile's scheduled events: a power event for every agent; a conductor killed and restarted."""
    profile = driver.profile
    storm_at = profile.storm.get("at_s")
    if storm_at and elapsed >= storm_at * duration_s and "storm" not in events:
        done = {u for u, t in driver.servers.items() if not t.plan and not t.busy}  # no step still to come
        cloud.storm_before = {u: s for u, s in _settled_states(cloud).items() if u in done}  # type: ignore[attr-defined]
        cloud.signal_agents(signal.SIGUSR1)
        events.append("storm")
    kill_at = profile.faults.get("kill_at_s")
    if kill_at and elapsed >= kill_at * duration_s and "kill-conductor" not in events:
        victim = next(p for p in cloud.procs if p.role.startswith("conductor"))
        cloud.restart(victim)
        events.append("kill-conductor")


def _settled_states(cloud: SimCloud) -> dict[str, str]:
    from canopy.db import tables_cell as c
    from canopy.db.engine import Databases

    dbs = Databases.from_urls(cloud.db_url, {"cell1": cloud.db_url})
    i = c.instances.c
    try:
        with dbs.cell("cell1").primary.connect() as conn:
            return {r.uuid: r.vm_state for r in conn.execute(select(i.uuid, i.vm_state).where(
                i.deleted.is_(False), i.task_state.is_(None), i.vm_state.in_(("active", "stopped"))))}
    finally:
        dbs.dispose()


def _table(driver: Driver, samples: list[Sample], elapsed: float) -> Table:
    t = Table(title=f"canopy sim — {elapsed:.0f}s", show_header=False)
    st = driver.stats
    s = st.series[-1] if st.series else {}
    rate = {}
    if len(samples) >= 2:
        a, b = samples[-2], samples[-1]
        dt = max(b.t - a.t, 1e-6)
        rate = {"DB statements/s": sum(delta(a, b, "statements").values()) / dt,
                "bus messages/s": sum(delta(a, b, "bus_handled").values()) / dt,
                "control CPU (cores)": (b.total("cpu_s") - b.total("cpu_s", "agents")
                                        - a.total("cpu_s") + a.total("cpu_s", "agents")) / dt}
    rows = {"agents held": int(samples[-1].total("agents_held", "agents")), "boots requested": st.boots_requested,
            "active": s.get("active", 0), "building": s.get("build", 0), "errors": sum(st.errors.values()),
            "create→ACTIVE p50 (client)": f"{percentile(st.create_to_active_client, 50) * 1000:.0f} ms",
            **{k: f"{v:.1f}" for k, v in rate.items()}}
    for k, v in rows.items():
        t.add_row(k, str(v))
    return t


def _figures(cloud: SimCloud, driver: Driver, samples: list[Sample], offer_end: int) -> dict[str, Any]:
    """The report's figures: rates over the offered window, costs per boot over the whole run."""
    from canopy.db import tables_cell as c
    from canopy.db.engine import Databases

    first, mid, last = samples[0], samples[offer_end], samples[-1]
    window = max(mid.t - first.t, 1e-6)
    projects = [u["project_id"] for u in driver.users]
    dbs = Databases.from_urls(cloud.db_url, {"cell1": cloud.db_url})
    i = c.instances.c
    with dbs.cell("cell1").primary.connect() as conn:
        rows = conn.execute(select(i.created_at, i.launched_at, i.deleted).where(i.project_id.in_(projects))).all()
    dbs.dispose()
    c2a = [(r.launched_at - r.created_at).total_seconds() for r in rows if r.launched_at is not None]
    launched_in_window = [r for r in rows if r.launched_at is not None]
    held = int(last.total("agents_held", "agents"))
    control_cpu = _control_cpu(last) - _control_cpu(first)
    statements = delta(first, mid, "statements")
    handled = delta(first, mid, "bus_handled", part=0)
    boots = len(rows)
    per_proc = {r: {"cpu_s": round(p.get("cpu_s", 0) - first.procs.get(r, {}).get("cpu_s", 0), 2),
                    "peak_rss_kib": p.get("peak_rss_kib", 0), "pss_kib": p.get("pss_kib", 0)}
                for r, p in last.procs.items()}
    agent_pss = sum(p.get("pss_kib", 0) for r, p in mid.procs.items() if r.startswith("agents"))
    return {
        "hosts": cloud.layout.hosts, "agents_held": held, "boots": boots,
        "boots_accepted_by_api": driver.stats.boots_requested,
        "boots_per_s": round(len(launched_in_window) / max(last.t - first.t, 1e-6), 2),
        "offered_boots_per_s": driver.profile.rate,
        "servers_live": sum(1 for r in rows if not r.deleted),
        "create_to_active_p50_ms": round(percentile(c2a, 50) * 1000, 1),
        "create_to_active_p99_ms": round(percentile(c2a, 99) * 1000, 1),
        "create_to_active_max_ms": round(max(c2a, default=0) * 1000, 1),
        "create_to_active_client_p50_ms": round(percentile(driver.stats.create_to_active_client, 50) * 1000, 1),
        "create_to_active_client_p99_ms": round(percentile(driver.stats.create_to_active_client, 99) * 1000, 1),
        "control_cpu_ms_per_boot": round(1000 * control_cpu / max(boots, 1), 2),
        "control_cpu_cores": round(control_cpu / max(last.t - first.t, 1e-6), 3),
        "agent_cpu_cores": round((last.total("cpu_s", "agents") - first.total("cpu_s", "agents"))
                                 / max(last.t - first.t, 1e-6), 3),
        "agent_memory_kib": round(agent_pss / max(held, 1), 2),
        "agent_pss_total_mib": round(agent_pss / 1024, 1),
        "control_pss_mib": round(sum(p.get("pss_kib", 0) for r, p in mid.procs.items()
                                     if not r.startswith("agents")) / 1024, 1),
        "db_queries_per_s": round(sum(statements.values()) / window, 1),
        "db_statements_by_origin_per_s": {k: round(v / window, 2) for k, v in
                                          delta(first, mid, "statements", part=0).most_common(25)},
        "db_statements_by_database": dict(delta(first, mid, "statements", part=1)),
        "db_statements_per_api_call": round(sum(n for k, n in delta(first, mid, "statements", part=0).items()
                                                if k.startswith("api:") or ":" in k and not k.startswith("bus:"))
                                            / max(sum(len(v) for v in driver.stats.latencies.values()), 1), 2),
        "bus_msgs_per_s": round(sum(handled.values()) / window, 1),
        "bus_msgs_by_kind_per_s": {k: round(v / window, 2) for k, v in handled.most_common()},
        "bus_bytes_per_s": {k: round(v / window, 1) for k, v in delta(first, mid, "bus_bytes").items()},
        "heartbeats_per_s": round((mid.total("heartbeats_sent", "agents") - first.total("heartbeats_sent", "agents"))
                                  / window, 1),
        "scheduler_decisions_per_s": round(sum(delta(first, mid, "sched").values()) / window, 2),
        "scheduler_decisions": dict(delta(first, last, "sched")),
        "scheduler_events": dict(delta(first, last, "sched_events")),
        "api_routes_server": api_routes(first, last),
        "api_routes_client": {k: {"requests": len(v), "p50_ms": round(percentile(v, 50) * 1000, 1),
                                  "p99_ms": round(percentile(v, 99) * 1000, 1)}
                              for k, v in driver.stats.latencies.items()},
        "errors": dict(driver.stats.errors), "actions": dict(driver.stats.actions),
        "processes": per_proc,
    }


def _control_cpu(s: Sample) -> float:
    return s.total("cpu_s") - s.total("cpu_s", "agents")


def _check(cloud: SimCloud, report: dict[str, Any]) -> dict[str, Any]:
    """Every invariant, against the database and the agents (asked for their guests and flows)."""
    from canopy.db.engine import Databases

    states = cloud.host_states(timeout_s=max(60.0, cloud.layout.hosts / 100))
    dbs = Databases.from_urls(cloud.db_url, {"cell1": cloud.db_url})
    projects = report["projects"]
    try:
        checks = [inv.servers_settled(dbs, "cell1", projects), inv.capacity(dbs, "cell1"), inv.ips_unique(dbs, "cell1"),
                  inv.no_leaked_ports(dbs, "cell1"), inv.guests(dbs, "cell1", states),
                  inv.flows(dbs, "cell1", states, {}), inv.counts(dbs, "cell1", projects, report)]
        before = report.pop("_storm_before", None)
        if before:
            checks.append(inv.unchanged_since(dbs, "cell1", before))
    finally:
        dbs.dispose()
    return {"invariants": [asdict(c) for c in checks], "invariants_ok": all(c.ok for c in checks)}
