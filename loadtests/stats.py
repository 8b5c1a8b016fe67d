"""Intervals over repeats: how sure a mean (a throughput, a speedup) is, from few runs.

Repeats of a load-test step are few (3 by default) and independent, so a mean carries a
two-sided Student t-interval (:func:`modelrepo.stats.t_interval`, the one shared with
training's seeds); with one repeat there is no interval and no claim. Two runs compare by
:func:`change_interval`, Welch's interval of their ratio (the regression gate's statistic).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from modelrepo.stats import CONFIDENCE, t_interval, t_quantile


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


def paired_ratios(baseline: Sequence[float], candidate: Sequence[float]) -> list[float]:
    """Candidate over baseline, repeat by repeat."""
    return [y / x for x, y in zip(baseline, candidate, strict=True)]


def ratio_interval(baseline: Sequence[float], candidate: Sequence[float]) -> Interval:
    """Candidate over baseline, paired repeat by repeat (they ran back to back)."""
    return mean_interval(paired_ratios(baseline, candidate))


def change_interval(
    before: Sequence[float], after: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """How ``after`` compares with ``before`` as a ratio (after over before), two independent
    runs' repeats: Welch's t-interval on the logarithms, exponentiated (the ratio of geometric
    means; throughputs and latencies are positive and vary multiplicatively). NaN bounds when
    either side has one repeat; NaN throughout when a value is not a positive number."""
    if not before or not after:
        raise ValueError("no values to compare")
    if not all(v > 0 and math.isfinite(v) for v in (*before, *after)):
        return Interval(math.nan, math.nan, math.nan)
    logs_b, logs_a = [math.log(v) for v in before], [math.log(v) for v in after]
    centre = statistics.fmean(logs_a) - statistics.fmean(logs_b)
    if len(before) < 2 or len(after) < 2:
        return Interval(math.exp(centre), math.nan, math.nan)
    var_b = statistics.variance(logs_b) / len(before)
    var_a = statistics.variance(logs_a) / len(after)
    if var_a + var_b == 0:  # identical repeats on both sides: no spread to widen the ratio
        return Interval(math.exp(centre), math.exp(centre), math.exp(centre))
    # Welch-Satterthwaite degrees of freedom.
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(after) - 1) + var_b**2 / (len(before) - 1))
    half = t_quantile(df, confidence) * math.sqrt(var_a + var_b)
    return Interval(math.exp(centre), math.exp(centre - half), math.exp(centre + half))
