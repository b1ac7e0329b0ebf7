"""Prometheus metrics, served at `/metrics` by the api.

The hot paths (every bus message, every API request) update plain dicts: a counter is a dict entry
and a histogram a list of bucket counts, with no lock and no object per label set. The Prometheus
families are built only when scraped, together with the gauges read from the database then (hosts
up/down, instances per state) and the SQL statement counters by origin.

    API_REQUESTS.inc("compute", "compute:servers:create", "POST", "202")
    TASK_DURATION.observe(1.7, "build", "success")
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from canopy import __version__

if TYPE_CHECKING:
    from canopy.db.engine import Databases

log = logging.getLogger("canopy.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a sub-millisecond bus call to a half-hour spawn.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0, 600.0, 1800.0)


class Counts:
    """A counter family: one float per label values."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add `amount` to the counter of these label values."""
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def family(self) -> CounterMetricFamily:
        fam = CounterMetricFamily(self.name, self.doc, labels=list(self.labels))
        for key, value in sorted(self.values.copy().items()):  # copy: a scrape thread may read it
            fam.add_metric(list(key), value)
        return fam


class Hist:
    """A histogram family: per label values, one list of bucket counts with the sum at its end."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...] = BUCKETS) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, buckets
        self.rows: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, *labels: str) -> None:
        """Count one observation (in seconds) for these label values."""
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def count(self, *labels: str) -> int:
        row = self.rows.get(labels)
        return int(sum(row[:-1])) if row else 0

    def counts(self) -> dict[tuple[str, ...], int]:
        """How many observations each label set has (a counter for free)."""
        return {key: int(sum(row[:-1])) for key, row in self.rows.copy().items()}

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.doc, labels=list(self.labels))
        for key, row in sorted(self.rows.copy().items()):  # copy: a scrape thread may read it
            cumulative, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), row[:-1], strict=True):
                cumulative += int(n)
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            fam.add_metric(list(key), buckets, sum_value=row[-1])
        return fam


API_REQUESTS = Counts("canopy_api_requests", "API requests answered, by service, route, method and status code.",
                      ("service", "route", "method", "code"))
API_LATENCY = Hist("canopy_api_request_duration_seconds", "Time to answer an API request, by route.",
                   ("service", "route", "method"))
SCHED_DECISIONS = Counts("canopy_scheduler_decisions", "Scheduling decisions, by outcome.", ("outcome",))
SCHED_LATENCY = Hist("canopy_scheduler_decision_duration_seconds",
                     "Time to choose and claim a host (filters, weighers, claim), by outcome.", ("outcome",))
# One observation per message handled: its count is also exported as canopy_bus_messages_handled_total.
BUS_HANDLER_LATENCY = Hist("canopy_bus_handler_duration_seconds", "Time a handler took per message, by kind.",
                           ("kind", "outcome"))
BUS_RPC_LATENCY = Hist("canopy_bus_rpc_duration_seconds", "Round trip of a bus call as the caller saw it.",
                       ("kind", "outcome"))
TASK_DURATION = Hist("canopy_task_duration_seconds",
                     "Time a conductor drove a task (build, power actions, delete), by action and result.",
                     ("action", "result"))
SWEPT = Counts("canopy_sweeper_stuck_instances", "Servers moved to ERROR for staying in a task state too long.",
               ("task_state",))
NOTIFICATIONS = Counts("canopy_notifications_sent", "Versioned notifications published, by event type.",
                       ("event_type",))
BUS_BYTES = Counts("canopy_bus_bytes_received", "Bytes a process received from the bus, by frame kind (ZeroMQ).",
                   ("frame",))
HEARTBEATS = Counts("canopy_heartbeats_received", "Heartbeats a conductor received, by service binary.",
                    ("binary",))
RATE_LIMITED = Counts("canopy_api_rate_limited", "Requests answered 429 by a rate limit, by bucket kind and class.",
                      ("kind", "route_class"))
AUDIT_DROPPED = Counts("canopy_audit_records_dropped", "Audit records dropped because the queue was full.", ())

FAMILIES: list[Counts | Hist] = [API_REQUESTS, API_LATENCY, SCHED_DECISIONS, SCHED_LATENCY, BUS_HANDLER_LATENCY,
                                 BUS_RPC_LATENCY, TASK_DURATION, SWEPT, NOTIFICATIONS, HEARTBEATS, BUS_BYTES,
                                 RATE_LIMITED, AUDIT_DROPPED]


class BusMetrics:
    """The bus's traffic as metrics: the observer every transport of a process is given at wiring time."""

    def handled(self, kind: str, outcome: str, seconds: float) -> None:
        """One message handled from the bus."""
        BUS_HANDLER_LATENCY.observe(seconds, kind, outcome)

    def called(self, kind: str, outcome: str, seconds: float) -> None:
        """One call's round trip as the caller saw it."""
        BUS_RPC_LATENCY.observe(seconds, kind, outcome)

    def received(self, frame_kind: str, nbytes: int) -> None:
        """Bytes of one frame received (ZeroMQ), by frame kind."""
        BUS_BYTES.inc(frame_kind, amount=nbytes)


BUS_METRICS = BusMetrics()


_SCHEDULER_STATS: dict[int, dict[str, int]] = {}


@contextlib.contextmanager
def scheduler_decision(stats: dict[str, int] | None = None) -> Iterator[None]:
    """Times one SelectHost and counts its outcome; `stats` (the scheduler's own counters: lost claim
    races, refreshes, audit repairs…) are exported too."""
    if stats is not None:
        _SCHEDULER_STATS.setdefault(id(stats), stats)
    t0, outcome = time.perf_counter(), "selected"
    try:
        yield
    except BaseException as exc:
        outcome = "no_valid_host" if type(exc).__name__ == "NoValidHost" else "error"
        raise
    finally:
        SCHED_DECISIONS.inc(outcome)
        SCHED_LATENCY.observe(time.perf_counter() - t0, outcome)


def scheduler_stats_family() -> CounterMetricFamily:
    """The schedulers' own event counters of this process (lost_races: claims lost to another scheduler)."""
    fam = CounterMetricFamily("canopy_scheduler_events", "Scheduler events by kind.", labels=["event"])
    totals: dict[str, int] = {}
    for stats in list(_SCHEDULER_STATS.values()):
        for key, value in stats.copy().items():
            totals[key] = totals.get(key, 0) + value
    for key, value in sorted(totals.items()):
        fam.add_metric([key], value)
    return fam


def statement_family(dbs: Databases) -> CounterMetricFamily:
    """SQL statements each database ran, by origin (API route, bus message, periodic task)."""
    family = CounterMetricFamily("canopy_db_statements", "SQL statements executed, by origin.", labels=["origin"])
    for origin, count in sorted(dbs.statement_counts().items()):
        family.add_metric([origin], count)
    return family


def fleet_families(fleet: dict[str, Any]) -> list[GaugeMetricFamily]:
    """Gauges from a fleet snapshot (see `canopy.observability.fleet.snapshot`)."""
    hosts = GaugeMetricFamily("canopy_hosts", "Hypervisor hosts by data center and state (up, down, disabled).",
                              labels=["datacenter", "state"])
    for dc in fleet["datacenters"]:
        for state in ("up", "down", "disabled"):
            hosts.add_metric([dc["datacenter"], state], dc[state])
    services = GaugeMetricFamily("canopy_services", "Services by binary and liveness.", labels=["binary", "state"])
    for row in fleet["services"]:
        services.add_metric([row["binary"], "up"], row["up"])
        services.add_metric([row["binary"], "down"], row["down"])
    instances = GaugeMetricFamily("canopy_instances", "Servers by vm_state and task_state (empty: none).",
                                  labels=["vm_state", "task_state"])
    for row in fleet["instances"]:
        instances.add_metric([row["vm_state"], row["task_state"] or ""], row["count"])
    failing = GaugeMetricFamily("canopy_host_checks_failing",
                                "Hosts that are up whose agent reports this health check failing.", labels=["check"])
    for check, count in fleet.get("failing_checks", {}).items():
        failing.add_metric([check], count)
    unhealthy = GaugeMetricFamily("canopy_hosts_unhealthy", "Hosts that are up with at least one failing check.",
                                  value=fleet.get("totals", {}).get("unhealthy", 0))
    return [hosts, services, instances, failing, unhealthy]


def process_families() -> list[Metric]:
    """This process's counters and histograms, and its build."""
    info = GaugeMetricFamily("canopy_build_info", "The Canopy version of this process.", labels=["version"])
    info.add_metric([__version__], 1.0)
    handled = CounterMetricFamily("canopy_bus_messages_handled", "Messages handled from the bus, by kind and "
                                  "outcome (casts, calls and fanouts; the caller's side is the RPC histogram).",
                                  labels=["kind", "outcome"])
    for key, n in sorted(BUS_HANDLER_LATENCY.counts().items()):
        handled.add_metric(list(key), n)
    return [info, *(f.family() for f in FAMILIES), handled, scheduler_stats_family()]


class _ProcessCollector(Collector):
    """This process's families, built at each scrape."""

    def collect(self) -> Iterable[Metric]:
        yield from process_families()


def serve_process_metrics(host: str, port: int) -> Any:
    """Serve this process's metrics on their own port, from a thread (for the services without an api).

    Returns the HTTP server (its `shutdown()` stops it), or None when the port could not be bound."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessCollector())
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("metrics: cannot serve on %s:%s: %s", host, port, exc)
        return None
    return server
