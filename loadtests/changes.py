"""Two runs of the history side by side: what moved between them.

:func:`compare` sets a figure of every target (throughput by default, or another
:class:`loadtests.history.Figure` such as the p99) level by level, each with its 95 % interval
over repeats; :func:`compare_speedups` does the same for the speedup of one model over another;
:func:`compare_rates` sets the open-loop searches' brackets side by side. The report shows them
(:mod:`loadtests.analysis`), and ``mnist-serve history check`` judges them as a regression gate
(:mod:`loadtests.gate`). Reading and writing the history is :mod:`loadtests.history`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loadtests import history
from loadtests.history import Figure, Run
from loadtests.labels import Label
from loadtests.stats import Interval, mean_interval, paired_ratios, ratio_interval


@dataclass(frozen=True)
class Change:
    """One figure (a target's throughput, or its speedup over a baseline) at one level in two
    runs, each with its 95 % interval over repeats."""

    target: Label
    level: int
    before: Interval
    after: Interval
    baseline: Label | None = None  # for a speedup: the target over this
    # The repeats' values behind the two intervals (for a test between the runs, loadtests.gate).
    before_values: tuple[float, ...] = ()
    after_values: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        """What changed, as displayed: the target, or "candidate over baseline"."""
        return f"{self.target} over {self.baseline}" if self.baseline else str(self.target)

    @property
    def ratio(self) -> float:
        """After over before."""
        return self.after.mean / self.before.mean if self.before.mean else float("nan")

    @property
    def repeated(self) -> bool:
        """Whether both runs repeated it (two values or more each): a test between them can
        judge it."""
        return len(self.before_values) > 1 and len(self.after_values) > 1

    @property
    def moved(self) -> bool:
        """Whether the intervals do not overlap (never, with one repeat: no interval)."""
        return not self.before.overlaps(self.after)


def compare(
    path: Path, before: Run, after: Run, figure: Figure = Figure.THROUGHPUT
) -> list[Change]:
    """``figure`` (throughput by default) of every (target, level) measured in both runs."""
    first, second = history.figures(path, before, figure), history.figures(path, after, figure)
    return [
        Change(
            key[0],
            key[1],
            mean_interval(first[key]),
            mean_interval(second[key]),
            before_values=tuple(first[key]),
            after_values=tuple(second[key]),
        )
        for key in sorted(first.keys() & second.keys(), key=lambda k: (k[1], str(k[0])))
    ]


def compare_speedups(
    path: Path, before: Run, after: Run, pairs: list[tuple[Label, Label]]
) -> list[Change]:
    """Each (baseline, candidate) pair's throughput ratio, per level, in both runs: did the
    speedup move?"""
    first, second = history.throughputs(path, before), history.throughputs(path, after)
    changes = []
    for baseline, candidate in pairs:
        for level in sorted({k[1] for k in first} & {k[1] for k in second}):
            keys = [(baseline, level), (candidate, level)]
            if not all(k in first and k in second for k in keys):
                continue
            changes.append(
                Change(
                    candidate,
                    level,
                    ratio_interval(first[keys[0]], first[keys[1]]),
                    ratio_interval(second[keys[0]], second[keys[1]]),
                    baseline,
                    tuple(paired_ratios(first[keys[0]], first[keys[1]])),
                    tuple(paired_ratios(second[keys[0]], second[keys[1]])),
                )
            )
    return changes


@dataclass(frozen=True)
class RateChange:
    """One model's highest rate within an SLO in two runs, each bracketed by the search between
    the highest rate that met it and the lowest that missed it (None: none missed)."""

    model: str
    slo: str
    before: tuple[float, float | None]
    after: tuple[float, float | None]

    @property
    def ratio(self) -> float:
        """After over before."""
        return self.after[0] / self.before[0] if self.before[0] else float("nan")

    @property
    def moved(self) -> bool:
        """Whether the two search brackets do not overlap."""
        (b_low, b_high), (a_low, a_high) = self.before, self.after
        return (b_high is not None and a_low >= b_high) or (a_high is not None and b_low >= a_high)


def compare_rates(path: Path, before: Run, after: Run) -> list[RateChange]:
    """The highest rate within the same SLO of every model searched in both runs."""
    first, second = history.rates(path, before.id), history.rates(path, after.id)
    return [RateChange(k[0], k[1], first[k], second[k]) for k in first if k in second]
