"""What `/metrics` answers: this process's metrics, the statement counters, and the fleet gauges read from
the database at scrape time. Apart from `metrics` so that the hot-path counters (which agents use too)
never reach the database layer."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from canopy.observability.fleet import snapshot
from canopy.observability.metrics import fleet_families, process_families, statement_family

if TYPE_CHECKING:
    from canopy.runtime import Cloud

log = logging.getLogger("canopy.metrics")


class _Snapshot(Collector):
    """A collector that yields families built beforehand (the database part is read asynchronously)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        yield from self.families


async def render(cloud: Cloud) -> bytes:
    """The exposition text: this process's metrics, statement counters, and the fleet gauges."""
    families = [*process_families(), statement_family(cloud.dbs)]
    up = GaugeMetricFamily("canopy_metrics_database_up", "Whether the fleet gauges could be read just now.")
    try:
        families.extend(fleet_families(await snapshot(cloud)))
        up.add_metric([], 1.0)
    except Exception as exc:  # the scrape still answers: the database being down is itself worth seeing
        log.warning("metrics: fleet gauges unavailable: %s", exc)
        up.add_metric([], 0.0)
    families.append(up)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)
