"""The filters, table by table, on a small synthetic fleet (tests/unit/fleet_rows.py): host and service rows
as plain objects, taken into a HostIndex exactly as the change feed takes database rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from canopy.scheduler.aggregates import Aggregate
from canopy.scheduler.filters import FilterChain
from canopy.scheduler.hoststate import HostIndex
from canopy.scheduler.request import GroupState, ImageNeeds, Request
from tests.unit.fleet_rows import host_row, make_index

# -- the filters, one table each ---------------------------------------------------------------------


def passing(ix: HostIndex, req: Request) -> list[str]:
    """The hosts the whole chain lets through, checked to agree with the counting path."""
    chain = FilterChain()
    fast = chain.select(ix, req)
    slow = chain.explain(ix, req)
    assert np.array_equal(fast, slow.mask)
    return [ix.names[i] for i in np.flatnonzero(fast)]


def removed_by(ix: HostIndex, req: Request) -> dict[str, int]:
    return {f.name: n for f, n in FilterChain().explain(ix, req).removed if n}


SMALL = Request(vcpus=1, memory_mb=512, disk_gb=1)


@pytest.mark.parametrize(("hosts", "want", "reason"), [
    ([{}, {"enabled": False}], ["h1"], "enabled"),
    ([{}, {"seen_ago_s": 61}], ["h1"], "service"),
    ([{}, {"service": {"disabled": True}}], ["h1"], "service"),
    ([{}, {"service": {"forced_down": True}}], ["h1"], "service"),
    ([{}, {"vcpus_used": 8}], ["h1"], "vcpus"),
    ([{}, {"memory_mb_used": 16000}], ["h1"], "ram"),
    ([{}, {"local_gb_used": 200}], ["h1"], "disk"),
    ([{}, {"reserved_memory_mb": 15900}], ["h1"], "ram"),
    ([{"vcpus_used": 8, "cpu_allocation_ratio": 2.0}, {"vcpus_used": 8}], ["h1"], "vcpus"),
])
def test_liveness_and_capacity(hosts: list[dict[str, Any]], want: list[str], reason: str) -> None:
    ix = make_index(hosts)
    assert passing(ix, SMALL) == want
    assert removed_by(ix, SMALL) == {reason: 1}


@pytest.mark.parametrize(("zone", "want"), [(None, ["h1", "h2", "h3"]), ("az1", ["h1", "h3"]), ("az2", ["h2"]),
                                           ("nowhere", [])])
def test_availability_zone(zone: str | None, want: list[str]) -> None:
    ix = make_index([{"availability_zone": "az1"}, {"availability_zone": "az2"}, {"availability_zone": "az1"}])
    assert passing(ix, Request(1, 512, 1, availability_zone=zone)) == want


def test_an_aggregate_zone_overrides_what_the_agent_reported() -> None:
    ix = make_index([{}, {}], [Aggregate(1, "west", frozenset({"h2"}), {"availability_zone": "az-west"})])
    assert passing(ix, Request(1, 512, 1, availability_zone="az-west")) == ["h2"]
    assert passing(ix, Request(1, 512, 1, availability_zone="nova")) == ["h1"]


@pytest.mark.parametrize(("kw", "want"), [
    ({"force_host": "h2"}, ["h2"]),
    ({"force_host": "nope"}, []),
    ({"exclude_hosts": ("h1",)}, ["h2", "h3"]),
    ({"same_host": ("h1", "h3")}, ["h1", "h3"]),
    ({"same_host": ()}, []),
    ({"different_host": ("h1", "h3")}, ["h2"]),
    ({"same_host": ("h1", "h3"), "force_host": "h3"}, ["h3"]),
])
def test_host_hints(kw: dict[str, Any], want: list[str]) -> None:
    ix = make_index([{}, {}, {}])
    assert passing(ix, Request(1, 512, 1, **kw)) == want


TENANT_AGGS = [Aggregate(1, "gold", frozenset({"h1"}), {"filter_tenant_id": "p-gold,p-vip"}),
               Aggregate(2, "silver", frozenset({"h2"}), {"filter_tenant_id_1": "p-silver"})]


@pytest.mark.parametrize(("project", "pin", "want"), [
    ("p-gold", True, ["h1"]),          # pinned to its aggregate
    ("p-vip", True, ["h1"]),
    ("p-silver", True, ["h2"]),
    ("p-other", True, ["h3"]),         # kept off the reserved hosts
    ("p-gold", False, ["h1", "h3"]),   # isolation only: the reserved host, or any unreserved one
])
def test_tenant_isolation(project: str, pin: bool, want: list[str]) -> None:
    ix = make_index([{}, {}, {}], TENANT_AGGS)
    ix.aggregates.pin_tenants = pin
    assert passing(ix, Request(1, 512, 1, project_id=project)) == want


@pytest.mark.parametrize(("props", "want"), [
    ({}, ["h1", "h2", "h3"]),
    ({"hw_architecture": "x86_64"}, ["h1", "h2", "h3"]),
    ({"architecture": "amd64"}, ["h1", "h2", "h3"]),
    ({"hw_architecture": "aarch64"}, []),
    ({"img_hv_type": "qemu"}, ["h2", "h3"]),
    ({"hypervisor_type": "QEMU", "img_hv_requested_version": ">=7000"}, ["h3"]),
    ({"img_hv_type": "fake"}, ["h1"]),
])
def test_image_properties(props: dict[str, str], want: list[str]) -> None:
    ix = make_index([{}, {"hypervisor_type": "QEMU", "hypervisor_version": 6002},
                     {"hypervisor_type": "qemu", "hypervisor_version": 7002}])
    assert passing(ix, Request(1, 512, 1, image=ImageNeeds.from_properties(props))) == want


def test_flavor_extra_specs_match_aggregate_metadata() -> None:
    aggs = [Aggregate(1, "ssd", frozenset({"h1", "h2"}), {"disk": "ssd,nvme"}),
            Aggregate(2, "fast", frozenset({"h2"}), {"cpu": "fast"})]
    ix = make_index([{}, {}, {}], aggs)
    assert passing(ix, Request(1, 512, 1, extra_specs=(("disk", "nvme"),))) == ["h1", "h2"]
    assert passing(ix, Request(1, 512, 1, extra_specs=(("cpu", "fast"), ("disk", "ssd")))) == ["h2"]
    assert passing(ix, Request(1, 512, 1, extra_specs=(("disk", "hdd"),))) == []


@pytest.mark.parametrize(("racks", "want"), [
    ((), ["h1", "h2", "h3"]),
    ((None,), ["h1", "h2", "h3"]),
    ((frozenset({"dc1/r2"}),), ["h2"]),
    ((frozenset({"dc1/r1", "dc1/r2"}), frozenset({"dc1/r2"})), ["h2"]),
    ((frozenset({"dc2/r2"}),), []),
    ((frozenset(),), []),
])
def test_network_reachability_by_rack(racks: tuple[frozenset[str] | None, ...], want: list[str]) -> None:
    ix = make_index([{"rack": "r1"}, {"rack": "r2"}, {"rack": "r3"}])
    assert passing(ix, Request(1, 512, 1, racks=racks)) == want


@pytest.mark.parametrize(("policy", "max_per_host", "members", "want"), [
    ("anti-affinity", 1, {}, ["h1", "h2", "h3"]),
    ("anti-affinity", 1, {"h1": 1}, ["h2", "h3"]),
    ("anti-affinity", 2, {"h1": 1, "h2": 2}, ["h1", "h3"]),
    ("affinity", 1, {}, ["h1", "h2", "h3"]),
    ("affinity", 1, {"h2": 3}, ["h2"]),
    ("soft-affinity", 1, {"h2": 3}, ["h1", "h2", "h3"]),
    ("soft-anti-affinity", 1, {"h2": 3}, ["h1", "h2", "h3"]),
])
def test_server_group_policies(policy: str, max_per_host: int, members: dict[str, int], want: list[str]) -> None:
    ix = make_index([{}, {}, {}])
    group = GroupState("g", policy, max_per_host, dict(members))
    assert passing(ix, Request(1, 512, 1, group=group)) == want


def test_a_no_says_how_many_each_filter_removed_from_what_was_left() -> None:
    ix = make_index([{"enabled": False}, {"availability_zone": "az2"}, {"memory_mb_used": 16000},
                     {"memory_mb_used": 16000}, {"vcpus_used": 8}])
    outcome = FilterChain().explain(ix, Request(1, 1024, 1, availability_zone="nova"))
    assert outcome.explain() == ("0 of 5 hosts fit; enabled: 1 disabled; availability_zone: 1 in other zones; "
                                 "vcpus: 1 without enough free vCPUs; ram: 2 without enough free RAM")
    steps = outcome.as_dict()["filters"]
    assert [s["remaining"] for s in steps if s["removed"]] == [4, 3, 2, 0]


def test_cached_masks_follow_label_changes() -> None:
    ix = make_index([{}, {}])
    chain = FilterChain()
    req = Request(1, 512, 1, availability_zone="nova")
    assert list(np.flatnonzero(chain.select(ix, req))) == [0, 1]
    ix.apply_host_row(host_row("h2", 2, availability_zone="az9"))
    assert list(np.flatnonzero(chain.select(ix, req))) == [0]
    ix.add_usage(0, 8, 0, 0)  # capacity is never cached
    assert list(np.flatnonzero(chain.select(ix, req))) == []
