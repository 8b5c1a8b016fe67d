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

Two runs compare by :func:`change_interval`, Welch's interval of their ratio (the regression
gate's statistic).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from modelrepo.stats import CONFIDENCE, t_interval, t_quantile


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

    def inverse(self) -> Interval:
        """The same ratio the other way round (baseline over candidate): the same pairs,
        spread and confidence."""
        return Interval(
            1 / self.mean, 1 / self.high, 1 / self.low, self.n, self.log_sd, self.confidence
        )

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.2f}x"
        return f"{self.mean:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and two-sided t-interval of ``values`` (independent windows or runs)."""
    found = t_interval([float(v) for v in values], confidence)
    return Interval(found.mean, found.low, found.high, len(values), confidence=confidence)


def valid_pair(x: float, y: float) -> bool:
    """Whether a baseline and a candidate window can form a ratio: both finite and positive
    (a window without a success, or a missing one, cannot)."""
    return x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)


def paired_ratios(baseline: Sequence[float], candidate: Sequence[float]) -> list[float]:
    """Candidate over baseline, window by window; the pairs :func:`valid_pair` refuses are
    left out, as :func:`ratio_interval` leaves them out."""
    return [y / x for x, y in zip(baseline, candidate, strict=True) if valid_pair(x, y)]


def ratio_interval(
    baseline: Sequence[float], candidate: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """Candidate over baseline, paired window by window: the geometric mean of the ratios and
    its t-interval in log space. Pairs where either value is missing (NaN, or not positive:
    a window without a success) are left out."""
    logs = [math.log(ratio) for ratio in paired_ratios(baseline, candidate)]
    if not logs:
        return Interval(math.nan, math.nan, math.nan, 0, confidence=confidence)
    found = t_interval(logs, confidence)
    sd = math.nan
    if len(logs) > 1:
        mean = sum(logs) / len(logs)
        sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (len(logs) - 1))
    return Interval(
        math.exp(found.mean), math.exp(found.low), math.exp(found.high), len(logs), sd, confidence
    )


def change_interval(
    before: Sequence[float], after: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """How ``after`` compares with ``before``, two independent runs' repeats: the ratio of their
    means with a 95 % interval, Welch's on the log scale (the delta method: the log of the
    ratio has variance ``var_a / (n_a mean_a^2) + var_b / (n_b mean_b^2)``, with
    Welch-Satterthwaite degrees of freedom), so that the interval is multiplicative and never
    below 0. NaN bounds when either side has one repeat; NaN throughout without a positive
    mean before; 0 when every value after is 0."""
    if not before or not after:
        raise ValueError("no values to compare")
    mean_b, mean_a = statistics.fmean(before), statistics.fmean(after)
    n = min(len(before), len(after))
    if not (mean_b > 0 and math.isfinite(mean_b) and math.isfinite(mean_a) and mean_a >= 0):
        return Interval(math.nan, math.nan, math.nan, n, confidence=confidence)
    ratio = mean_a / mean_b
    if ratio == 0:  # nothing left of the figure: a collapse, not noise
        return Interval(0.0, 0.0, 0.0, n, confidence=confidence)
    if len(before) < 2 or len(after) < 2:
        return Interval(ratio, math.nan, math.nan, n, confidence=confidence)
    rel_b = statistics.variance(before) / (len(before) * mean_b**2)
    rel_a = statistics.variance(after) / (len(after) * mean_a**2)
    if rel_a + rel_b == 0:  # identical repeats on both sides: no spread to widen the ratio
        return Interval(ratio, ratio, ratio, n, confidence=confidence)
    df = (rel_a + rel_b) ** 2 / (rel_a**2 / (len(after) - 1) + rel_b**2 / (len(before) - 1))
    half = t_quantile(df, confidence) * math.sqrt(rel_a + rel_b)
    low, high = ratio * math.exp(-half), ratio * math.exp(half)
    return Interval(ratio, low, high, n, confidence=confidence)
