"""The decision a comparison reaches, and when to stop measuring it.

A load test compares targets by paired ratios over short windows (:mod:`loadtests.stats`).
Each headline ratio ends in one of four verdicts (:class:`Decision`):

- **faster** / **slower**: the ratio's interval lies above / below 1;
- **equivalent**: a two one-sided test (TOST): the interval at twice the error (90 % for a 95 %
  interval) lies within ±``precision`` (1/(1+p) to 1+p), so any difference is within the margin;
- **inconclusive**: neither.

The sequential rule (:func:`settled`) has two stopping widths for each ratio. It keeps adding
window pairs until the interval's half-width is within ``precision``; if the ratio is decided
then, it stops. Otherwise it goes on to half the width (where equal models pass the TOST) and
stops there, decided or not. The intervals of a sequential run are at
:data:`SEQUENTIAL_CONFIDENCE` (97.5 %: the 5 % error split between the two widths, Bonferroni),
and a minimum of :data:`MIN_PAIRS` keeps an early, luckily narrow interval from stopping the run.
The rule is checked at the first run and then at each new estimate of the pairs needed
(:func:`pairs_needed`), which takes more than two checks when the spread changes (up to 5-7 in
simulation), so the 95 % over the whole sequence is not guaranteed by the split alone:
``tests/test_decision.py`` measures the coverage on drifting synthetic streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from loadtests.stats import Interval
from modelrepo.stats import CONFIDENCE, t_quantile

# The default --precision: the interval of each headline ratio within ±5 %.
PRECISION = 0.05
# Fewer pairs than this never stop a comparison.
MIN_PAIRS = 8
# The sequential rule's stopping widths per ratio (±precision, half of it), and the confidence
# of each interval: the 5 % error split between them (Bonferroni).
LOOKS = 2
SEQUENTIAL_CONFIDENCE = 1 - (1 - CONFIDENCE) / LOOKS


class Decision(StrEnum):
    """Where a comparison stands; the value is how the report writes it."""

    FASTER = "faster"
    SLOWER = "slower"
    EQUIVALENT = "equivalent"
    INCONCLUSIVE = "inconclusive"


def tost_interval(interval: Interval) -> tuple[float, float]:
    """The TOST's interval of the same ratio (90 % for a 95 % one: each side's test at the
    interval's error), from its mean, n and log sd."""
    if interval.n < 2 or math.isnan(interval.log_sd):
        return math.nan, math.nan
    level = 1 - 2 * (1 - interval.confidence)
    half = t_quantile(interval.n - 1, level) * interval.log_sd / math.sqrt(interval.n)
    centre = math.log(interval.mean)
    return math.exp(centre - half), math.exp(centre + half)


def decide(
    interval: Interval, precision: float = PRECISION, higher_is_better: bool = True
) -> Decision:
    """faster, slower, equivalent (TOST within ±``precision``) or inconclusive.

    ``interval`` is a candidate/baseline ratio; for a throughput higher is better (faster), for
    a latency ratio (``higher_is_better`` False) lower is.
    """
    if interval.n < 2 or math.isnan(interval.low):
        return Decision.INCONCLUSIVE
    if interval.excludes(1.0):
        above = interval.low > 1.0
        return Decision.FASTER if above == higher_is_better else Decision.SLOWER
    low, high = tost_interval(interval)
    if precision > 0 and low >= 1 / (1 + precision) and high <= 1 + precision:
        return Decision.EQUIVALENT
    return Decision.INCONCLUSIVE


def settled(interval: Interval, precision: float = PRECISION) -> bool:
    """Whether measuring this ratio can stop: enough pairs, and decided at the precision asked
    (first look) or at half of it (second look, decided or not)."""
    if interval.n < MIN_PAIRS or math.isnan(interval.half_width):
        return False
    if interval.half_width <= precision / 2:
        return True
    return interval.half_width <= precision and decide(interval, precision) is not (
        Decision.INCONCLUSIVE
    )


def pairs_needed(interval: Interval, precision: float = PRECISION) -> int:
    """How many pairs in all would settle this ratio, if the spread stays as measured.

    The half-width shrinks as 1/sqrt(n). At the precision asked, a ratio further from 1 than
    the precision is decided (faster/slower), and one very near 1 passes the TOST; any other
    needs the second look, at half the width. The t quantile has the degrees of freedom of the
    spread's estimate (as in Stein's two-stage procedure).
    """
    if interval.n < 2 or math.isnan(interval.log_sd) or interval.log_sd == 0:
        return max(MIN_PAIRS, interval.n + 1)
    effect = abs(math.log(interval.mean))
    margin = math.log(1 + precision)
    t = t_quantile(interval.n - 1, interval.confidence)
    # At half-width = margin, the TOST's narrower interval (twice the error) fits within the
    # margin only for an effect under 1 - t_tost / t of it: 0.125 at large n, more with fewer
    # pairs (0.17 at 8).
    band = 1 - t_quantile(interval.n - 1, 1 - 2 * (1 - interval.confidence)) / t
    first_look = effect > margin or effect < band * margin
    target = margin if first_look else margin / 2
    needed = math.ceil((t * interval.log_sd / target) ** 2)
    return max(needed, MIN_PAIRS, interval.n)


@dataclass(frozen=True)
class Stop:
    """Why one concurrency level's measurement ended, and what it cost."""

    concurrency: int
    pairs: int  # windows per target
    seconds: float
    reason: str  # PRECISION_REACHED, BUDGET_SPENT, UNMEASURABLE or FIXED (below)
    needed_pairs: int = 0  # when the budget was spent: pairs that would settle every ratio

    @property
    def settled(self) -> bool:
        """Whether every headline ratio reached a decision at the precision asked."""
        return self.reason not in (BUDGET_SPENT, UNMEASURABLE)


PRECISION_REACHED = "precision reached"
BUDGET_SPENT = "budget spent"
# A comparison left with fewer than two valid pairs after the first look: a model failed (nearly)
# every window, and more windows would only repeat that.
UNMEASURABLE = "a model failed its windows"
FIXED = "fixed windows"
