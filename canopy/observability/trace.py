"""One request's story from the services' JSON logs: every line whose request ID (or global request
ID) matches, from every file, in time order. What `canopy trace REQUEST_ID` prints."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

LOG_SUFFIXES = (".log", ".json", ".jsonl")


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """A JSON log line as a dict; None for anything else (a text line, a partial write)."""
    line = line.strip()
    if not line or line[:1] not in ("{", b"{"):
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def matches(entry: dict[str, Any], request_id: str) -> bool:
    """Whether a line belongs to the request (its own ID, or the global ID a client passed)."""
    return request_id in (entry.get("request_id"), entry.get("global_request_id"))


def select_lines(lines: Iterable[str | bytes], request_id: str) -> list[dict[str, Any]]:
    """The request's entries among `lines`, in the order they were written."""
    out = []
    for line in lines:
        entry = parse_line(line)
        if entry is not None and matches(entry, request_id):
            out.append(entry)
    return out


def merge(streams: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Entries of several files in timestamp order (ISO timestamps sort as text); ties keep file order."""
    keyed = [[(e.get("ts") or "", n, k, e) for k, e in enumerate(s)] for n, s in enumerate(streams)]
    return [item[3] for item in heapq.merge(*(sorted(k) for k in keyed))]


def log_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and the log files inside the folders named (rotated ones too)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and any(s in child.name for s in LOG_SUFFIXES):
                    yield child
        elif path.is_file():
            yield path


def gather(paths: Iterable[Path], request_id: str) -> list[dict[str, Any]]:
    """Every line of the request from the files (and folders) given, in time order."""
    streams = []
    for path in log_files(paths):
        with path.open("rb") as f:
            streams.append(select_lines(f, request_id))
    return merge(streams)


def format_entry(entry: dict[str, Any]) -> str:
    """One line for a terminal: time, service@host, level, logger, message (and the exception)."""
    where = f"{entry.get('service') or '?'}@{entry.get('host') or '?'}"
    text = f"{entry.get('ts', '')} {where:<24} {entry.get('level', ''):<7} {entry.get('logger', '')}: " \
           f"{entry.get('message', '')}"
    if entry.get("exc"):
        text += "\n    " + str(entry["exc"]).replace("\n", "\n    ")
    return text
