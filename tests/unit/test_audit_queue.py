"""The audit queue: bounded (a full queue drops and counts, never blocks), written in batches, and kept
when the database fails (a fake database stands in for the global one)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from canopy.api.audit import AuditRecord, AuditWriter, new_record
from canopy.clock import FakeClock
from canopy.observability.metrics import AUDIT_DROPPED


class FakeDb:
    """Records the batches written; fails while `down`."""

    def __init__(self) -> None:
        self.batches: list[list[AuditRecord]] = []
        self.down = False

    async def write(self, fn: Callable[..., Any], records: list[AuditRecord]) -> None:
        if self.down:
            raise ConnectionError("database away")
        self.batches.append(records)


def record(n: int) -> AuditRecord:
    return new_record(at=dt.datetime(2026, 12, 8), request_id=f"req-{n}", user_id=None, user_name=None,
                      project_id=None, domain_id=None, service="compute", method="POST", route="r",
                      path="/compute/v2.1/servers", target_id=None, source="198.51.100.1", status=202)


async def test_full_queue_drops_and_counts() -> None:
    db = FakeDb()
    writer = AuditWriter(db, FakeClock(), queue_size=3, batch=2, flush_interval_s=60)  # type: ignore[arg-type]
    before = AUDIT_DROPPED.get()
    for n in range(5):
        writer.submit(record(n))
    assert writer.pending() == 3 and writer.dropped == 2 and AUDIT_DROPPED.get() == before + 2
    await writer.flush()
    assert [len(b) for b in db.batches] == [2, 1]
    assert [r.request_id for b in db.batches for r in b] == ["req-0", "req-1", "req-2"]
    await writer.close()


async def test_a_failed_write_keeps_the_records_in_order() -> None:
    db = FakeDb()
    writer = AuditWriter(db, FakeClock(), queue_size=10, batch=10, flush_interval_s=60)  # type: ignore[arg-type]
    writer.submit(record(1), b'{"server": {"id": "s-1"}}')
    writer.submit(record(2))
    db.down = True
    with pytest.raises(ConnectionError):
        await writer.flush()
    assert writer.pending() == 2
    db.down = False
    await writer.close()
    written = db.batches[0]
    assert [r.request_id for r in written] == ["req-1", "req-2"]
    assert written[0].target_id == "s-1"  # the created id, read from the answer at flush time
