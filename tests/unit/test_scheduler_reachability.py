"""Which racks reach a network (canopy/network/reachability.py), table by table."""

from __future__ import annotations

import pytest

from canopy.network.reachability import SubnetRoom, pool_size, reachable_racks

SEGMENTS = {"seg-a": ["dc1/r1", "dc1/r2"], "seg-b": ["dc1/r3"]}


@pytest.mark.parametrize(("rooms", "want"), [
    ([], None),                                                               # no subnet: no address needed
    ([SubnetRoom("s1", "n", None, 10)], None),                                # unsegmented: every rack
    ([SubnetRoom("s1", "n", None, 0)], frozenset()),                          # … but full
    ([SubnetRoom("s1", "n", "seg-a", 5)], frozenset({"dc1/r1", "dc1/r2"})),
    ([SubnetRoom("s1", "n", "seg-a", 0), SubnetRoom("s2", "n", "seg-b", 1)], frozenset({"dc1/r3"})),
    ([SubnetRoom("s1", "n", "seg-a", 0), SubnetRoom("s2", "n", None, 3)], None),
    ([SubnetRoom("s1", "n", "seg-unmapped", 9)], frozenset()),                # a segment no rack is cabled to
])
def test_reachable_racks(rooms: list[SubnetRoom], want: frozenset[str] | None) -> None:
    assert reachable_racks(rooms, ["n"], SEGMENTS) == {"n": want}


def test_pool_size_counts_every_range() -> None:
    pools = [{"start": "192.0.2.2", "end": "192.0.2.6"}, {"start": "198.51.100.10", "end": "198.51.100.10"}]
    assert pool_size(pools) == 6 and pool_size([]) == 0
