"""The weighers, table by table: pack and spread (per deployment and per aggregate), weights per
resource, soft (anti-)affinity, and the random choice among the top few."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pytest

from canopy.scheduler.aggregates import Aggregate
from canopy.scheduler.hoststate import Weights
from canopy.scheduler.request import GroupState
from canopy.scheduler.weighers import choose, ranking, scores, top
from tests.unit.fleet_rows import make_index

# h1 nearly empty, h2 half full, h3 nearly full (RAM); CPU the other way round.
FLEET = [{"memory_mb_used": 1024, "vcpus_used": 7}, {"memory_mb_used": 8192, "vcpus_used": 4},
         {"memory_mb_used": 15360, "vcpus_used": 1}]


def order(ix: Any, group: GroupState | None = None, weight: float = 1.0) -> list[str]:
    mask = np.ones(ix.size, dtype=bool)
    return [name for name, _ in ranking(ix, mask, ix.size, group, weight)]


@pytest.mark.parametrize(("weights", "want"), [
    (Weights.for_strategy("spread", ram=1, cpu=0, disk=0), ["h1", "h2", "h3"]),
    (Weights.for_strategy("pack", ram=1, cpu=0, disk=0), ["h3", "h2", "h1"]),
    (Weights.for_strategy("spread", ram=0, cpu=1, disk=0), ["h3", "h2", "h1"]),
    (Weights.for_strategy("pack", ram=0, cpu=1, disk=0), ["h1", "h2", "h3"]),
    (Weights(ram=3.0, cpu=1.0, disk=0.0), ["h1", "h2", "h3"]),      # RAM outweighs CPU
    (Weights(ram=1.0, cpu=3.0, disk=0.0), ["h3", "h2", "h1"]),
])
def test_pack_spread_and_weights_per_resource(weights: Weights, want: list[str]) -> None:
    assert order(make_index(FLEET, weights=weights)) == want


def test_an_aggregate_can_pack_while_the_deployment_spreads() -> None:
    fleet = FLEET + [{"memory_mb_used": 1024}, {"memory_mb_used": 15360}]
    aggs = [Aggregate(1, "packed", frozenset({"h4", "h5"}), {"scheduler_strategy": "pack"})]
    ix = make_index(fleet, aggs, weights=Weights.for_strategy("spread", ram=1, cpu=0, disk=0))
    s = dict(ranking(ix, np.ones(ix.size, dtype=bool), 5))
    assert s["h1"] > s["h3"]   # the deployment spreads
    assert s["h5"] > s["h4"]   # the aggregate packs


def test_nova_weight_multiplier_metadata_overrides_one_resource() -> None:
    aggs = [Aggregate(1, "a", frozenset({"h1", "h2", "h3"}), {"ram_weight_multiplier": "-2.0"})]
    ix = make_index(FLEET, aggs, weights=Weights.for_strategy("spread", ram=1, cpu=0, disk=0))
    assert order(ix) == ["h3", "h2", "h1"]


def test_scores_are_zero_exactly_where_filtered_out() -> None:
    ix = make_index(FLEET)
    out = scores(ix, np.array([True, False, True]))
    assert out[1] == 0 and out[0] >= 1 and out[2] >= 1


@pytest.mark.parametrize(("policy", "weight", "first"), [
    ("soft-affinity", 1.0, "h3"),        # the member's host wins although it is the fullest
    ("soft-anti-affinity", 1.0, "h1"),
    ("soft-affinity", 0.0, "h1"),        # weight 0: resources alone
])
def test_soft_affinity_weigher(policy: str, weight: float, first: str) -> None:
    ix = make_index(FLEET, weights=Weights.for_strategy("spread", ram=1, cpu=0, disk=0))
    group = GroupState("g", policy, members={"h3": 2})
    assert order(ix, group, weight)[0] == first


def test_soft_anti_affinity_sinks_the_host_with_members_below_every_other() -> None:
    ix = make_index(FLEET, weights=Weights.for_strategy("spread", ram=1, cpu=0, disk=0))
    assert order(ix, GroupState("g", "soft-anti-affinity", members={"h1": 1}))[-1] == "h1"


def test_top_takes_the_best_in_order_and_stops_at_the_last_candidate() -> None:
    out = np.array([1.5, 0.0, 1.9, 1.2], dtype=np.float32)
    assert top(out.copy(), 2) == [2, 0]
    assert top(out.copy(), 10) == [2, 0, 3]
    assert top(np.zeros(4, dtype=np.float32), 3) == []


def test_the_choice_is_random_among_the_top_k_only() -> None:
    fleet = [{"memory_mb_used": 1024 * n} for n in range(8)]
    ix = make_index(fleet, weights=Weights.for_strategy("spread", ram=1, cpu=0, disk=0))
    rng = random.Random(1)
    picks = Counter(ix.names[choose(ix, np.ones(ix.size, dtype=bool), rng, top_k=3)] for _ in range(600))
    assert set(picks) == {"h1", "h2", "h3"} and min(picks.values()) > 120
    assert choose(ix, np.zeros(ix.size, dtype=bool), rng) is None


def test_equal_hosts_are_broken_differently_by_each_scheduler() -> None:
    firsts = set()
    for seed in range(8):
        firsts.add(order(make_index([{}] * 50, seed=seed))[0])
    assert len(firsts) > 3
