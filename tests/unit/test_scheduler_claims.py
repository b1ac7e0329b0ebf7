"""Claims against a real SQLite database: a property test that no sequence of claims and releases ever
leaves a host over its limits (or below zero), the hard server-group rules, and the claim audit."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, insert, select, update

from canopy.db import tables_cell as c
from canopy.db.engine import Database
from canopy.db.migrate import upgrade_part
from canopy.scheduler import audit, claims
from tests.unit.fleet_rows import add_instance

NOW = dt.datetime(2026, 1, 1)
# (vcpus, memory_mb, local_gb, cpu ratio, reserved MB)
HOSTS = [(4, 8192, 100, 1.0, 512), (8, 16384, 200, 2.0, 0), (2, 4096, 40, 4.0, 1024)]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path: Path = tmp_path_factory.mktemp("claims") / "cell.db"
    database = Database(f"sqlite:///{path}")
    upgrade_part(database.primary, "cell")
    with database.writer() as conn:
        for n, (v, r, d, ratio, reserved) in enumerate(HOSTS, start=1):
            conn.execute(insert(c.hosts).values(
                name=f"hv-{n}", uuid=str(uuid.uuid4()), hypervisor_type="fake", hypervisor_version=1, vcpus=v,
                memory_mb=r, local_gb=d, vcpus_used=0, memory_mb_used=0, local_gb_used=0, running_vms=0,
                cpu_allocation_ratio=ratio, ram_allocation_ratio=1.0, disk_allocation_ratio=1.0, reserved_vcpus=0,
                reserved_memory_mb=reserved, reserved_disk_gb=0, availability_zone="nova", datacenter="dc1",
                rack="r1", enabled=True, created_at=NOW, updated_at=NOW))
    yield database
    database.dispose()


def reset(conn: Connection) -> None:
    conn.execute(update(c.hosts).values(vcpus_used=0, memory_mb_used=0, local_gb_used=0, running_vms=0))
    for table in (c.instances, c.group_placements, c.group_anchors):
        conn.execute(table.delete())


def hosts(conn: Connection) -> list[Any]:
    return list(conn.execute(select(c.hosts).order_by(c.hosts.c.id)).all())


def within_limits(row: Any) -> bool:
    return (0 <= row.vcpus_used <= row.vcpus * row.cpu_allocation_ratio - row.reserved_vcpus
            and 0 <= row.memory_mb_used <= row.memory_mb * row.ram_allocation_ratio - row.reserved_memory_mb
            and 0 <= row.local_gb_used <= row.local_gb * row.disk_allocation_ratio - row.reserved_disk_gb
            and row.running_vms >= 0)


op = st.one_of(
    st.tuples(st.just("claim"), st.integers(1, 3), st.integers(0, 6), st.integers(0, 9000), st.integers(0, 120)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("release_bogus"), st.integers(1, 3), st.integers(0, 4), st.integers(0, 4096),
              st.integers(0, 50)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, max_size=40))
def test_no_sequence_of_claims_and_releases_leaves_a_host_over_its_limits(db: Database, ops: list[Any]) -> None:
    with db.writer() as conn:
        reset(conn)
    held: list[tuple[int, int, int, int]] = []  # what the model says each successful claim took
    for step in ops:
        with db.writer() as conn:
            if step[0] == "claim":
                _, host, v, r, d = step
                if claims.claim(conn, host, v, r, d, NOW):
                    held.append((host, v, r, d))
            elif step[0] == "release" and held:
                host, v, r, d = held.pop(step[1] % len(held))
                assert claims.release(conn, f"hv-{host}", v, r, d, NOW)
            elif step[0] == "release_bogus":  # a double release, or one for a claim never made
                _, host, v, r, d = step
                claims.release(conn, f"hv-{host}", v, r, d, NOW)
                held = []  # the model no longer knows the truth; only the limits must still hold
                conn.execute(update(c.hosts).values(vcpus_used=0, memory_mb_used=0, local_gb_used=0,
                                                    running_vms=0))
            rows = hosts(conn)
        assert all(within_limits(row) for row in rows), rows
        for row in rows:  # and the counters are exactly what the successful claims add up to
            mine = [x for x in held if x[0] == row.id]
            assert (row.vcpus_used, row.memory_mb_used, row.local_gb_used, row.running_vms) == (
                sum(x[1] for x in mine), sum(x[2] for x in mine), sum(x[3] for x in mine), len(mine))


def test_a_claim_that_no_longer_fits_is_refused_and_changes_nothing(db: Database) -> None:
    with db.writer() as conn:
        reset(conn)
        assert claims.claim(conn, 1, 4, 7680, 100, NOW)       # exactly full (8192 - 512 reserved)
        assert not claims.claim(conn, 1, 0, 1, 0, NOW)
        assert not claims.release(conn, "hv-1", 5, 0, 0, NOW)  # more than it holds: drift, refused
        assert hosts(conn)[0].vcpus_used == 4


def claim_member(db: Database, host_id: int, group: claims.GroupClaim) -> bool | str:
    """Claim 1 vCPU for a new member on a host; 'conflict' when the group rule refused it."""
    with db.writer() as conn:
        uid = add_instance(conn)
    try:
        with db.writer() as conn:
            return claims.claim(conn, host_id, 1, 512, 1, NOW, instance_uuid=uid, host=f"hv-{host_id}", group=group)
    except claims.GroupConflict:
        return "conflict"


def test_hard_anti_affinity_allows_max_server_per_host_members_per_host(db: Database) -> None:
    with db.writer() as conn:
        reset(conn)
    group = claims.GroupClaim("g-anti", "anti-affinity", max_per_host=2)
    assert [claim_member(db, 2, group) for _ in range(3)] == [True, True, "conflict"]
    assert claim_member(db, 3, group) is True
    with db.reader() as conn:
        assert claims.live_members(conn, "g-anti") == {"hv-2": 2, "hv-3": 1}
        assert hosts(conn)[1].vcpus_used == 2  # the refused claim was rolled back with its capacity


def test_hard_affinity_anchors_the_group_to_its_first_host_until_it_is_empty(db: Database) -> None:
    with db.writer() as conn:
        reset(conn)
    group = claims.GroupClaim("g-aff", "affinity")
    assert claim_member(db, 2, group) is True
    assert claim_member(db, 3, group) == "conflict"
    assert claim_member(db, 2, group) is True
    with db.writer() as conn:  # every member deleted: the group may start again elsewhere
        conn.execute(update(c.instances).values(deleted=True))
    assert claim_member(db, 3, group) is True


def test_the_audit_repairs_drift_and_leaves_consistent_hosts_alone(db: Database) -> None:
    with db.writer() as conn:
        reset(conn)
        add_instance(conn, "hv-1", {"vcpus": 2, "ram": 1024, "disk": 10})
        add_instance(conn, "hv-1", {"vcpus": 1, "ram": 512, "disk": 5})
        add_instance(conn, "hv-1", {"vcpus": 4, "ram": 4096, "disk": 40}, deleted=True)
        add_instance(conn, "hv-2", {"vcpus": 1, "ram": 512, "disk": 1})
        # hv-1 lost a release (counts too much); hv-2 is right; hv-3 counts a claim nobody holds.
        conn.execute(update(c.hosts).where(c.hosts.c.name == "hv-1").values(
            vcpus_used=7, memory_mb_used=5632, local_gb_used=55, running_vms=3))
        conn.execute(update(c.hosts).where(c.hosts.c.name == "hv-2").values(
            vcpus_used=1, memory_mb_used=512, local_gb_used=1, running_vms=1))
        conn.execute(update(c.hosts).where(c.hosts.c.name == "hv-3").values(
            vcpus_used=1, memory_mb_used=512, local_gb_used=1, running_vms=1))
    with db.writer() as conn:
        report = audit.audit_batch(conn, NOW)
    assert sorted(d.host for d in report.drift) == ["hv-1", "hv-3"] and report.repaired == 2
    with db.reader() as conn:
        rows = hosts(conn)
    assert [(r.vcpus_used, r.memory_mb_used, r.local_gb_used, r.running_vms) for r in rows] == [
        (3, 1536, 15, 2), (1, 512, 1, 1), (0, 0, 0, 0)]
    with db.writer() as conn:
        assert audit.audit_batch(conn, NOW).drift == []


def test_a_repair_skips_a_host_whose_counters_moved_since_the_audit_read_them(db: Database) -> None:
    with db.writer() as conn:
        reset(conn)
        conn.execute(update(c.hosts).where(c.hosts.c.name == "hv-1").values(vcpus_used=3))
        report = audit.audit_batch(conn, NOW, repair=False)
    assert [d.host for d in report.drift] == ["hv-1"]
    with db.writer() as conn:
        assert claims.claim(conn, 1, 1, 0, 0, NOW)  # a claim lands between the audit's read and its repair
        assert not audit._repair(conn, report.drift[0], NOW)
        assert hosts(conn)[0].vcpus_used == 4


def test_audit_batches_walk_every_host_once(db: Database) -> None:
    with db.writer() as conn:
        first = audit.audit_batch(conn, NOW, 0, limit=2)
        second = audit.audit_batch(conn, NOW, first.next_after_id or 0, limit=2)
    assert (first.hosts, first.next_after_id) == (2, 2) and (second.hosts, second.next_after_id) == (1, None)


def test_stale_group_placements_are_pruned(db: Database) -> None:
    with db.writer() as conn:
        reset(conn)
    group = claims.GroupClaim("g-prune", "anti-affinity")
    assert claim_member(db, 1, group) is True and claim_member(db, 2, group) is True
    with db.writer() as conn:
        conn.execute(update(c.instances).where(c.instances.c.host == "hv-1").values(host=None))
        assert audit.prune_group_placements(conn) == 1
        assert claims.live_members(conn, "g-prune") == {"hv-2": 1}


def test_resize_adjusts_a_claim_in_place_and_a_revert_gives_the_new_flavor_back(db: Database) -> None:
    with db.writer() as conn:
        reset(conn)
        assert claims.claim(conn, 2, 2, 2048, 20, NOW)
        assert claims.adjust(conn, 2, 2, 2048, 20, NOW)          # grow in place: still fits
        assert not claims.adjust(conn, 2, 20, 0, 0, NOW)         # 24 vCPUs > 16 (8 × 2.0)
        assert claims.adjust(conn, 2, -1, -1024, -10, NOW)       # shrink
        assert not claims.adjust(conn, 2, -10, 0, 0, NOW)        # never below zero
        assert claims.claim(conn, 1, 1, 512, 5, NOW)             # a resize's claim on another host…
        assert claims.revert_resize(conn, "hv-1", 1, 512, 5, NOW)  # …given back when it is reverted
        rows = hosts(conn)
    assert (rows[0].vcpus_used, rows[0].running_vms) == (0, 0)
    assert (rows[1].vcpus_used, rows[1].memory_mb_used, rows[1].local_gb_used) == (3, 3072, 30)


def _claim_for(db: Database, uid: str) -> bool | str:
    try:
        with db.writer() as conn:
            return claims.claim(conn, 2, 1, 512, 1, NOW, instance_uuid=uid, host="hv-2")
    except claims.NotWaiting:
        return "not waiting"


@pytest.mark.parametrize(("instance", "expected"), [
    ({}, True),                                              # building, no host: it waits
    ({"host": "hv-1"}, "not waiting"),                       # placed already (a retried claim)
    ({"vm_state": "error"}, "not waiting"),                  # its build failed before the claim landed
    ({"deleted": True}, "not waiting"),                      # deleted meanwhile
])
def test_a_claim_lands_only_on_an_instance_still_waiting_for_a_host(db: Database, instance: dict[str, Any],
                                                                    expected: bool | str) -> None:
    with db.writer() as conn:
        reset(conn)
        uid = add_instance(conn, host=instance.get("host"), deleted=instance.get("deleted", False))
        if "vm_state" in instance:
            conn.execute(update(c.instances).where(c.instances.c.uuid == uid).values(vm_state=instance["vm_state"]))
    assert _claim_for(db, uid) == expected
    with db.reader() as conn:
        used = hosts(conn)[1].vcpus_used
        host = conn.execute(select(c.instances.c.host).where(c.instances.c.uuid == uid)).scalar()
    assert used == (1 if expected is True else 0)  # a refused claim is rolled back with its capacity
    assert host == ("hv-2" if expected is True else instance.get("host"))


def test_unclaim_gives_back_what_the_instance_holds_once(db: Database) -> None:
    with db.writer() as conn:
        reset(conn)
        uid = add_instance(conn)
    assert _claim_for(db, uid) is True
    with db.writer() as conn:
        assert claims.unclaim(conn, uid, 1, 512, 1, NOW) == "hv-2"
        assert claims.unclaim(conn, uid, 1, 512, 1, NOW) is None  # a second release finds no host
        assert hosts(conn)[1].vcpus_used == 0
        assert claims.unclaim(conn, add_instance(conn), 1, 512, 1, NOW) is None  # never claimed
