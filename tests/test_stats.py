"""modelrepo.stats' Student t quantiles, incomplete beta and intervals against scipy's."""

import math

import pytest
from scipy import stats

from modelrepo.stats import MeanInterval, incomplete_beta, t_interval, t_quantile

LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999)


@pytest.mark.parametrize("confidence", LEVELS)
def test_t_quantile_matches_scipy(confidence: float) -> None:
    for df in range(1, 201):
        expected = stats.t.ppf((1 + confidence) / 2, df)
        assert t_quantile(df, confidence) == pytest.approx(expected, rel=1e-6), df


def test_t_quantile_known_values_and_limits() -> None:
    assert t_quantile(1) == pytest.approx(12.706205, rel=1e-6)
    assert t_quantile(2) == pytest.approx(4.302653, rel=1e-6)
    assert t_quantile(math.inf) == pytest.approx(1.959964, rel=1e-6)
    assert t_quantile(1000.5, 0.99) == pytest.approx(stats.t.ppf(0.995, 1000.5), rel=1e-6)
    assert math.isnan(t_quantile(0))
    with pytest.raises(ValueError, match="confidence"):
        t_quantile(3, 1.0)


def test_incomplete_beta_matches_scipy() -> None:
    from scipy import special

    for a, b, x in [(0.5, 0.5, 0.3), (100.0, 0.5, 0.98), (2.0, 3.0, 0.9), (0.5, 100.0, 0.01)]:
        assert incomplete_beta(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10)


def test_t_interval_matches_scipy() -> None:
    values = [3.1, 2.9, 3.4, 3.0, 2.7]
    interval = t_interval(values, 0.9)
    low, high = stats.t.interval(
        0.9, len(values) - 1, loc=sum(values) / len(values), scale=stats.sem(values)
    )
    assert interval.mean == pytest.approx(3.02)
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-9)
    single = t_interval([4.0])
    assert single.mean == 4.0 and math.isnan(single.low) and math.isnan(single.high)
    assert isinstance(single, MeanInterval)
    with pytest.raises(ValueError):
        t_interval([])
