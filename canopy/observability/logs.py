"""Structured logs: every line says which service on which host wrote it, for which request.

    configure_logging(settings)                # JSON lines to stdout or a file, from [observability]
    with log_fields(service="agent", host="hv-17"):
        log.info("spawn_instance %s", uuid)    # {"ts": ..., "service": "agent", "host": "hv-17",
                                               #  "request_id": "req-…", "global_request_id": …, ...}

The request ID comes from the request context (`canopy.context`), which the api sets per request
and the bus restores in every handler, so one ID follows a request through every service.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from canopy import context

if TYPE_CHECKING:
    from canopy.config import Settings

# What the logger's name says about the service that wrote a line (the all-in-one runs them all).
_SERVICES = (("canopy.api", "api"), ("canopy.conductor", "conductor"), ("canopy.scheduler", "scheduler"),
             ("canopy.agent", "agent"), ("canopy.rpc", "bus"), ("canopy.network", "network"))
_FIELDS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("log_fields", default=None)
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName",
                                                                           "color_message"}
_OURS = {"service", "host", "request_id", "global_request_id", "user_id", "project_id"}
HANDLER_NAME = "canopy-observability"


@contextlib.contextmanager
def log_fields(**fields: str) -> Iterator[None]:
    """Lines logged inside the block carry these fields (e.g. the agent's host)."""
    token = _FIELDS.set({**(_FIELDS.get() or {}), **fields})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def service_of(logger_name: str) -> str | None:
    """The service a logger belongs to, by its name's prefix."""
    for prefix, service in _SERVICES:
        if logger_name == prefix or logger_name.startswith(prefix + "."):
            return service
    return None


class ContextFilter(logging.Filter):
    """Adds service, host, request and user IDs to every record that passes the handler."""

    def __init__(self, service: str = "canopy", host: str | None = None) -> None:
        super().__init__()
        self.service = service
        self.host = host or socket.gethostname()

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _FIELDS.get() or {}
        ctx = context.peek()
        d = record.__dict__
        d.setdefault("service", bound.get("service") or service_of(record.name) or self.service)
        d.setdefault("host", bound.get("host") or self.host)
        d.setdefault("request_id", ctx.request_id if ctx else None)
        d.setdefault("global_request_id", ctx.global_request_id if ctx else None)
        d.setdefault("user_id", ctx.user_id if ctx else None)
        d.setdefault("project_id", ctx.project_id if ctx else None)
        return True


def _timestamp(created: float) -> str:
    return dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra=` fields a caller passes are kept."""

    def format(self, record: logging.LogRecord) -> str:
        d = record.__dict__
        out: dict[str, Any] = {"ts": _timestamp(record.created), "level": record.levelname,
                               "service": d.get("service"), "host": d.get("host"), "logger": record.name,
                               "request_id": d.get("request_id"), "global_request_id": d.get("global_request_id"),
                               "message": record.getMessage()}
        for key in ("user_id", "project_id"):
            if d.get(key):
                out[key] = d[key]
        for key, value in d.items():
            if key not in _STANDARD and key not in _OURS and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(service)s %(host)s [%(request_id)s] %(name)s %(message)s"


def make_handler(fmt: str = "json", log_file: str = "", service: str = "canopy",
                 host: str | None = None) -> logging.Handler:
    """A handler with the context filter and the chosen format, writing to stdout or a file."""
    handler: logging.Handler
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        from logging.handlers import WatchedFileHandler

        handler = WatchedFileHandler(log_file, encoding="utf-8")  # follows logrotate's renames
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.set_name(HANDLER_NAME)
    handler.addFilter(ContextFilter(service, host))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(settings: Settings, service: str = "canopy", host: str | None = None) -> logging.Handler:
    """Send the process's logs where [observability] says, in its format; replaces an earlier set-up."""
    obs = settings.observability
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler = make_handler(obs.log_format, obs.log_file, service, host)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    return handler


def setup_process(settings: Settings) -> None:
    """What every `canopy` service process does first: logging, and its metrics port if configured."""
    configure_logging(settings)
    obs = settings.observability
    if obs.metrics_port > 0:
        from canopy.observability.metrics import serve_process_metrics

        serve_process_metrics(obs.metrics_host, obs.metrics_port)
