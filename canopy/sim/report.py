"""The run's report: `report.json` (the figures) and a self-contained `report.html` (the figures, the
invariants, and a plot of each figure against time, as PNGs embedded in the page)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from canopy.sim.measure import Sample


def series_of(samples: list[Sample], driver_series: list[dict[str, float]]) -> dict[str, list[tuple[float, float]]]:
    """Each figure against time (seconds from the first sample): rates between consecutive samples."""
    if not samples:
        return {}
    t0 = samples[0].t
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in (
        "control CPU (cores)", "agent CPU (cores)", "DB statements/s", "bus messages/s", "scheduler decisions/s",
        "heartbeats/s", "agent PSS per agent (KiB)", "control RSS (MiB)")}
    for a, b in zip(samples, samples[1:], strict=False):
        dt, t = max(b.t - a.t, 1e-6), b.t - t0
        ctrl = [r for r in b.procs if not r.startswith("agents")]
        out["control CPU (cores)"].append((t, sum(b.procs[r].get("cpu_s", 0) - a.procs.get(r, {}).get("cpu_s", 0)
                                                  for r in ctrl) / dt))
        out["agent CPU (cores)"].append((t, (b.total("cpu_s", "agents") - a.total("cpu_s", "agents")) / dt))
        for name, key in (("DB statements/s", "statements"), ("bus messages/s", "bus_handled"),
                          ("scheduler decisions/s", "sched")):
            out[name].append((t, (sum(b.counts(key).values()) - sum(a.counts(key).values())) / dt))
        beats = b.total("heartbeats_sent", "agents") - a.total("heartbeats_sent", "agents")
        out["heartbeats/s"].append((t, beats / dt))
        held = max(b.total("agents_held", "agents"), 1)
        out["agent PSS per agent (KiB)"].append((t, b.total("pss_kib", "agents") / held))
        out["control RSS (MiB)"].append((t, sum(b.procs[r].get("rss_kib", 0) for r in ctrl) / 1024))
    if driver_series:
        for key in ("active", "build", "inflight"):
            out[f"servers {key}"] = [(d["t"] - t0, d[key]) for d in driver_series]
    return out


def _png(title: str, points: list[tuple[float, float]]) -> str:
    from canopy.optional import SIM_INSTALL, require

    require("matplotlib", install=SIM_INSTALL, needed_for="canopy sim's report").use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.4), dpi=80)
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("s")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_report(folder: Path, report: dict[str, Any], series: dict[str, list[tuple[float, float]]]) -> None:
    """report.json and report.html in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in report.items() if not isinstance(v, (dict, list)))
    checks = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td>{'ok' if c['ok'] else 'FAILED'}</td><td>{c['checked']}</td>"
        f"<td>{html.escape('; '.join(c['examples']))}</td></tr>" for c in report.get("invariants", []))
    plots = "".join(f'<img alt="{html.escape(k)}" src="data:image/png;base64,{_png(k, v)}">' for k, v in series.items())
    details = html.escape(json.dumps({k: v for k, v in report.items() if isinstance(v, (dict, list))}, indent=1,
                                     default=str))
    (folder / "report.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>canopy sim: {html.escape(str(report.get('profile')))}</title>"
        "<style>body{font-family:sans-serif;max-width:1300px;margin:auto}td{padding:2px 8px}"
        "img{margin:4px;border:1px solid #ddd}</style>"
        f"<h1>canopy sim run: {report.get('hosts')} hosts, profile {html.escape(str(report.get('profile')))}</h1>"
        f"<p>{html.escape(str(report.get('command', '')))}</p>"
        f"<h2>Figures</h2><table>{rows}</table><h2>Invariants</h2>"
        f"<table><tr><th>check</th><th></th><th>checked</th><th>examples</th></tr>{checks}</table>"
        f"<h2>Against time</h2>{plots}<h2>Details</h2><pre>{details}</pre>")
