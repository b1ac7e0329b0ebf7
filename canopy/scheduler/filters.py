"""Filters as vector masks over the host index. Each filter removes hosts for one reason, and the
chain can count how many each removed, so that a "no valid host" says exactly why.

Two ways through the chain: `select` (the hot path) ANDs the masks without counting, taking the
request-independent part from a cache; `explain` applies them one by one and counts what each removed
from what was still left. Both give the same mask.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canopy.scheduler.hoststate import HostIndex
from canopy.scheduler.request import Request

Mask = np.ndarray[Any, Any]
MaskFn = Callable[[HostIndex, Request], "Mask | None"]
_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "=": operator.eq, ">": operator.gt,
        "<": operator.lt}


@dataclass(frozen=True)
class Filter:
    """One reason to leave a host out: a name, the words for the removed hosts, and the mask.

    `cacheable` filters depend only on the index and the request's class key (not on free capacity),
    so their combined mask is computed once per kind of request and index generation."""

    name: str
    reason: str
    mask: MaskFn
    cacheable: bool = False


def _enabled(ix: HostIndex, req: Request) -> Mask:
    return ix.view("present") & ix.view("enabled")


def _enrolled(ix: HostIndex, req: Request) -> Mask:
    return ix.view("enrolled")


def _alive(ix: HostIndex, req: Request) -> Mask:
    return ix.view("alive")


def _zone(ix: HostIndex, req: Request) -> Mask | None:
    if not req.availability_zone:
        return None
    return ix.view("zone") == ix.zones.lookup(req.availability_zone)


def _positions(ix: HostIndex, names: tuple[str, ...] | list[str]) -> np.ndarray[Any, Any]:
    return np.array([ix.by_name[n] for n in names if n in ix.by_name], dtype=np.int64)


def _named(ix: HostIndex, req: Request) -> Mask | None:
    """The admin's forced host, hosts tried before (retries), and the same_host / different_host hints."""
    if req.force_host is None and req.same_host is None and not req.exclude_hosts and not req.different_host:
        return None
    wanted = [n for n in (req.same_host or ()) if req.force_host in (None, n)] if req.same_host is not None else None
    if req.force_host is not None:
        wanted = [req.force_host] if wanted is None else wanted
    mask = np.ones(ix.size, dtype=bool) if wanted is None else np.zeros(ix.size, dtype=bool)
    if wanted is not None:
        mask[_positions(ix, wanted)] = True
    mask[_positions(ix, req.exclude_hosts + req.different_host)] = False
    return mask


def _tenant(ix: HostIndex, req: Request) -> Mask | None:
    masks = ix.aggregates.tenant_masks(req.project_id)
    if masks is None:
        return None
    others, outside = masks
    return ~(others | outside)


def _image(ix: HostIndex, req: Request) -> Mask | None:
    need = req.image
    if need.empty:
        return None
    mask = np.ones(ix.size, dtype=bool)
    if need.arch:
        mask &= ix.view("arch") == ix.archs.lookup(need.arch)
    if need.hv_type:
        mask &= ix.view("hv_type") == ix.hv_types.lookup(need.hv_type)
    if need.hv_version:
        op, version = need.hv_version
        mask &= _OPS[op](ix.view("hv_version"), version)
    return mask


def _extra_specs(ix: HostIndex, req: Request) -> Mask | None:
    if not req.extra_specs:
        return None
    mask = np.ones(ix.size, dtype=bool)
    for key, value in req.extra_specs:
        mask &= ix.aggregates.metadata_mask(key, value)
    return mask


def _network(ix: HostIndex, req: Request) -> Mask | None:
    if all(r is None for r in req.racks):
        return None
    mask = np.ones(ix.size, dtype=bool)
    for racks in req.racks:
        if racks is not None:
            mask &= np.isin(ix.view("rack"), [ix.racks.lookup(r) for r in racks])
    return mask


def _group(ix: HostIndex, req: Request) -> Mask | None:
    g = req.group
    if g is None or not g.hard or not g.members:
        return None
    if g.policy == "affinity":
        mask = np.zeros(ix.size, dtype=bool)
        mask[_positions(ix, list(g.members))] = True
        return mask
    mask = np.ones(ix.size, dtype=bool)
    mask[_positions(ix, [h for h, n in g.members.items() if n >= g.max_per_host])] = False
    return mask


def _fits(free: str, need: Callable[[Request], int]) -> MaskFn:
    def mask(ix: HostIndex, req: Request) -> Mask | None:
        n = need(req)
        return None if n <= 0 else ix.view(free) >= n

    return mask


def default_filters() -> list[Filter]:
    """The chain in order: cheap, selective checks first; capacity last, as it changes with every claim."""
    return [
        Filter("enabled", "disabled", _enabled, cacheable=True),
        Filter("enrollment", "still enrolling (health checks not passed yet)", _enrolled, cacheable=True),
        Filter("service", "with their agent down or disabled", _alive, cacheable=True),
        Filter("availability_zone", "in other zones", _zone, cacheable=True),
        Filter("host", "not the requested host", _named),
        Filter("tenant_isolation", "reserved for other projects or outside the project's aggregates", _tenant,
               cacheable=True),
        Filter("image_properties", "of another architecture or hypervisor than the image needs", _image,
               cacheable=True),
        Filter("aggregate_extra_specs", "in no aggregate matching the flavor's extra specs", _extra_specs,
               cacheable=True),
        Filter("network", "on racks with no free address in a requested network", _network, cacheable=True),
        Filter("server_group", "ruled out by the server group's policy", _group),
        Filter("vcpus", "without enough free vCPUs", _fits("vcpu_free", lambda r: r.vcpus)),
        Filter("ram", "without enough free RAM", _fits("ram_free", lambda r: r.memory_mb)),
        Filter("disk", "without enough free disk", _fits("disk_free", lambda r: r.disk_gb)),
    ]


@dataclass
class FilterOutcome:
    """The hosts left, and how many each filter removed."""

    mask: Mask
    total: int
    removed: list[tuple[Filter, int]] = field(default_factory=list)

    @property
    def fit(self) -> int:
        return int(np.count_nonzero(self.mask))

    def explain(self) -> str:
        """`0 of 50 hosts fit; ram: 50 without enough free RAM` — what a NoValidHost fault says."""
        parts = [f"{f.name}: {n:,} {f.reason}" for f, n in self.removed if n]
        return f"{self.fit:,} of {self.total:,} hosts fit" + ("; " + "; ".join(parts) if parts else "")

    def as_dict(self) -> dict[str, Any]:
        """The explanation as data: every filter that ran, what it removed, and how many remained."""
        left, steps = self.total, []
        for f, n in self.removed:
            left -= n
            steps.append({"filter": f.name, "removed": n, "reason": f.reason, "remaining": left})
        return {"hosts": self.total, "fit": self.fit, "filters": steps, "message": self.explain()}


class FilterChain:
    """The filters, with the cache of their request-independent part."""

    def __init__(self, filters: list[Filter] | None = None, cache_size: int = 512) -> None:
        self.filters = filters or default_filters()
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[object, ...], Mask] = OrderedDict()
        self._generation = (-1, -1)
        self._tenant_sensitive = False

    def _static(self, ix: HostIndex, req: Request) -> Mask:
        if (ix.generation, ix.size) != self._generation:
            # Labels, liveness, aggregates or the fleet's size changed: every cached mask is stale.
            self._cache.clear()
            self._generation = (ix.generation, ix.size)
            self._tenant_sensitive = any(a.tenants for a in ix.aggregates.aggs.values())
        key = req.class_key(tenant_sensitive=self._tenant_sensitive)
        mask = self._cache.get(key)
        if mask is None:
            mask = np.ones(ix.size, dtype=bool)
            for f in self.filters:
                if f.cacheable:
                    m = f.mask(ix, req)
                    if m is not None:
                        mask &= m
            self._cache[key] = mask
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return mask

    def select(self, ix: HostIndex, req: Request) -> Mask:
        """The hosts that pass every filter (a new array the caller may change)."""
        mask = self._static(ix, req).copy()
        for f in self.filters:
            if not f.cacheable:
                m = f.mask(ix, req)
                if m is not None:
                    np.logical_and(mask, m, out=mask)
        return mask

    def explain(self, ix: HostIndex, req: Request) -> FilterOutcome:
        """Apply the chain one filter at a time, counting what each removes from what is still left."""
        mask = np.ones(ix.size, dtype=bool)
        outcome = FilterOutcome(mask, int(np.count_nonzero(ix.view("present"))))
        mask &= ix.view("present")
        for f in self.filters:
            before = int(np.count_nonzero(mask))
            m = f.mask(ix, req)
            if m is not None:
                mask &= m
            outcome.removed.append((f, before - int(np.count_nonzero(mask))))
        outcome.mask = mask
        return outcome
