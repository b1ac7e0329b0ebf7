"""Structured logs (every line names its service, host and request) and `canopy trace`, which reads
them back for one request in time order."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from canopy import context
from canopy.config import Settings
from canopy.observability.logs import ContextFilter, JsonFormatter, configure_logging, log_fields, service_of
from canopy.observability.trace import format_entry, merge, select_lines


def emit(logger: str, message: str, **extra: object) -> dict[str, object]:
    """One record through the filter and formatter, as the configured handler sends it."""
    record = logging.getLogger(logger).makeRecord(logger, logging.WARNING, __file__, 1, message, (), None,
                                                  extra=extra or None)
    ContextFilter("canopy", "ctl-1").filter(record)
    return json.loads(JsonFormatter().format(record))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("logger", "service"), [
    ("canopy.api.access", "api"), ("canopy.conductor", "conductor"), ("canopy.conductor.sweeper", "conductor"),
    ("canopy.scheduler", "scheduler"), ("canopy.agent", "agent"), ("canopy.rpc.zmq", "bus"), ("canopyx", None),
    ("sqlalchemy.engine", None),
])
def test_the_logger_name_says_the_service(logger: str, service: str | None) -> None:
    assert service_of(logger) == service


def test_a_line_carries_the_request_and_where_it_was_written() -> None:
    token = context.set_current(context.RequestContext(request_id="req-1", global_request_id="req-g",
                                                       user_id="u1", project_id="p1"))
    try:
        line = emit("canopy.conductor", "build failed", instance_uuid="i-1")
        with log_fields(service="agent", host="hv-9"):
            agent_line = emit("canopy.agent", "spawn")
    finally:
        context.reset(token)
    assert line["request_id"] == "req-1" and line["global_request_id"] == "req-g"
    assert line["service"] == "conductor" and line["host"] == "ctl-1" and line["level"] == "WARNING"
    assert line["user_id"] == "u1" and line["instance_uuid"] == "i-1" and str(line["ts"]).endswith("Z")
    assert agent_line["service"] == "agent" and agent_line["host"] == "hv-9"
    outside = emit("canopy.conductor", "periodic")
    assert outside["request_id"] is None and outside["host"] == "ctl-1"


def test_exceptions_are_kept_in_the_line() -> None:
    try:
        raise ValueError("disk full")
    except ValueError:
        import sys

        record = logging.getLogger("canopy.agent").makeRecord("canopy.agent", logging.ERROR, __file__, 1, "boom", (),
                                                              sys.exc_info())
    ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert "ValueError: disk full" in line["exc"]


def test_configure_logging_writes_json_to_the_file_and_replaces_itself(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "canopy.json"
    settings = Settings(data_dir=tmp_path, observability={"log_file": str(log_file)})
    root = logging.getLogger()
    level = root.level
    try:
        first = configure_logging(settings)
        second = configure_logging(settings)
        assert first not in root.handlers and second in root.handlers
        logging.getLogger("canopy.api").warning("hello %s", "operator")
    finally:
        root.removeHandler(second)
        second.close()
        root.setLevel(level)
    line = json.loads(log_file.read_text().splitlines()[-1])
    assert line["message"] == "hello operator" and line["service"] == "api"


LINES_A = [
    '{"ts": "2026-01-01T00:00:00.100000Z", "service": "api", "request_id": "req-1", "message": "POST /servers"}',
    "not json at all",
    '{"ts": "2026-01-01T00:00:00.400000Z", "service": "api", "request_id": "req-2", "message": "other"}',
    '{"ts": "2026-01-01T00:00:00.900000Z", "service": "api", "request_id": "req-1", "message": "GET /servers/x"}',
    '{"ts": "2026-01-01T00:00:01.0',
]
LINES_B = [
    '{"ts": "2026-01-01T00:00:00.200000Z", "service": "conductor", "request_id": "req-1", "message": "build"}',
    '{"ts": "2026-01-01T00:00:00.300000Z", "service": "agent", "request_id": "req-1", "global_request_id": "g-7",'
    ' "message": "spawn"}',
]


def test_trace_picks_the_requests_lines_and_merges_files_by_time() -> None:
    merged = merge([select_lines(LINES_A, "req-1"), select_lines(LINES_B, "req-1")])
    assert [e["message"] for e in merged] == ["POST /servers", "build", "spawn", "GET /servers/x"]
    assert [e["service"] for e in select_lines(LINES_B, "g-7")] == ["agent"]
    assert "conductor@?" in format_entry(merged[1])


def test_canopy_trace_reads_a_folder_of_logs(tmp_path: Path) -> None:
    from canopy.cli import app

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "api.json").write_text("\n".join(LINES_A))
    (tmp_path / "logs" / "conductor.log").write_text("\n".join(LINES_B))
    runner = CliRunner()
    found = runner.invoke(app, ["trace", "req-1", "--data-dir", str(tmp_path)])
    assert found.exit_code == 0, found.output
    body = found.output.splitlines()
    assert "4 lines from agent@?, api@?, conductor@?" in body[0]
    assert [line.split(": ", 1)[1] for line in body[1:]] == ["POST /servers", "build", "spawn", "GET /servers/x"]
    missing = runner.invoke(app, ["trace", "req-404", "--log", str(tmp_path / "logs")])
    assert missing.exit_code == 1 and "no lines for req-404" in missing.output


def test_service_down_time_defaults_to_three_heartbeat_intervals_and_can_be_set(tmp_path: Path) -> None:
    default = Settings(data_dir=tmp_path, agent={"heartbeat_s": 10}, conductor={"heartbeat_flush_s": 2}).resolved()
    assert default.scheduler.service_down_s == default.observability.service_down_s == 36
    explicit = Settings(data_dir=tmp_path, observability={"service_down_s": 90}).resolved()
    assert explicit.scheduler.service_down_s == 90
    legacy = Settings(data_dir=tmp_path, scheduler={"service_down_s": 75}).resolved()
    assert legacy.scheduler.service_down_s == legacy.observability.service_down_s == 75
