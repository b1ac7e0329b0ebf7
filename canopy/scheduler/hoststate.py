"""The fleet as arrays in memory (structure of arrays): one slot per host, one array per attribute.

Filters and weighers work on whole arrays at once. The index is filled and kept current by the
change feed (`feed.py`); this module only knows how to take a row into the arrays. Strings (zones,
racks, hypervisor types) are stored as small integer codes, so a zone filter is one comparison.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canopy.scheduler.aggregates import AggregateView

AGENT_BINARY = "canopy-agent"
DEFAULT_ARCH = "x86_64"
_GROW = 1024
Array = np.ndarray[Any, Any]

# name → dtype. float32 is exact for whole numbers below 2**24 (16 TiB of RAM in MB), and halves the
# memory traffic of every filter compared with float64.
COLUMNS: dict[str, Any] = {
    "id": np.int64,
    "vcpu_limit": np.float32, "ram_limit": np.float32, "disk_limit": np.float32,
    "vcpu_free": np.float32, "ram_free": np.float32, "disk_free": np.float32,
    "enabled": np.bool_, "enrolled": np.bool_, "service_ok": np.bool_, "present": np.bool_, "alive": np.bool_,
    "has_service": np.bool_,
    "last_seen": np.float64,
    "zone": np.int32, "host_zone": np.int32, "rack": np.int32,
    "hv_type": np.int16, "arch": np.int16, "hv_version": np.int32,
    # Weights per resource (from the deployment, or an aggregate's metadata): negative packs.
    "w_ram": np.float32, "w_cpu": np.float32, "w_disk": np.float32,
    "score": np.float32, "jitter": np.float32,
}


_RESOURCES = (("w_ram", "ram_free", "ram_limit"), ("w_cpu", "vcpu_free", "vcpu_limit"),
              ("w_disk", "disk_free", "disk_limit"))


def rack_key(row: Any) -> str:
    """A host's rack as the segments API names racks: `datacenter/rack` (empty when it reported none)."""
    return f"{row.datacenter or 'dc1'}/{row.rack}" if row.rack else ""


class Codebook:
    """Strings as small integers; code 0 is the empty string (unknown)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {"": 0}
        self.names: list[str] = [""]

    def code(self, name: str) -> int:
        """The code of `name`, assigning the next one if it is new."""
        found = self.codes.get(name)
        if found is None:
            found = self.codes[name] = len(self.names)
            self.names.append(name)
        return found

    def lookup(self, name: str) -> int:
        """The code of a known name, or -1 (which no host has)."""
        return self.codes.get(name, -1)


@dataclass
class Weights:
    """The deployment's weigher settings: per-resource multipliers; negative means pack."""

    ram: float = 1.0
    cpu: float = 1.0
    disk: float = 0.5

    @classmethod
    def for_strategy(cls, strategy: str, ram: float = 1.0, cpu: float = 1.0, disk: float = 0.5) -> Weights:
        sign = -1.0 if strategy == "pack" else 1.0
        return cls(sign * abs(ram), sign * abs(cpu), sign * abs(disk))


@dataclass
class HostIndex:
    """Capacity, limits, labels and liveness of every host, as NumPy arrays."""

    weights: Weights = field(default_factory=Weights)
    size: int = 0
    names: list[str] = field(default_factory=list)
    by_name: dict[str, int] = field(default_factory=dict)
    cols: dict[str, Array] = field(default_factory=dict)
    zones: Codebook = field(default_factory=Codebook)
    racks: Codebook = field(default_factory=Codebook)
    hv_types: Codebook = field(default_factory=Codebook)
    archs: Codebook = field(default_factory=Codebook)
    aggregates: AggregateView = field(default_factory=AggregateView)
    # Bumped whenever something a cached mask depends on changes (labels, aggregates, liveness).
    generation: int = 0
    rng_seed: int = 0
    alive_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.cols:
            self._allocate(_GROW)

    def _allocate(self, capacity: int) -> None:
        old, self.cols = self.cols, {name: np.zeros(capacity, dtype=t) for name, t in COLUMNS.items()}
        for name, arr in old.items():
            self.cols[name][: len(arr)] = arr
        # Tie-breaking noise, different in each scheduler process, so that concurrent schedulers facing
        # hosts of equal score do not all reach for the same one.
        fresh = np.random.default_rng(self.rng_seed + capacity).random(capacity).astype(np.float32) * 1e-4
        self.cols["jitter"][len(old.get("jitter", ())):] = fresh[len(old.get("jitter", ())):]

    def view(self, name: str) -> Array:
        """The live part of one column."""
        return self.cols[name][: self.size]

    def _slot(self, name: str) -> int:
        i = self.by_name.get(name)
        if i is None:
            i = self.size
            if i >= len(self.cols["id"]):
                self._allocate(len(self.cols["id"]) * 2)
            self.size += 1
            self.names.append(name)
            self.by_name[name] = i
            self.aggregates.dirty = True
        return i

    def apply_host_row(self, row: Any, arch: str | None = None) -> int:
        """Take one `hosts` row into the arrays (`arch`: the host's CPU architecture, if known); returns its slot."""
        i = self._slot(row.name)
        col = self.cols
        col["id"][i] = row.id
        col["vcpu_limit"][i] = row.vcpus * row.cpu_allocation_ratio - row.reserved_vcpus
        col["ram_limit"][i] = row.memory_mb * row.ram_allocation_ratio - row.reserved_memory_mb
        col["disk_limit"][i] = row.local_gb * row.disk_allocation_ratio - row.reserved_disk_gb
        col["vcpu_free"][i] = col["vcpu_limit"][i] - row.vcpus_used
        col["ram_free"][i] = col["ram_limit"][i] - row.memory_mb_used
        col["disk_free"][i] = col["disk_limit"][i] - row.local_gb_used
        # A host enrolling (issue 19) stays out until its agent's health checks first pass.
        enrolled = getattr(row, "enrollment", None) != "pending"
        if bool(col["enrolled"][i]) != enrolled:
            col["enrolled"][i] = enrolled
            self.generation += 1  # the cached filter masks depend on it
        labels = (bool(row.enabled), self.zones.code(row.availability_zone), self.racks.code(rack_key(row)),
                  self.hv_types.code((row.hypervisor_type or "").lower()),
                  self.archs.code(arch or DEFAULT_ARCH), int(row.hypervisor_version))
        before = (bool(col["enabled"][i]), int(col["host_zone"][i]), int(col["rack"][i]), int(col["hv_type"][i]),
                  int(col["arch"][i]), int(col["hv_version"][i]))
        if labels != before or not col["present"][i]:
            (col["enabled"][i], col["host_zone"][i], col["rack"][i], col["hv_type"][i], col["arch"][i],
             col["hv_version"][i]) = labels
            col["present"][i] = True
            col["zone"][i] = labels[1]
            if self.aggregates.aggs:
                self.aggregates.dirty = True  # an aggregate's zone may override the reported one
            self.generation += 1
        return i

    def remove_host(self, i: int) -> None:
        """A host that no longer exists: it keeps its slot (slots never move) but never passes a filter."""
        self.cols["present"][i] = False
        self.cols["enabled"][i] = False
        self.generation += 1

    def apply_service_row(self, row: Any) -> None:
        """Take one agent `services` row: liveness and the operator's disable/force-down switches."""
        i = self.by_name.get(row.host)
        if i is None:
            return
        ok = not row.disabled and not row.forced_down
        self.cols["has_service"][i] = True
        if bool(self.cols["service_ok"][i]) != ok:
            self.cols["service_ok"][i] = ok
            self.generation += 1
        seen = row.last_seen_at
        self.cols["last_seen"][i] = seen.replace(tzinfo=dt.UTC).timestamp() if seen else 0.0

    def apply_aggregates(self) -> None:
        """Recompute what follows from aggregates: effective zones and per-host weights."""
        view, col = self.aggregates, self.cols
        view.place(self.by_name, self.size)
        zone = col["zone"][: self.size]
        zone[:] = col["host_zone"][: self.size]
        for name, positions in view.zone_positions(self.zones).items():
            zone[positions] = name
        w = self.weights
        for key, default in (("w_ram", w.ram), ("w_cpu", w.cpu), ("w_disk", w.disk)):
            col[key][: self.size] = default
            for positions, value in view.weight_overrides(key, default):
                col[key][positions] = value
        self.rescore()
        self.generation += 1

    def rescore(self, idx: Array | slice | None = None) -> None:
        """Recompute the base weigher score of some hosts (all by default): in [1, 2], higher is better.

        Each resource contributes its free fraction times its weight; a negative weight (pack) turns
        "most free" into "least free". The +1 keeps every live score above zero, which lets the
        chooser mask with one multiplication (see weighers.py).
        """
        sel = slice(0, self.size) if idx is None else idx
        c = self.cols
        total = np.zeros_like(c["score"][sel])
        span = np.zeros_like(total)
        for w_key, free, limit in _RESOURCES:
            w = c[w_key][sel]
            frac = np.clip(c[free][sel] / np.maximum(c[limit][sel], 1.0), 0.0, 1.0)
            total += w * frac - np.minimum(w, 0.0)
            span += np.abs(w)
        c["score"][sel] = 1.0 + total / np.maximum(span, 1e-9) * 0.999 + c["jitter"][sel]

    def add_usage(self, i: int, vcpus: float, ram: float, disk: float) -> None:
        """Count a claim (or, negative, a release) this process made before the feed reports it."""
        c = self.cols
        c["vcpu_free"][i] -= vcpus
        c["ram_free"][i] -= ram
        c["disk_free"][i] -= disk
        # The same arithmetic as rescore(), on plain floats: a dozen NumPy calls on one element cost more.
        total = span = 0.0
        for w_key, free, limit in _RESOURCES:
            w = float(c[w_key][i])
            frac = min(max(float(c[free][i]) / max(float(c[limit][i]), 1.0), 0.0), 1.0)
            total += w * frac - min(w, 0.0)
            span += abs(w)
        c["score"][i] = 1.0 + total / max(span, 1e-9) * 0.999 + float(c["jitter"][i])

    def update_liveness(self, now: float, down_after_s: float) -> None:
        """Recompute which agents count as up (enabled, not forced down, seen within `down_after_s`)."""
        self._set_alive(self.view("service_ok") & (self.view("last_seen") >= now - down_after_s))
        self.alive_at = now

    def apply_not_ok(self, hosts: set[str], now: float) -> None:
        """Liveness from the database's list of agents that are disabled, forced down or not seen lately:
        every other host with an agent is up."""
        alive = self.view("has_service").copy()
        for name in hosts:
            i = self.by_name.get(name)
            if i is not None:
                alive[i] = False
        self._set_alive(alive)
        self.alive_at = now

    def _set_alive(self, alive: Array) -> None:
        if not np.array_equal(alive, self.view("alive")):
            self.view("alive")[:] = alive
            self.generation += 1

    def bytes_per_host(self) -> dict[str, float]:
        """Memory per host: the arrays alone, and with the name table (strings and the name → slot dict)."""
        arrays = float(sum(np.dtype(t).itemsize for t in COLUMNS.values()))
        if not self.size:
            return {"arrays": arrays, "total": arrays}
        names = sum(sys.getsizeof(n) for n in self.names) + sys.getsizeof(self.names) + sys.getsizeof(self.by_name)
        return {"arrays": arrays, "total": arrays + names / self.size}
