"""The simulator on a small fleet: the real control plane as separate processes, 200 real agents in two
processes on ZeroMQ, SQLite; every invariant is checked at the end of each run."""

from __future__ import annotations

from pathlib import Path

from canopy.sim.control import Layout
from canopy.sim.profile import Profile, load_profile
from canopy.sim.run import simulate

CHECKS = {"servers_settled", "capacity", "ips_unique", "no_leaked_ports", "guests", "flows", "counts"}


def _checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["invariants"]}


def test_churn_on_200_agents_keeps_every_invariant(tmp_path: Path) -> None:
    profile = Profile(name="churn-test", rate=8.0, lifetime_s=(0.5, 1.5), projects=2,
                      flavors={"1": 2.0, "2": 1.0}, multi_create=0.1, server_group=0.1,
                      actions={"stop_start": 0.2, "reboot": 0.2, "resize": 0.1})
    report = simulate(Layout(hosts=200, agent_procs=2, spawn_delay_s=0.05, op_delay_s=0.02), profile, 5.0,
                      tmp_path, quiet=True)
    checks = _checks(report)
    assert set(checks) == CHECKS
    assert report["invariants_ok"], [c for c in checks.values() if not c["ok"]]
    assert report["agents_held"] == 200
    assert checks["flows"]["checked"] == 200 and checks["guests"]["checked"] == 200
    assert report["boots"] >= 20 and report["boots"] == report["boots_accepted_by_api"]
    assert report["actions"].get("delete", 0) > 0
    assert report["heartbeats_per_s"] > 0 and report["agent_memory_kib"] > 0
    for key in ("create_to_active_p50_ms", "create_to_active_p99_ms", "control_cpu_ms_per_boot",
                "db_queries_per_s", "bus_msgs_per_s", "boots_per_s"):
        assert report[key] > 0, key
    assert (tmp_path / "report.json").exists()
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()


def test_storm_every_agent_restarts_and_hosts_reconcile(tmp_path: Path) -> None:
    base = load_profile("storm")
    profile = Profile(**{**base.__dict__, "rate": 8.0, "lifetime_s": (0.3, 0.6), "storm": {"at_s": 0.6}})
    report = simulate(Layout(hosts=200, agent_procs=2, spawn_delay_s=0.05, op_delay_s=0.02), profile, 6.0,
                      tmp_path, quiet=True)
    checks = _checks(report)
    assert report["events"] == ["storm"]
    assert checks["unchanged_by_storm"]["checked"] > 10  # servers that had settled before the power event
    assert report["invariants_ok"], [c for c in checks.values() if not c["ok"]]
    assert checks["guests"]["checked"] == 200 and checks["flows"]["checked"] == 200
