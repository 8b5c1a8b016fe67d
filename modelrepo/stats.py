"""Student t-intervals without scipy: how sure a mean over a few independent repeats is.

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
    """Mean of ``values`` (independent repeats) and its two-sided t-interval."""
    if not values:
        raise ValueError("no values to average")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return MeanInterval(mean, math.nan, math.nan)
    half = t_quantile(len(values) - 1, confidence) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return MeanInterval(mean, mean - half, mean + half)
