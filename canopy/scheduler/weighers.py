"""Weighers as vector scores, and the choice among the best hosts.

Each host carries a base score in [1, 2] (hoststate.rescore: free fractions times per-resource
weights, negative weights pack). A request's scores are that base times its filter mask — one
multiplication, so a host filtered out scores 0 and can never win. Server-group soft policies then
adjust the few hosts holding members. The chooser takes the top few by repeated argmax (much cheaper
than a sort or a partition over 100,000 hosts) and picks one of them at random, so that schedulers
working side by side rarely reach for the same host.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from canopy.scheduler.hoststate import HostIndex
from canopy.scheduler.request import GroupState

Array = np.ndarray[Any, Any]
_FLOOR = np.float32(1e-6)


def scores(ix: HostIndex, mask: Array, group: GroupState | None = None, soft_weight: float = 1.0) -> Array:
    """The score of every host for this request: 0 where filtered out, higher is better."""
    out = np.multiply(ix.view("score"), mask, dtype=np.float32)
    if group is not None and group.members and group.policy in ("soft-affinity", "soft-anti-affinity"):
        apply_soft_group(ix, out, group, soft_weight)
    return out


def apply_soft_group(ix: HostIndex, out: Array, group: GroupState, weight: float) -> None:
    """Soft affinity lifts the hosts holding members; soft anti-affinity sinks them.

    The shift is 2 × weight × (members on the host / most members on any host). Base scores span
    [1, 2], so with weight 1 the host holding the most members ranks above (affinity) or below
    (anti-affinity) every host holding none; a smaller weight only nudges.
    """
    most = max(group.members.values())
    for host, count in group.members.items():
        i = ix.by_name.get(host)
        if i is None or out[i] <= 0:
            continue  # not a candidate: a soft policy never brings a filtered host back
        shift = np.float32(2.0 * weight * count / most)
        out[i] = out[i] + shift if group.policy == "soft-affinity" else max(out[i] - shift, _FLOOR)


def top(out: Array, k: int) -> list[int]:
    """The positions of the k highest positive scores (fewer if fewer hosts are left), best first.

    Destroys `out` at those positions."""
    found: list[int] = []
    for _ in range(k if out.size else 0):
        i = int(out.argmax())
        if out[i] <= 0:
            break
        found.append(i)
        out[i] = 0
    return found


def choose(ix: HostIndex, mask: Array, rng: random.Random, top_k: int = 3, group: GroupState | None = None,
           soft_weight: float = 1.0) -> int | None:
    """One host among the best `top_k` for this mask, at random; None when the mask is empty."""
    best = top(scores(ix, mask, group, soft_weight), top_k)
    if not best:
        return None
    return best[rng.randrange(len(best))]


def ranking(ix: HostIndex, mask: Array, n: int, group: GroupState | None = None,
            soft_weight: float = 1.0) -> list[tuple[str, float]]:
    """The n best hosts with their scores (for explanations)."""
    out = scores(ix, mask, group, soft_weight)
    keep = out.copy()
    return [(ix.names[i], round(float(keep[i]), 4)) for i in top(out, n)]
