"""The pure parts of fleet-scale database and messaging: replica rotation, replica configuration, the
NATS route table, message chunking and the idempotency marker (the real servers: tests/integration)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar

import pytest

from canopy.config import DatabaseConfig
from canopy.db import replicas
from canopy.db.replicas import Replica, ReplicaSet, next_health
from canopy.rpc.base import Target
from canopy.rpc.brokered import chunk_count, is_idempotent
from canopy.rpc.messages import Message
from canopy.rpc.nats import RouteTable


@pytest.mark.parametrize(("healthy", "lag", "limit", "after"), [
    (True, 0.0, 5.0, True),
    (True, 5.0, 5.0, True),  # at the limit: still in
    (True, 5.1, 5.0, False),  # past it: out
    (True, None, 5.0, False),  # not replicating, or unreachable
    (False, 4.0, 5.0, False),  # out, and not yet under half the limit: stays out (no flapping)
    (False, 2.5, 5.0, True),  # under half: back in
    (False, None, 5.0, False),
])
def test_rotation_follows_lag_with_hysteresis(healthy: bool, lag: float | None, limit: float, after: bool) -> None:
    assert next_health(healthy, lag, limit) is after


class FakeEngine:
    """Stands in for an Engine: connect() yields a connection or raises, as told."""

    def __init__(self, lag: float | None = 0.0, down: bool = False) -> None:
        self.lag, self.down = lag, down

    @contextmanager
    def connect(self) -> Any:
        if self.down:
            raise ConnectionRefusedError("refused")
        yield self


def make_set(*engines: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> ReplicaSet:
    monkeypatch.setattr(replicas, "measure_lag", lambda conn, dialect: conn.lag)
    clock = [0.0]
    rs = ReplicaSet([Replica(f"r{i}", e) for i, e in enumerate(engines)], "mysql", max_lag_s=5.0,  # type: ignore[arg-type]
                    check_s=2.0, clock=lambda: clock[0])
    rs.clock_cell = clock  # type: ignore[attr-defined]
    return rs


def test_pick_round_robins_over_healthy_replicas_only(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, lagging, down = FakeEngine(), FakeEngine(), FakeEngine(lag=60.0), FakeEngine(down=True)
    rs = make_set(a, lagging, b, down, monkeypatch=monkeypatch)
    picks = [rs.pick() for _ in range(4)]
    assert [p.engine for p in picks if p] == [a, b, a, b]
    status = {s["name"]: s for s in rs.status()}
    assert status["r1"]["reason"].startswith("lagging") and status["r3"]["reason"].startswith("unreachable")


def test_health_is_checked_again_only_when_due_and_a_replica_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    sick = FakeEngine(down=True)
    rs = make_set(sick, monkeypatch=monkeypatch)
    assert rs.pick() is None  # first pick checks: down, so the primary reads
    sick.down = False
    assert rs.pick() is None  # not due yet: still out
    rs.clock_cell[0] = 2.5  # type: ignore[attr-defined]
    assert rs.pick() is not None  # checked again, healthy: back in


def test_mark_down_takes_a_replica_out_until_the_next_check(monkeypatch: pytest.MonkeyPatch) -> None:
    rs = make_set(FakeEngine(), monkeypatch=monkeypatch)
    replica = rs.pick()
    assert replica is not None
    rs.mark_down(replica, "read failed")
    assert rs.pick() is None
    rs.clock_cell[0] = 10.0  # type: ignore[attr-defined]
    assert rs.pick() is replica


@pytest.mark.parametrize(("cfg", "expected"), [
    ({"global_url": "mysql://p/db", "cell_url": "mysql://p/db", "replica_urls": ["mysql://r/db"]},
     {"mysql://p/db": ["mysql://r/db"]}),
    ({"global_url": "mysql://p/g", "cell_url": "mysql://p/c", "replica_urls": ["mysql://r/g"]},
     {"mysql://p/g": ["mysql://r/g"]}),  # another cell database: its replicas are named on their own
    ({"global_url": "mysql://p/g", "cell_url": "mysql://p/c", "replica_urls": ["mysql://r/g"],
      "cell_replica_urls": ["mysql://r/c"]}, {"mysql://p/g": ["mysql://r/g"], "mysql://p/c": ["mysql://r/c"]}),
    ({"global_url": "sqlite:///x.db", "cell_url": "sqlite:///x.db"}, {}),
])
def test_replica_urls_map_to_their_primaries(cfg: dict[str, Any], expected: dict[str, list[str]]) -> None:
    assert DatabaseConfig(**cfg).replica_map() == expected


def test_route_table_round_robin_newest_host_wins_and_forget() -> None:
    t = RouteTable()
    t.learn("n1", frozenset({"conductor"}), frozenset(), 1.0)
    t.learn("n2", frozenset({"conductor"}), frozenset({("agent", "hv-1")}), 1.0)
    assert [t.pick(Target("conductor")) for _ in range(4)] == ["n1", "n2", "n1", "n2"]
    assert t.pick(Target("agent", "hv-1")) == "n2"
    t.learn("n3", frozenset(), frozenset({("agent", "hv-1")}), 2.0)  # hv-1's agent restarted
    assert t.pick(Target("agent", "hv-1")) == "n3"
    t.forget("n3")
    assert t.pick(Target("agent", "hv-1")) == "n2"  # the older announcer still serves it
    t.forget("n2")
    assert t.pick(Target("agent", "hv-1")) is None and t.pick(Target("conductor")) == "n1"
    assert t.pick(Target("nobody")) is None
    assert t.silent_since(1.5, keep="n1") == []


def test_learning_the_same_announcement_twice_changes_nothing() -> None:
    t = RouteTable()
    assert t.learn("n1", frozenset({"s"}), frozenset(), 1.0) is True
    assert t.learn("n1", frozenset({"s"}), frozenset(), 2.0) is False
    assert t.shared == {"s": ["n1"]} and t.peers["n1"].seen == 2.0


@pytest.mark.parametrize(("size", "limit", "chunks"),
                         [(0, 10, 1), (10, 10, 1), (11, 10, 2), (3 * 2**20, 2**20 - 4096, 4)])
def test_chunk_count(size: int, limit: int, chunks: int) -> None:
    assert chunk_count(size, limit) == chunks


def test_only_messages_that_say_so_are_idempotent() -> None:
    class Plain(Message):
        kind: ClassVar[str] = "unit_plain_msg"

    class Safe(Message):
        kind: ClassVar[str] = "unit_safe_msg"
        idempotent: ClassVar[bool] = True

    assert not is_idempotent(Plain()) and is_idempotent(Safe())
