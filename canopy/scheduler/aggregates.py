"""Host aggregates as the scheduler sees them: named sets of hosts with metadata, turned into host
positions once, so that a filter or weigher that depends on aggregates is one NumPy operation.

Metadata keys understood (Nova's names where Nova has one):
  availability_zone                 the members' zone (overrides what their agent reported)
  filter_tenant_id[...]             comma-separated projects the members are reserved for
  ram|cpu|disk_weight_multiplier    per-resource weights for the members (negative packs)
  scheduler_strategy                pack or spread for the members (flips the deployment's weights)
  any key                           matched by flavor extra specs `aggregate_instance_extra_specs:KEY`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from canopy.scheduler.hoststate import Codebook

Array = np.ndarray[Any, Any]
TENANT_KEY = "filter_tenant_id"
WEIGHT_KEYS = {"w_ram": "ram_weight_multiplier", "w_cpu": "cpu_weight_multiplier",
               "w_disk": "disk_weight_multiplier"}
STRATEGY_KEY = "scheduler_strategy"


@dataclass(frozen=True)
class Aggregate:
    """One aggregate: its hosts (by name) and metadata."""

    id: int
    name: str
    hosts: frozenset[str]
    metadata: dict[str, str]

    @property
    def zone(self) -> str | None:
        return self.metadata.get("availability_zone") or None

    @property
    def tenants(self) -> frozenset[str]:
        """Projects the members are reserved for (empty: not reserved)."""
        found: set[str] = set()
        for key, value in self.metadata.items():
            if key.startswith(TENANT_KEY):
                found.update(p.strip() for p in str(value).split(",") if p.strip())
        return frozenset(found)


@dataclass
class AggregateView:
    """Every live aggregate, and where its hosts sit in the index."""

    aggs: dict[int, Aggregate] = field(default_factory=dict)
    positions: dict[int, Array] = field(default_factory=dict)
    dirty: bool = False
    size: int = 0
    pin_tenants: bool = True

    def upsert(self, agg: Aggregate) -> None:
        self.aggs[agg.id] = agg
        self.dirty = True

    def drop(self, agg_id: int) -> None:
        if self.aggs.pop(agg_id, None) is not None:
            self.dirty = True

    def place(self, by_name: dict[str, int], size: int) -> None:
        """Resolve every aggregate's host names to index slots (names not in the index are skipped)."""
        self.size = size
        self.positions = {
            agg.id: np.array(sorted(by_name[h] for h in agg.hosts if h in by_name), dtype=np.int64)
            for agg in self.aggs.values()}
        self.dirty = False

    def zone_positions(self, zones: Codebook) -> dict[int, Array]:
        return {zones.code(a.zone): self.positions.get(a.id, _EMPTY) for a in self.aggs.values() if a.zone}

    def weight_overrides(self, key: str, default: float) -> list[tuple[Array, float]]:
        """(positions, weight) pairs for one weight column, applied in order: the smallest wins, as in Nova."""
        found: list[tuple[Array, float]] = []
        for agg in self.aggs.values():
            value = _weight_of(agg.metadata, key, default)
            if value is not None:
                found.append((self.positions.get(agg.id, _EMPTY), value))
        return sorted(found, key=lambda pair: -pair[1])

    def tenant_masks(self, project: str | None) -> tuple[Array, Array] | None:
        """(reserved for others, outside the project's own aggregates) or None when no aggregate is reserved.

        A host in an aggregate with `filter_tenant_id` takes only those projects; a project named by any
        such aggregate is pinned to the hosts of its aggregates.
        """
        reserved = [a for a in self.aggs.values() if a.tenants]
        if not reserved:
            return None
        restricted = np.zeros(self.size, dtype=bool)
        allowed = np.zeros(self.size, dtype=bool)
        for agg in reserved:
            pos = self.positions.get(agg.id, _EMPTY)
            restricted[pos] = True
            if project in agg.tenants:
                allowed[pos] = True
        pinned = self.pin_tenants and bool(allowed.any())
        others = restricted & ~allowed
        outside = ~allowed if pinned else np.zeros(self.size, dtype=bool)
        return others, outside

    def metadata_mask(self, key: str, wanted: str) -> Array:
        """Hosts in an aggregate whose metadata `key` holds `wanted` (one of its comma-separated values)."""
        mask = np.zeros(self.size, dtype=bool)
        for agg in self.aggs.values():
            values = {v.strip() for v in str(agg.metadata.get(key, "")).split(",")}
            if key in agg.metadata and wanted in values:
                mask[self.positions.get(agg.id, _EMPTY)] = True
        return mask

    def member_names(self, host: str) -> list[str]:
        return sorted(a.name for a in self.aggs.values() if host in a.hosts)


_EMPTY = np.zeros(0, dtype=np.int64)


def _weight_of(metadata: dict[str, str], key: str, default: float) -> float | None:
    explicit = metadata.get(WEIGHT_KEYS[key])
    if explicit is not None:
        try:
            return float(explicit)
        except ValueError:
            return None
    strategy = str(metadata.get(STRATEGY_KEY, "")).lower()
    if strategy in ("pack", "spread"):
        return -abs(default) if strategy == "pack" else abs(default)
    return None
