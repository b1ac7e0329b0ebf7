"""/metrics: Prometheus text that the official parser reads, and counters that move with the work done."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from canopy.observability.metrics import SCHED_DECISIONS, Counts, Hist, serve_process_metrics
from tests.clouds import V, free_port, server_body, wait_for_server


async def scrape(api: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels), through prometheus_client's text parser."""
    resp = await api.get("/metrics")  # as admin: /metrics is for operators
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_counters_move_with_requests_and_boots(stack: Any) -> None:
    api = stack.api
    before = await scrape(api)
    for _ in range(3):
        assert (await api.get("/compute/v2.1/servers", as_user="demo")).status_code == 200
    resp = await api.post("/compute/v2.1/servers", json=server_body(), as_user="demo", headers=V)
    sid = resp.json()["server"]["id"]
    await wait_for_server(api, sid, {"ACTIVE"}, as_user="demo")
    after = await scrape(api)

    index = {"service": "compute", "route": "compute:servers:index", "method": "GET"}
    assert value(after, "canopy_api_requests_total", **index, code="200") - \
        value(before, "canopy_api_requests_total", **index, code="200") >= 3
    assert value(after, "canopy_api_request_duration_seconds_count", **index) - \
        value(before, "canopy_api_request_duration_seconds_count", **index) >= 3
    create = {"service": "compute", "route": "compute:servers:create", "method": "POST", "code": "202"}
    assert value(after, "canopy_api_requests_total", **create) > value(before, "canopy_api_requests_total", **create)
    for name, labels in (
        ("canopy_task_duration_seconds_count", {"action": "build", "result": "success"}),
        ("canopy_scheduler_decisions_total", {"outcome": "selected"}),
        ("canopy_scheduler_decision_duration_seconds_count", {"outcome": "selected"}),
        ("canopy_bus_rpc_duration_seconds_count", {"kind": "spawn_instance", "outcome": "ok"}),
        ("canopy_bus_messages_handled_total", {"kind": "wake_task", "outcome": "ok"}),
        ("canopy_bus_handler_duration_seconds_count", {"kind": "spawn_instance", "outcome": "ok"}),
        ("canopy_notifications_sent_total", {"event_type": "instance.create.end"}),
        ("canopy_db_statements_total", {"origin": "compute:servers:create"}),
    ):
        assert value(after, name, **labels) > value(before, name, **labels), (name, labels)
    # the fleet gauges are read from the database at scrape time
    assert value(after, "canopy_hosts", datacenter="dc1", state="up") == 4
    assert value(after, "canopy_hosts", datacenter="dc1", state="down") == 0
    assert value(after, "canopy_instances", vm_state="active", task_state="") >= 1
    assert value(after, "canopy_services", binary="canopy-agent", state="up") == 4
    assert value(after, "canopy_metrics_database_up") == 1


async def test_an_unknown_path_is_one_label_not_one_per_url(stack: Any) -> None:
    before = await scrape(stack.api)
    for n in range(3):
        await stack.api.get(f"/compute/v2.1/no-such-thing-{n}")
    after = await scrape(stack.api)
    labels = {"service": "compute", "route": "unmatched", "method": "GET", "code": "404"}
    assert value(after, "canopy_api_requests_total", **labels) - value(before, "canopy_api_requests_total",
                                                                        **labels) == 3
    assert not any("no-such-thing" in str(key) for key in after)


def test_histogram_buckets_are_cumulative_and_the_sum_adds_up() -> None:
    hist = Hist("t_seconds", "test", ("op",), buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        hist.observe(v, "x")
    sample = {s.labels.get("le", s.name): s.value for s in hist.family().samples if s.labels.get("op") == "x"}
    assert sample["0.1"] == 2 and sample["1.0"] == 3 and sample["+Inf"] == 4
    assert sample["t_seconds_count"] == 4 and abs(sample["t_seconds_sum"] - 2.65) < 1e-9


def test_counter_family_is_named_with_total() -> None:
    counts = Counts("t_things", "test", ("kind",))
    counts.inc("a")
    counts.inc("a", amount=2)
    samples = list(counts.family().samples)
    assert [(s.name, s.labels, s.value) for s in samples] == [("t_things_total", {"kind": "a"}, 3.0)]


async def test_a_service_without_the_api_serves_its_own_metrics_port() -> None:
    port = free_port()
    server = serve_process_metrics("127.0.0.1", port)
    assert server is not None
    try:
        SCHED_DECISIONS.inc("selected")
        resp = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics", timeout=5)
        names = {f.name for f in text_string_to_metric_families(resp.text)}
        assert {"canopy_scheduler_decisions", "canopy_bus_rpc_duration_seconds", "canopy_build_info"} <= names
        assert serve_process_metrics("127.0.0.1", port) is None, "a taken port is a warning, not a crash"
    finally:
        server.shutdown()
        server.server_close()


def test_failing_health_checks_are_gauges_per_check() -> None:
    from prometheus_client.core import GaugeMetricFamily

    from canopy.observability.metrics import fleet_families

    fams: dict[str, GaugeMetricFamily] = {f.name: f for f in fleet_families({
        "datacenters": [], "services": [], "instances": [], "totals": {"unhealthy": 3},
        "failing_checks": {"disk:instances": 2, "hypervisor": 1}})}
    checks = {s.labels["check"]: s.value for s in fams["canopy_host_checks_failing"].samples}
    assert checks == {"disk:instances": 2, "hypervisor": 1}
    assert [s.value for s in fams["canopy_hosts_unhealthy"].samples] == [3]
