"""Filters as vector masks over the host index. Each filter removes hosts for one reason, and the
chain counts how many each removed, so that a "no valid host" says exactly why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canopy.scheduler.hoststate import HostIndex

Mask = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Request:
    """What one instance needs."""

    vcpus: int
    memory_mb: int
    disk_gb: int
    availability_zone: str | None = None
    force_host: str | None = None
    exclude_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filter:
    """One reason to leave a host out: a name, the words for the removed hosts, and the mask."""

    name: str
    reason: str
    mask: Callable[[HostIndex, Request, float], Mask]


def _alive(index: HostIndex, req: Request, now: float, down_after_s: float) -> Mask:
    return index.view("service_ok") & (index.view("last_seen") >= now - down_after_s)


def _zone(index: HostIndex, req: Request, now: float) -> Mask:
    if not req.availability_zone:
        return np.ones(index.size, dtype=bool)
    code = index.zone_codes.get(req.availability_zone, -1)
    return index.view("zone_code") == code


def _named(index: HostIndex, req: Request, now: float) -> Mask:
    mask = np.ones(index.size, dtype=bool)
    if req.force_host:
        mask[:] = False
        i = index.by_name.get(req.force_host)
        if i is not None:
            mask[i] = True
    for name in req.exclude_hosts:
        i = index.by_name.get(name)
        if i is not None:
            mask[i] = False
    return mask


def _fits(used: str, limit: str, need: Callable[[Request], int]) -> Callable[[HostIndex, Request, float], Mask]:
    def mask(index: HostIndex, req: Request, now: float) -> Mask:
        return index.view(used) + need(req) <= index.view(limit)

    return mask


def default_filters(down_after_s: float) -> list[Filter]:
    """The chain in order: cheap, selective checks first."""
    return [
        Filter("enabled", "disabled", lambda ix, r, now: ix.view("enabled")),
        Filter("service", "with their agent down or disabled", lambda ix, r, now: _alive(ix, r, now, down_after_s)),
        Filter("availability_zone", "in other zones", _zone),
        Filter("host", "not the requested host", _named),
        Filter("vcpus", "without enough free vCPUs", _fits("vcpu_used", "vcpu_limit", lambda r: r.vcpus)),
        Filter("ram", "without enough free RAM", _fits("ram_used", "ram_limit", lambda r: r.memory_mb)),
        Filter("disk", "without enough free disk", _fits("disk_used", "disk_limit", lambda r: r.disk_gb)),
    ]


@dataclass
class FilterOutcome:
    """The hosts left, and how many each filter removed."""

    mask: Mask
    total: int
    removed: list[tuple[Filter, int]] = field(default_factory=list)

    def explain(self) -> str:
        """`0 of 50 hosts fit; ram: 50 without enough free RAM` — what a NoValidHost fault says."""
        fit = int(self.mask.sum())
        parts = [f"{f.name}: {n:,} {f.reason}" for f, n in self.removed if n]
        return f"{fit:,} of {self.total:,} hosts fit" + ("; " + "; ".join(parts) if parts else "")


def run_filters(index: HostIndex, req: Request, filters: list[Filter], now: float) -> FilterOutcome:
    """Apply the chain, counting what each filter removes from what is still left."""
    mask = np.ones(index.size, dtype=bool)
    outcome = FilterOutcome(mask, index.size)
    for f in filters:
        before = int(mask.sum())
        if before == 0:
            break
        mask &= f.mask(index, req, now)
        outcome.removed.append((f, before - int(mask.sum())))
    outcome.mask = mask
    return outcome


def weigh(index: HostIndex, mask: Mask, strategy: str) -> Mask:
    """Scores for the hosts left: spread favours the most free RAM (ratio), pack the least."""
    free = (index.view("ram_limit") - index.view("ram_used")) / np.maximum(index.view("ram_limit"), 1.0)
    score = free if strategy == "spread" else -free
    return np.where(mask, score, -np.inf)
