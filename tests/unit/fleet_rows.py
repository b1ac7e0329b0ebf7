"""A small synthetic fleet for the scheduler's unit tests: host and service rows as plain objects, and a
HostIndex built from them exactly as the change feed builds it from database rows."""

from __future__ import annotations

import datetime as dt
import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, insert

from canopy.db import tables_cell as c
from canopy.scheduler.aggregates import Aggregate
from canopy.scheduler.hoststate import HostIndex, Weights

NOW = dt.datetime(2026, 1, 1, 12, 0, 0)
NOW_TS = NOW.replace(tzinfo=dt.UTC).timestamp()
CLAIM_NOW = dt.datetime(2026, 1, 1)  # the claims tests' time


def host_row(name: str, i: int = 1, **over: Any) -> SimpleNamespace:
    row = dict(id=i, name=name, vcpus=8, memory_mb=16384, local_gb=200, vcpus_used=0, memory_mb_used=0,
               local_gb_used=0, cpu_allocation_ratio=1.0, ram_allocation_ratio=1.0, disk_allocation_ratio=1.0,
               reserved_vcpus=0, reserved_memory_mb=0, reserved_disk_gb=0, availability_zone="nova", rack="r1",
               datacenter="dc1",
               enabled=True, hypervisor_type="fake", hypervisor_version=1000, updated_at=NOW)
    row.update(over)
    return SimpleNamespace(**row)


def service_row(host: str, seen_ago_s: float = 0.0, **over: Any) -> SimpleNamespace:
    row = dict(host=host, last_seen_at=NOW - dt.timedelta(seconds=seen_ago_s), disabled=False, forced_down=False,
               updated_at=NOW)
    row.update(over)
    return SimpleNamespace(**row)


def make_index(hosts: list[dict[str, Any]], aggregates: list[Aggregate] = (), weights: Weights | None = None,
               down_after_s: float = 60.0, seed: int = 0) -> HostIndex:
    """An index of `hosts` (each a dict of host_row overrides plus optional `seen_ago_s`/`service`)."""
    ix = HostIndex(weights=weights or Weights(), rng_seed=seed)
    for n, spec in enumerate(hosts, start=1):
        spec = dict(spec)
        seen = spec.pop("seen_ago_s", 0.0)
        service = spec.pop("service", {})
        name = spec.pop("name", f"h{n}")
        ix.apply_host_row(host_row(name, n, **spec))
        ix.apply_service_row(service_row(name, seen, **service))
    for agg in aggregates:
        ix.aggregates.upsert(agg)
    ix.apply_aggregates()
    ix.update_liveness(NOW_TS, down_after_s)
    return ix


def add_instance(conn: Connection, host: str | None = None, flavor: dict[str, int] | None = None,
                 deleted: bool = False) -> str:
    """An instance row (building, 1 vCPU by default) on `host`; returns its UUID."""
    uid = str(uuid.uuid4())
    conn.execute(insert(c.instances).values(
        uuid=uid, project_id="p", user_id="u", name="vm", hostname="vm", flavor_id="1",
        flavor=flavor or {"vcpus": 1, "ram": 512, "disk": 1}, image_ref="", host=host, vm_state="building",
        power_state=0, config_drive="", metadata={}, networks=[], addresses={}, reservation_id="r",
        launch_index=0, locked=False, progress=0, created_at=CLAIM_NOW, updated_at=CLAIM_NOW, deleted=deleted))
    return uid
