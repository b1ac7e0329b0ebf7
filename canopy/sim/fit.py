"""The scaling guide's models: runs at several fleet sizes (and boot rates), each cost fitted against them
(linear, and power law in log-log space, whichever fits better), and a plan read off the fitted models.

    cost(hosts) = a + b·hosts          (linear)
    cost(hosts) = a·hosts^k            (power law; k near 0: flat, near 1: linear)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

# the figures fitted against the fleet size, and what one process of each kind can take (measured on this
# machine: one core per process; the plan divides the predicted load by these)
COSTS = ("db_queries_per_s", "bus_msgs_per_s", "control_cpu_ms_per_boot", "heartbeats_per_s", "agent_memory_kib",
         "control_cpu_cores", "create_to_active_p99_ms")


def fit(xs: list[float], ys: list[float]) -> dict[str, Any]:
    """The better of a linear and a power-law fit of ys against xs, with R² and the points."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    out: dict[str, Any] = {"points": [[a, b] for a, b in zip(xs, ys, strict=True)]}
    if len(x) < 2:
        out["model"] = {"kind": "constant", "a": float(y.mean()) if len(y) else 0.0, "r2": 0.0}
        return out
    b, a = np.polyfit(x, y, 1)
    fits: list[dict[str, Any]] = [{"kind": "linear", "a": float(a), "b": float(b), "r2": _r2(y, a + b * x)}]
    if (x > 0).all() and (y > 0).all():
        k, loga = np.polyfit(np.log(x), np.log(y), 1)
        fits.append({"kind": "power", "a": float(math.exp(loga)), "k": float(k),
                     "r2": _r2(y, math.exp(loga) * x ** k)})
    out["model"] = max(fits, key=lambda f: f["r2"])
    out["range"] = [float(x.min()), float(x.max())]
    return out


def _r2(y: Any, pred: Any) -> float:
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res < 1e-9 else 0.0)


def predict(model: dict[str, Any], x: float) -> float:
    """A fitted model's value at x."""
    if model["kind"] == "linear":
        return float(model["a"] + model["b"] * x)
    if model["kind"] == "power":
        return float(model["a"] * x ** model["k"])
    return float(model["a"])


def describe(name: str, model: dict[str, Any]) -> str:
    """The model as a formula."""
    if model["kind"] == "linear":
        return f"{name} = {model['a']:.4g} + {model['b']:.4g}·hosts (R² {model['r2']:.3f})"
    if model["kind"] == "power":
        return f"{name} = {model['a']:.4g}·hosts^{model['k']:.3f} (R² {model['r2']:.3f})"
    return f"{name} = {model['a']:.4g} (one point)"


def run_sweep(hosts: list[int], rates: list[float], profile: str, duration: float, folder: Path, *,
              agent_procs: int = 2, db: str = "") -> dict[str, Any]:
    """One run per fleet size (at the profile's rate), then per rate at the largest fleet; fit; write
    models.json."""
    from canopy.sim.control import Layout
    from canopy.sim.profile import load_profile
    from canopy.sim.run import simulate

    base = load_profile(profile)
    runs: list[dict[str, Any]] = []
    plan = [(h, None) for h in hosts] + [(max(hosts), r) for r in rates]
    for h, rate in plan:
        report = simulate(Layout(hosts=h, agent_procs=agent_procs, db=db), base.with_rate(rate), duration,
                          folder / f"hosts-{h}-rate-{rate if rate is not None else base.rate:g}", quiet=True)
        runs.append({k: report.get(k) for k in ("hosts", "offered_boots_per_s", "boots_per_s", "invariants_ok",
                                                *COSTS)})
    by_size = [r for r in runs[:len(hosts)]]
    models = {name: fit([r["hosts"] for r in by_size], [float(r[name] or 0) for r in by_size]) for name in COSTS}
    by_rate = [r for r in runs if r["hosts"] == max(hosts)]
    rate_models = {name: fit([r["boots_per_s"] for r in by_rate], [float(r[name] or 0) for r in by_rate])
                   for name in ("db_queries_per_s", "bus_msgs_per_s", "control_cpu_cores")} if rates else {}
    result = {"profile": profile, "duration_s": duration, "runs": runs, "models": models, "rate_models": rate_models,
              "reference_rate": base.rate}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.json").write_text(json.dumps(result, indent=1))
    return result


def plan_for(sweep: dict[str, Any], hosts: int, boots_per_s: float) -> list[str]:
    """The plan for a fleet and boot rate, from a sweep's models, each line saying where it extrapolates."""
    models, lines = sweep["models"], []
    lo, hi = models["db_queries_per_s"].get("range", [0, 0])
    far = f" — extrapolated from {lo:g}–{hi:g} hosts" if not lo <= hosts <= hi else ""
    ref_rate = float(sweep.get("reference_rate") or 1.0)
    scale = boots_per_s / ref_rate if ref_rate else 1.0
    cpu_per_boot = predict(models["control_cpu_ms_per_boot"]["model"], hosts)
    beats = hosts / 10.0  # every host beats every 10 s
    beat_cost = predict(models["heartbeats_per_s"]["model"], hosts)
    control_cores = cpu_per_boot * boots_per_s / 1000 + 0.0
    db = predict(models["db_queries_per_s"]["model"], hosts)
    bus = predict(models["bus_msgs_per_s"]["model"], hosts)
    # the boot-driven part of the rates grows with the rate (linearly, unless a rate sweep says otherwise)
    rate_note = " (scaled linearly with the boot rate: no rate sweep)" if not sweep.get("rate_models") else ""
    lines.append(f"plan for {hosts} hosts at {boots_per_s * 60:g} boots/min ({boots_per_s:g}/s){far}")
    lines.append(f"  control-plane CPU: {cpu_per_boot:.1f} ms per boot → {control_cores:.2f} cores for boots, "
                 f"plus heartbeats ({beats:.0f}/s; measured {beat_cost:.0f}/s in the runs)")
    lines.append(f"  conductors: {max(1, math.ceil(control_cores * 0.6 / 0.7))}, schedulers: "
                 f"{max(1, math.ceil(boots_per_s / 500))}, api: {max(1, math.ceil(control_cores * 0.3 / 0.7))} "
                 "(each process kept under 70% of a core; conductors carry about 60% of the control CPU, api 30%)")
    lines.append(f"  database: {db * scale:.0f} statements/s at this rate{rate_note}; reads go to replicas: "
                 f"{max(0, math.ceil(db * scale / 20000) - 1)} replica(s) beyond the primary "
                 "at 20,000 statements/s each")
    lines.append(f"  bus: {bus * scale:.0f} messages/s{rate_note}")
    for name in COSTS:
        lines.append(f"  model: {describe(name, models[name]['model'])}; points {models[name]['points']}")
    return lines
