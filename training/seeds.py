"""Seed-to-seed variation: the same variant trained with several seeds, summarized.

One seed's test accuracy says little about a 0.1-point difference between two architectures;
``mnist-serve train --seeds 1,2,3`` trains each variant once per seed, exports the first seed's
model, and records in its metadata (``seeds``) every seed's test accuracy with their mean,
sample standard deviation and 95 % t-interval of the mean.
"""

from __future__ import annotations

import math
import statistics

from modelrepo.metadata import SeedSummary
from modelrepo.stats import t_interval, t_quantile

__all__ = ["SeedSummary", "difference", "summarize"]


def summarize(
    seeds: list[int], accuracies: list[float], epoch_seconds: list[list[float]]
) -> SeedSummary:
    """The summary of one variant's runs, one per seed."""
    interval = t_interval(accuracies)
    mean, low, high = interval.mean, interval.low, interval.high
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else math.nan
    medians = [round(statistics.median(times), 3) for times in epoch_seconds]
    return SeedSummary(
        seeds=seeds,
        test_accuracy=accuracies,
        mean=mean,
        std=std,
        low=low,
        high=high,
        epoch_seconds_median=medians,
    )


def difference(base: SeedSummary, candidate: SeedSummary) -> tuple[float, float, float]:
    """Candidate minus baseline mean accuracy and its 95 % interval (independent samples)."""
    diff = candidate.mean - base.mean
    n1, n2 = len(base.test_accuracy), len(candidate.test_accuracy)
    if n1 < 2 or n2 < 2:
        return diff, math.nan, math.nan
    se = math.sqrt(base.std**2 / n1 + candidate.std**2 / n2)
    half = t_quantile(min(n1, n2) - 1) * se  # conservative df
    return diff, diff - half, diff + half
