"""Prometheus metrics, served at `/metrics` by the api."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from canopy.db.engine import Databases


class StatementCollector:
    """SQL statements each database ran, by origin (API route, bus message, periodic task)."""

    def __init__(self, dbs: Databases) -> None:
        self.dbs = dbs

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily("canopy_db_statements", "SQL statements executed, by origin.",
                                     labels=["origin"])
        for origin, count in sorted(self.dbs.statement_counts().items()):
            family.add_metric([origin], count)
        yield family


def build_registry(dbs: Databases) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StatementCollector(dbs))  # type: ignore[arg-type]
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
