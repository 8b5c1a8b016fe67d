"""Pareto ranks and the Spearman correlation with its interval, against known values."""

from __future__ import annotations

import math

import pytest

from loadtests.pareto import dominates, front, pareto_ranks
from modelrepo.stats import average_ranks, spearman


def test_dominates_needs_one_strict_improvement() -> None:
    assert dominates((2, 1), (1, 1))
    assert not dominates((1, 1), (1, 1))
    assert not dominates((2, 0), (1, 1))


def test_pareto_ranks_peel_fronts() -> None:
    # accuracy up, latency down (negated): a is best in accuracy, c fastest, b dominated by a
    points = [(0.99, -2.0), (0.98, -2.5), (0.97, -1.0), (0.96, -3.0), (0.99, -2.0)]
    assert pareto_ranks(points) == [1, 2, 1, 3, 1]
    assert front(points) == [0, 2, 4]


def test_nan_points_rank_last() -> None:
    assert pareto_ranks([(1.0, 1.0), (math.nan, 5.0), (0.5, 0.5)]) == [1, 3, 2]
    # Nothing comparable (every model failed): none is on the front.
    assert pareto_ranks([(0.99, math.nan), (0.98, math.nan)]) == [2, 2]
    assert front([(0.99, math.nan), (0.98, math.nan)]) == []


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]


def test_spearman_matches_scipy_and_the_bonett_wright_interval() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0, 9.0, 10.0, 8.0]
    found = spearman(x, y)
    # scipy.stats.spearmanr(x, y).statistic, and by hand: 1 - 6 * 16 / (10 * 99)
    assert found.rho == pytest.approx(0.903030303, abs=1e-9)
    z, se = math.atanh(found.rho), math.sqrt((1 + found.rho**2 / 2) / 7)
    assert found.low == pytest.approx(math.tanh(z - 1.959963985 * se), abs=1e-9)
    assert found.high == pytest.approx(math.tanh(z + 1.959963985 * se), abs=1e-9)
    assert (round(found.low, 4), round(found.high, 4)) == (0.5437, 0.9826)
    assert found.n == 10


def test_spearman_with_ties_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    x = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    y = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4]
    assert spearman(x, y).rho == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_edge_cases() -> None:
    perfect = spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert perfect.rho == 1.0 and math.isnan(perfect.low)
    assert math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]).rho)
    with pytest.raises(ValueError):
        spearman([1, 2], [1])
