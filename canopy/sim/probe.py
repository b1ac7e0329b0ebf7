"""A process's own figures, written to a JSON file every second for the simulator to collect.

The control services are started through this module so that their real entry points run unchanged:

    python -m canopy.sim.probe STATS.json conductor --config sim.toml    # = `canopy conductor …`

It counts SQL statements with a SQLAlchemy event (by origin, and by the database the engine points at),
and copies the process's bus, API and scheduler counters (canopy/observability/metrics.py), its CPU
seconds and peak RSS into the file; an agent process (canopy/sim/swarm.py) writes the same file.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

STATEMENTS: Counter[tuple[str, str]] = Counter()  # (origin, database) -> statements
_extra: dict[str, Any] = {}


def count_statements() -> None:
    """Count every statement any engine of this process runs, by origin and database."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from canopy import context

    def before(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        url = conn.engine.url
        where = f"{url.host or ''}:{url.port or ''}/{url.database}"
        STATEMENTS[(context.statement_origin.get() or "other", where)] += 1

    event.listen(Engine, "before_cursor_execute", before)


def snapshot(role: str) -> dict[str, Any]:
    """This process's figures now."""
    from canopy.observability import metrics as m

    t = os.times()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    api = {"|".join(k): [sum(row[:-1]), row[-1], list(row[:-1])] for k, row in m.API_LATENCY.rows.copy().items()}
    return {
        "pid": os.getpid(), "role": role, "t": time.time(), "cpu_s": t.user + t.system,
        "peak_rss_kib": usage.ru_maxrss, "rss_kib": _rss_kib(),
        "statements": {f"{o}|{d}": n for (o, d), n in STATEMENTS.copy().items()},
        "bus_handled": {"|".join(k): n for k, n in m.BUS_HANDLER_LATENCY.counts().items()},
        "bus_bytes": {k[0]: v for k, v in m.BUS_BYTES.values.copy().items()},
        "api": api, "api_bounds": list(m.API_LATENCY.bounds),
        "sched": {k[0]: v for k, v in m.SCHED_DECISIONS.values.copy().items()},
        "sched_events": _sched_events(),
        **_extra,
    }


def _sched_events() -> dict[str, int]:
    from canopy.observability import metrics as m

    totals: dict[str, int] = {}
    for stats in list(m._SCHEDULER_STATS.values()):
        for key, value in stats.copy().items():
            totals[key] = totals.get(key, 0) + value
    return totals


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return 0


def write_now(path: Path, role: str) -> None:
    """Write the figures atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot(role)))
    tmp.replace(path)


def start_writer(path: Path, role: str, every_s: float = 1.0) -> None:
    """Write the figures every `every_s` from a daemon thread (a busy event loop must not delay them)."""

    def loop() -> None:
        while True:
            try:
                write_now(path, role)
            except Exception:  # a failed write is retried next second; the service must not die of it
                pass
            time.sleep(every_s)

    threading.Thread(target=loop, name="sim-probe", daemon=True).start()


def set_extra(**values: Any) -> None:
    """Figures a process adds to its file (an agent process: agents held, heartbeats sent)."""
    _extra.update(values)


def main() -> None:
    """`python -m canopy.sim.probe STATS.json <canopy arguments>`: count, then run the real command."""
    path, args = Path(sys.argv[1]), sys.argv[2:]
    count_statements()
    start_writer(path, args[0] if args else "canopy")
    import atexit

    atexit.register(lambda: write_now(path, args[0] if args else "canopy"))
    sys.argv = ["canopy", *args]
    from canopy.cli import main as canopy_main

    canopy_main()


if __name__ == "__main__":
    main()
