"""Seed-to-seed variation: the same variant trained with several seeds, summarized.

One seed's test accuracy says little about a 0.1-point difference between two architectures;
``mnist-serve train --seeds 1,2,3`` trains each variant once per seed, exports the first seed's
model, and records in its metadata (``seeds``) every seed's test accuracy with their mean,
sample standard deviation and 95 % t-interval of the mean.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Student's t, two-sided 95 %, by degrees of freedom (n - 1); beyond the table, the normal 1.96.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def t975(df: int) -> float:
    """The two-sided 95 % t quantile for ``df`` degrees of freedom (conservative between rows)."""
    if df < 1:
        return math.nan
    return next((T975[k] for k in sorted(T975) if k >= df), 1.96)


@dataclass(frozen=True)
class SeedSummary:
    """Test accuracy over seeds: each seed's, their mean, spread and 95 % interval of the mean."""

    seeds: list[int]
    test_accuracy: list[float]
    mean: float
    std: float  # sample standard deviation (NaN with one seed)
    low: float
    high: float
    epoch_seconds_median: list[float]


def summarize(
    seeds: list[int], accuracies: list[float], epoch_seconds: list[list[float]]
) -> SeedSummary:
    """The summary of one variant's runs, one per seed."""
    mean = statistics.fmean(accuracies)
    if len(accuracies) < 2:
        std = low = high = math.nan
    else:
        std = statistics.stdev(accuracies)
        half = t975(len(accuracies) - 1) * std / math.sqrt(len(accuracies))
        low, high = mean - half, mean + half
    medians = [round(statistics.median(times), 3) for times in epoch_seconds]
    return SeedSummary(seeds, accuracies, mean, std, low, high, medians)


def difference(base: SeedSummary, candidate: SeedSummary) -> tuple[float, float, float]:
    """Candidate minus baseline mean accuracy and its 95 % interval (independent samples)."""
    diff = candidate.mean - base.mean
    n1, n2 = len(base.test_accuracy), len(candidate.test_accuracy)
    if n1 < 2 or n2 < 2:
        return diff, math.nan, math.nan
    se = math.sqrt(base.std**2 / n1 + candidate.std**2 / n2)
    half = t975(min(n1, n2) - 1) * se
    return diff, diff - half, diff + half
