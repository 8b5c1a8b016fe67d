"""Intervals over windows: how sure a mean (a throughput) or a ratio (a speedup) is.

A load test measures each target in many short windows, in alternating order, so that two
targets are measured back to back, window by window. A ratio of two targets (a speedup) is
therefore *paired*: window ``i`` of the candidate over window ``i`` of the baseline, so that the
machine's drift, which moves both alike, cancels. The ratios are averaged in log space (a ratio
of 2 and one of 1/2 cancel), with a two-sided Student t-interval over the pairs
(:func:`modelrepo.stats.t_interval`, the one shared with training's seeds); with one pair there
is no interval and no claim. Throughput ratios and percentile ratios (per-window p50, p99) use
the same estimator; ``tests/test_decision.py`` checks its coverage on synthetic streams with a
known ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from modelrepo.stats import CONFIDENCE, t_interval


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval (NaN bounds with a single value).

    For a ratio, ``mean`` is the geometric mean of the paired ratios, ``n`` the number of pairs
    and ``log_sd`` the sample standard deviation of their logarithms: what the stopping rule
    (:mod:`loadtests.decision`) needs to say how many more pairs would decide.
    """

    mean: float
    low: float
    high: float
    n: int = 0
    log_sd: float = math.nan
    confidence: float = CONFIDENCE

    def excludes(self, value: float) -> bool:
        """Whether the whole interval lies on one side of ``value``."""
        return not math.isnan(self.low) and (self.low > value or self.high < value)

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a value (always, when either has no bounds)."""
        if math.isnan(self.low) or math.isnan(other.low):
            return True
        return self.low <= other.high and other.low <= self.high

    @property
    def half_width(self) -> float:
        """The relative half-width of a ratio's interval: 0.05 for mean x/÷ 1.05 (NaN when
        there is no interval)."""
        if math.isnan(self.low) or self.low <= 0:
            return math.nan
        return math.sqrt(self.high / self.low) - 1

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.2f}x"
        return f"{self.mean:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and two-sided t-interval of ``values`` (independent windows or runs)."""
    found = t_interval([float(v) for v in values], confidence)
    return Interval(found.mean, found.low, found.high, len(values), confidence=confidence)


def ratio_interval(
    baseline: Sequence[float], candidate: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """Candidate over baseline, paired window by window: the geometric mean of the ratios and
    its t-interval in log space. Pairs where either value is missing (NaN, or not positive:
    a window without a success) are left out."""
    logs = [
        math.log(y / x)
        for x, y in zip(baseline, candidate, strict=True)
        if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)
    ]
    if not logs:
        return Interval(math.nan, math.nan, math.nan, 0, confidence=confidence)
    found = t_interval(logs, confidence)
    sd = math.nan
    if len(logs) > 1:
        mean = sum(logs) / len(logs)
        sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (len(logs) - 1))
    return Interval(math.exp(found.mean), math.exp(found.low), math.exp(found.high), len(logs), sd)
