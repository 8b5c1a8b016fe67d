"""Intervals over repeats: how sure a mean (a throughput, a speedup) is, from few runs.

Repeats of a load-test step are few (3 by default) and independent, so a mean carries a
two-sided Student t-interval (:func:`modelrepo.stats.t_interval`, the one shared with
training's seeds); with one repeat there is no interval and no claim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from modelrepo.stats import CONFIDENCE, t_interval


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval (NaN bounds with a single repeat)."""

    mean: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        """Whether the whole interval lies on one side of ``value``."""
        return not math.isnan(self.low) and (self.low > value or self.high < value)

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a value (always, when either has no bounds)."""
        if math.isnan(self.low) or math.isnan(other.low):
            return True
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.2f}x"
        return f"{self.mean:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and two-sided t-interval of ``values`` (independent repeats)."""
    found = t_interval([float(v) for v in values], confidence)
    return Interval(found.mean, found.low, found.high)


def ratio_interval(baseline: Sequence[float], candidate: Sequence[float]) -> Interval:
    """Candidate over baseline, paired repeat by repeat (they ran back to back)."""
    return mean_interval([y / x for x, y in zip(baseline, candidate, strict=True)])
