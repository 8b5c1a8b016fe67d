"""The regression gate: did a run get worse than an earlier one, beyond noise and a threshold?

``mnist-serve history check [RUN] [--against RUN] [--max-regression 5%]`` judges the history's
comparison of two runs (:func:`loadtests.analysis.compare_runs`, the same one ``history
compare`` shows): every figure measured in both, matched by target (variant@runtime and
protocol) and level:

- each variant's **speedup** over the first (throughput ratio, paired within each run),
- each target's closed-loop **throughput** and **p99** latency,
- each model's open-loop **highest rate within the SLO** (when both runs searched it).

The rule. For each figure the change is the ratio new/old of its means over repeats, with an
interval: Welch's t-interval between the two runs' repeats, on the log scale
(:func:`loadtests.stats.change_interval`). A figure **regressed** when that whole interval lies
beyond the threshold on the bad side: for a throughput, speedup or rate, its upper bound is
below ``1 - threshold``; for a p99, its lower bound is above ``1 + threshold``. A run judges
many figures at once (3 levels x 2 models x 2 measures is already 12), and at 95 % each, noise
would fail one of them far more often than 2.5 % of the time. So the intervals are widened for
their number (Bonferroni: each at ``1 - 5 % / m`` for ``m`` figures with repeats; the table
still calls them 95 % intervals, which they are for the run as a whole). The gate then fails
only when it is 95 % sure, over all the figures together, that one got worse by more than the
threshold: noise alone fails a run at most 2.5 % of the time, and a real change smaller than
the threshold does not fail it. A figure whose interval excludes "no change" but not the
threshold is reported as *worse* (or *better*) and does not fail the gate. With one repeat
there is no interval, and the figure is not judged. The open-loop rate has no repeats: its
interval is the two searches' brackets (highest rate met, lowest missed), i.e. the search's
resolution.

Outcomes (:class:`Gate`): :attr:`Gate.failed` when any figure regressed (exit 1), passed
otherwise (exit 0); :class:`NothingToCompare` when there is no earlier run, no figure in
common, or nothing that could be judged (exit 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from loadtests import changes, history
from loadtests.analysis import compare_runs
from loadtests.stats import CONFIDENCE, Interval, change_interval

DEFAULT_THRESHOLD = 0.05


class NothingToCompare(Exception):
    """No earlier run, no figure in common, or none with an interval: the gate cannot judge."""


class Metric(StrEnum):
    """A figure the gate judges."""

    SPEEDUP = "speedup"
    THROUGHPUT = "throughput"
    P99 = "p99"
    MAX_RATE = "max rate within SLO"

    @property
    def higher_is_better(self) -> bool:
        """Throughput, speedup and rate should not drop; a p99 should not rise."""
        return self is not Metric.P99

    def shown(self, value: float) -> str:
        """A value of this figure for people."""
        if self is Metric.SPEEDUP:
            return f"{value:.2f}x"
        if self is Metric.P99:
            return f"{value:.2f} ms"
        return f"{value:,.0f}/s"


class Verdict(StrEnum):
    """What the gate makes of one figure's change."""

    REGRESSED = "regressed"  # surely (see the rule) worse by more than the threshold: fails
    WORSE = "worse, within threshold"  # surely worse, not surely by more than the threshold
    BETTER = "better"
    STEADY = "steady"  # the interval includes no change
    NOT_JUDGED = "not judged"  # no interval (one repeat, or no positive values)


@dataclass(frozen=True)
class Judged:
    """One figure in the two runs and the gate's verdict on it."""

    metric: Metric
    subject: str  # the target, "candidate over baseline", or the open-loop model
    level: int | None  # clients (None: open loop)
    before: float  # mean over repeats (the rate: the highest that met the SLO)
    after: float
    change: Interval  # after over before, with its interval (95 % for all the figures together)
    verdict: Verdict

    @property
    def moved(self) -> bool:
        """Whether the interval excludes no change (either way)."""
        return self.verdict in (Verdict.REGRESSED, Verdict.WORSE, Verdict.BETTER)


def judge(metric: Metric, change: Interval, threshold: float) -> Verdict:
    """The rule (module docstring): regressed only when the whole interval of new/old lies
    beyond ``threshold`` on the bad side."""
    if math.isnan(change.low) or math.isnan(change.high):
        return Verdict.NOT_JUDGED
    if metric.higher_is_better:
        if change.high < 1 - threshold:
            return Verdict.REGRESSED
        worse, better = change.high < 1, change.low > 1
    else:
        if change.low > 1 + threshold:
            return Verdict.REGRESSED
        worse, better = change.low > 1, change.high < 1
    return Verdict.WORSE if worse else Verdict.BETTER if better else Verdict.STEADY


def judge_change(
    change: changes.Change, metric: Metric, threshold: float, confidence: float = CONFIDENCE
) -> Judged:
    """A closed-loop figure (throughput, p99 or speedup) of one target at one level; not judged
    when a side has no values (a speedup whose every pair had a failed window: the target's own
    throughput then carries the failure)."""
    if not change.before_values or not change.after_values:
        nothing = Interval(math.nan, math.nan, math.nan)
        return Judged(
            metric, change.name, change.level, change.before.mean, change.after.mean, nothing,
            Verdict.NOT_JUDGED,
        )  # fmt: skip
    interval = change_interval(change.before_values, change.after_values, confidence)
    return Judged(
        metric,
        change.name,
        change.level,
        change.before.mean,
        change.after.mean,
        interval,
        judge(metric, interval, threshold),
    )


def family_confidence(figures: int, confidence: float = CONFIDENCE) -> float:
    """Each interval's confidence for ``figures`` judged at once to hold ``confidence`` over
    all of them (Bonferroni: it assumes nothing about how the figures move together)."""
    return 1 - (1 - confidence) / max(figures, 1)


def judge_rate(rate: changes.RateChange, threshold: float) -> Judged:
    """An open-loop model's highest rate within the SLO: the interval of new/old runs from the
    least to the most favourable ends of the two searches' brackets."""
    (b_low, b_high), (a_low, a_high) = rate.before, rate.after
    if b_low <= 0:  # nothing met the SLO before: nothing to lose
        interval = Interval(math.nan, math.nan, math.nan)
    else:
        low = a_low / b_high if b_high is not None else 0.0
        high = a_high / b_low if a_high is not None else math.inf
        interval = Interval(a_low / b_low, low, high)
    verdict = judge(Metric.MAX_RATE, interval, threshold)
    if verdict is Verdict.STEADY and rate.moved:  # brackets touching at one rate: it moved
        verdict = Verdict.WORSE if rate.ratio < 1 else Verdict.BETTER
    return Judged(
        Metric.MAX_RATE, f"{rate.model} ({rate.slo})", None, b_low, a_low, interval, verdict
    )


@dataclass(frozen=True)
class Gate:
    """A run judged against an earlier one."""

    before: history.Run
    after: history.Run
    threshold: float
    judged: list[Judged]

    @property
    def regressions(self) -> list[Judged]:
        """The figures that fail the gate."""
        return [j for j in self.judged if j.verdict is Verdict.REGRESSED]

    @property
    def failed(self) -> bool:
        """Whether any figure regressed."""
        return bool(self.regressions)

    @property
    def moved(self) -> list[Judged]:
        """The figures whose interval excludes no change, worst first."""
        order = list(Verdict)
        return sorted((j for j in self.judged if j.moved), key=lambda j: order.index(j.verdict))

    def summary(self) -> str:
        """One line: what was judged and the outcome."""
        judged = [j for j in self.judged if j.verdict is not Verdict.NOT_JUDGED]
        skipped = len(self.judged) - len(judged)
        text = (
            f"run {self.after.id} against run {self.before.id}: {len(judged)} figures judged "
            f"at a {self.threshold:.0%} threshold, {len(self.moved)} moved beyond their interval "
            f"(95% for all together), {len(self.regressions)} regressed"
        )
        if skipped:
            text += (
                f" ({skipped} not judged: no interval, from one repeat, or a model that "
                "failed its windows)"
            )
        return text


def parse_threshold(text: str) -> float:
    """'5%' or '0.05' -> 0.05; ValueError naming the expected form otherwise."""
    cleaned = text.strip()
    try:
        value = float(cleaned.removesuffix("%")) / (100 if cleaned.endswith("%") else 1)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise ValueError(f"--max-regression {text!r}: give a fraction below 1, as 5% or 0.05")
    return value


def pick_runs(path: Path, run: str | None, against: str | None) -> tuple[history.Run, history.Run]:
    """(earlier, later): ``run`` (default the latest) and ``against`` (default the latest
    earlier run with the same plan, CPU and service options, measured the same way). KeyError
    for an unknown reference, ValueError for an ``against`` not before ``run`` (usage errors);
    NothingToCompare when there is no earlier run."""
    if not path.is_file() or not (stored := history.runs(path)):
        raise NothingToCompare(f"no history at {path}: run `mnist-serve loadtest` first")
    after = history.get(path, run) if run is not None else stored[-1]
    if against is not None:
        before = history.get(path, against)
        if before.id >= after.id:  # itself always passes; a later one reads the change backwards
            raise ValueError(
                f"--against must name a run before run {after.id}; run {before.id} is "
                + ("the same run" if before.id == after.id else "later")
            )
        return before, after
    # Earlier, the same plan and CPU, and measured the same way: every way ``after`` was if
    # one such run exists, else at least one (an open-loop-only run of the same plan shares no
    # figure with a closed-loop one, and must not hide the run before it).
    measured = history.kinds(path)
    wanted = measured.get(after.id, set())
    same = [r for r in stored if r.id < after.id and r.comparable == after.comparable]
    earlier = [r for r in same if wanted <= measured.get(r.id, set())] or [
        r for r in same if wanted & measured.get(r.id, set())
    ]
    if not earlier:
        raise NothingToCompare(
            f"no run before run {after.id} with the same plan (models, runtimes, protocols, "
            f"levels, payloads) on the same CPU, against a service started with the same "
            f"options (and, with --tuned, the same tuned configurations; with --url, one "
            f"reporting the same engine and batching), in {path}: nothing to compare it with"
        )
    return earlier[-1], after


def check(path: Path, before: history.Run, after: history.Run, threshold: float) -> Gate:
    """``after`` judged against ``before``; NothingToCompare when no figure can be judged."""
    compared = compare_runs(path, before, after)
    changes = [
        *((c, Metric.SPEEDUP) for c in compared.speedups),
        *((c, Metric.THROUGHPUT) for c in compared.throughputs),
        *((c, Metric.P99) for c in compared.p99s),
    ]
    confidence = family_confidence(sum(1 for c, _ in changes if c.repeated))
    judged = [
        *(judge_change(c, metric, threshold, confidence) for c, metric in changes),
        *(judge_rate(r, threshold) for r in compared.rates),
    ]
    if not judged:
        raise NothingToCompare(
            f"run {after.id} and run {before.id} have no step (target and level) and no "
            "open-loop model in common"
        )
    if all(j.verdict is Verdict.NOT_JUDGED for j in judged):
        raise NothingToCompare(
            f"run {after.id} against run {before.id}: no figure has an interval (one repeat "
            "per level): run the load tests with --repeats 2 or more"
        )
    return Gate(before, after, threshold, judged)
