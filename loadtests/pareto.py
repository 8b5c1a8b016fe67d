"""Pareto fronts and ranks: which models no other beats on every objective at once.

A point dominates another when it is at least as good on every objective and better on one.
The front (rank 1) is the points nothing dominates; rank 2 is the front of what remains, and so
on (non-dominated sorting, as NSGA-II does). Objectives are given as values to *maximize*: pass
a latency negated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere (maximizing)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def pareto_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Each point's Pareto rank (1 = on the front); a point with a NaN objective gets the rank
    after the last (it cannot be compared)."""
    ranks = [0] * len(points)
    comparable = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    left, rank = set(comparable), 0
    while left:
        rank += 1
        front = {i for i in left if not any(dominates(points[j], points[i]) for j in left)}
        for i in front:
            ranks[i] = rank
        left -= front
    for i, p in enumerate(points):
        if any(math.isnan(v) for v in p):
            ranks[i] = max(rank, 1) + 1  # never 1, even when no point could be compared
    return ranks


def front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indexes of the points on the front (rank 1), in the order given."""
    return [i for i, rank in enumerate(pareto_ranks(points)) if rank == 1]
