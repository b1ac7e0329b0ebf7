"""The fleet as arrays in memory (structure of arrays), loaded once and refreshed from what changed.

Each host is one index into every array; filters and weighers work on whole arrays at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from canopy.db import tables_cell as c

AGENT_BINARY = "canopy-agent"
_GROW = 1024


@dataclass
class HostIndex:
    """Capacity, limits and liveness of every host, as NumPy arrays."""

    size: int = 0
    names: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)
    by_name: dict[str, int] = field(default_factory=dict)
    cols: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    hosts_watermark: dt.datetime | None = None
    services_watermark: dt.datetime | None = None

    FLOAT_COLS = ("vcpu_limit", "ram_limit", "disk_limit", "last_seen")
    INT_COLS = ("id", "vcpu_used", "ram_used", "disk_used", "zone_code")
    BOOL_COLS = ("enabled", "service_ok")

    def __post_init__(self) -> None:
        if not self.cols:
            self._allocate(_GROW)
        self.zone_codes: dict[str, int] = {}

    def _allocate(self, capacity: int) -> None:
        old, self.cols = self.cols, {}
        for name in self.FLOAT_COLS:
            self.cols[name] = np.zeros(capacity, dtype=np.float64)
        for name in self.INT_COLS:
            self.cols[name] = np.zeros(capacity, dtype=np.int64)
        for name in self.BOOL_COLS:
            self.cols[name] = np.zeros(capacity, dtype=bool)
        for name, arr in old.items():
            self.cols[name][: len(arr)] = arr

    def view(self, name: str) -> np.ndarray[Any, Any]:
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
            self.zones.append("")
            self.by_name[name] = i
        return i

    def zone_code(self, zone: str) -> int:
        return self.zone_codes.setdefault(zone, len(self.zone_codes) + 1)

    def apply_host_row(self, row: Any) -> None:
        """Take one `hosts` row into the arrays."""
        i = self._slot(row.name)
        col = self.cols
        col["id"][i] = row.id
        col["vcpu_limit"][i] = row.vcpus * row.cpu_allocation_ratio - row.reserved_vcpus
        col["ram_limit"][i] = row.memory_mb * row.ram_allocation_ratio - row.reserved_memory_mb
        col["disk_limit"][i] = row.local_gb * row.disk_allocation_ratio - row.reserved_disk_gb
        col["vcpu_used"][i] = row.vcpus_used
        col["ram_used"][i] = row.memory_mb_used
        col["disk_used"][i] = row.local_gb_used
        col["enabled"][i] = row.enabled
        col["zone_code"][i] = self.zone_code(row.availability_zone)
        self.zones[i] = row.availability_zone

    def apply_service_row(self, row: Any) -> None:
        i = self.by_name.get(row.host)
        if i is None:
            return
        self.cols["service_ok"][i] = not row.disabled and not row.forced_down
        self.cols["last_seen"][i] = row.last_seen_at.replace(tzinfo=dt.UTC).timestamp() if row.last_seen_at else 0.0

    def refresh(self, conn: Connection) -> int:
        """Read the hosts and agent services changed since the last refresh; returns how many rows came."""
        h, s = c.hosts, c.services
        q = select(h)
        if self.hosts_watermark is not None:
            q = q.where(h.c.updated_at >= self.hosts_watermark)
        rows = conn.execute(q).all()
        for row in rows:
            self.apply_host_row(row)
            if self.hosts_watermark is None or row.updated_at > self.hosts_watermark:
                self.hosts_watermark = row.updated_at
        sq = select(s.c.host, s.c.last_seen_at, s.c.disabled, s.c.forced_down, s.c.updated_at).where(
            s.c.binary == AGENT_BINARY)
        if self.services_watermark is not None:
            sq = sq.where(s.c.updated_at >= self.services_watermark)
        srows = conn.execute(sq).all()
        for srow in srows:
            self.apply_service_row(srow)
            if self.services_watermark is None or srow.updated_at > self.services_watermark:
                self.services_watermark = srow.updated_at
        return len(rows) + len(srows)

    def add_usage(self, i: int, vcpus: int, ram: int, disk: int) -> None:
        """Count a claim this process just made, before the database feed reports it."""
        self.cols["vcpu_used"][i] += vcpus
        self.cols["ram_used"][i] += ram
        self.cols["disk_used"][i] += disk

    def bytes_per_host(self) -> float:
        total = sum(arr.itemsize for arr in self.cols.values())
        return float(total)
