"""Student t-intervals and rank correlations without scipy: how sure a mean over a few
independent repeats is, and how two orderings agree.

Training (seed-to-seed accuracy) and the load tests (repeats of a step) both report a mean with
its two-sided t-interval. scipy is only in the load-test extra, not in the serving image, so the
t quantile is computed here exactly: the Student t tail is a regularized incomplete beta function
(evaluated by its continued fraction, Lentz's method) and the quantile is found by bisection on
it, to about machine precision. An infinite ``df`` gives the normal quantile.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
_EPS = 1e-16
_TINY = 1e-300
_MAX_TERMS = 10_000


@dataclass(frozen=True)
class MeanInterval:
    """A mean with its two-sided confidence interval (NaN bounds with fewer than two values)."""

    mean: float
    low: float
    high: float


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _MAX_TERMS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= c * d
        if abs(c * d - 1.0) < _EPS:
            return result
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast for x < (a + 1) / (a + b + 2); beyond, use the symmetry.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom, for t >= 0."""
    return 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided critical value: P(|T| <= t) = ``confidence`` for ``df`` degrees of freedom.

    ``t_quantile(df, 0.95)`` is scipy's ``t.ppf(0.975, df)``; ``df=math.inf`` gives the normal
    quantile (1.959964 at 95 %). NaN when ``df < 1`` (no interval from a single value).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if math.isnan(df) or df < 1:
        return math.nan
    tail = (1.0 - confidence) / 2.0
    if math.isinf(df):
        return statistics.NormalDist().inv_cdf(1.0 - tail)
    low, high = 0.0, 1.0
    while t_tail(high, df) > tail:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        if t_tail(middle, df) > tail:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> MeanInterval:
    """Mean of ``values`` (independent repeats) and its two-sided t-interval (NaN bounds for
    one value, or when one is infinite: a failed step's p99)."""
    if not values:
        raise ValueError("no values to average")
    mean = statistics.fmean(values)
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return MeanInterval(mean, math.nan, math.nan)  # one value, or an infinite one: no spread
    half = t_quantile(len(values) - 1, confidence) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return MeanInterval(mean, mean - half, mean + half)


@dataclass(frozen=True)
class Correlation:
    """A rank correlation over ``n`` pairs with its two-sided confidence interval (NaN bounds
    when ``n`` < 4 or the correlation is ±1)."""

    rho: float
    low: float
    high: float
    n: int


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of ``values``, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Correlation:
    """Spearman's rank correlation of ``x`` and ``y`` (Pearson's on average ranks, so ties are
    handled as scipy's ``spearmanr`` does) with a Fisher-z interval using Bonett and Wright's
    (2000) standard error, sqrt((1 + rho²/2) / (n - 3)): wider than Pearson's 1/sqrt(n - 3),
    as a rank correlation's sampling spread is."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} and {len(y)})")
    n = len(x)
    if n < 2:
        return Correlation(math.nan, math.nan, math.nan, n)
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return Correlation(math.nan, math.nan, math.nan, n)
    rho = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    if n < 4 or abs(rho) == 1.0:
        return Correlation(rho, math.nan, math.nan, n)
    z = math.atanh(rho)
    half = statistics.NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(
        (1 + rho * rho / 2) / (n - 3)
    )
    return Correlation(rho, math.tanh(z - half), math.tanh(z + half), n)
