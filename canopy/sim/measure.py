"""Reading the processes' figures: their stats files (canopy/sim/probe.py), their memory from /proc, and
the differences between two moments of a run."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def pss_kib(pid: int) -> int:
    """Proportional set size of a process (pages shared with others counted by share), KiB."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Sample:
    """Every process's figures at one moment."""

    t: float
    procs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def total(self, key: str, roles: str = "") -> float:
        """A scalar summed over processes (those whose role starts with `roles`)."""
        return sum(float(p.get(key, 0) or 0) for r, p in self.procs.items() if r.startswith(roles))

    def counts(self, key: str, roles: str = "", part: int | None = None) -> Counter[str]:
        """A counter summed over processes; `part` keeps one field of a `a|b` label."""
        out: Counter[str] = Counter()
        for r, p in self.procs.items():
            if r.startswith(roles):
                for label, n in (p.get(key) or {}).items():
                    out[label.split("|")[part] if part is not None else label] += n
        return out


def sample(cloud: Any) -> Sample:
    """Read every process's stats file and /proc figures now."""
    from canopy.optional import SIM_INSTALL, require

    psutil = require("psutil", install=SIM_INSTALL, needed_for="canopy sim")

    s = Sample(time.time())
    for p in cloud.procs:
        try:
            data = json.loads(p.stats.read_text())
        except (OSError, ValueError):
            data = {}
        try:
            ps = psutil.Process(p.popen.pid)
            cpu = ps.cpu_times()
            data["cpu_s"] = cpu.user + cpu.system
            data["rss_kib"] = ps.memory_info().rss // 1024
        except psutil.Error:
            pass
        data["pss_kib"] = pss_kib(p.popen.pid)
        s.procs[p.role] = data
    return s


def delta(a: Sample, b: Sample, key: str, roles: str = "", part: int | None = None) -> Counter[str]:
    """How much a counter grew between two samples."""
    out = b.counts(key, roles, part)
    out.subtract(a.counts(key, roles, part))
    return +out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def hist_percentile(counts: list[float], bounds: list[float], q: float) -> float:
    """The q-th percentile of a bucketed histogram (the bucket's upper bound)."""
    total = sum(counts)
    if not total:
        return 0.0
    cum = 0.0
    for n, bound in zip(counts, [*bounds, float("inf")], strict=True):
        cum += n
        if cum >= q / 100 * total:
            return bound if bound != float("inf") else bounds[-1]
    return bounds[-1]


def api_routes(a: Sample, b: Sample) -> dict[str, dict[str, float]]:
    """Per API route between two samples: requests, mean and p50/p99 from the api processes' histograms."""
    out: dict[str, dict[str, float]] = {}
    bounds: list[float] = []
    rows: dict[str, list[float]] = {}
    for sample_, sign in ((b, 1), (a, -1)):
        for role, p in sample_.procs.items():
            if not role.startswith("api"):
                continue
            bounds = p.get("api_bounds", bounds)
            for label, (n, total, buckets) in (p.get("api") or {}).items():
                row = rows.setdefault(label, [0.0] * (len(buckets) + 2))
                row[0] += sign * n
                row[1] += sign * total
                for i, c in enumerate(buckets):
                    row[2 + i] += sign * c
    for label, row in rows.items():
        if row[0] > 0:
            buckets = row[2:]
            out[label] = {"requests": row[0], "mean_ms": 1000 * row[1] / row[0],
                          "p50_ms": 1000 * hist_percentile(buckets, bounds, 50),
                          "p99_ms": 1000 * hist_percentile(buckets, bounds, 99)}
    return out
