"""What a load test's numbers say: levels, speedups, drift, and the comparison of two runs.

Percentiles are computed from the exact per-request samples (not Locust's rounded statistics),
pooled over the repeats of a step. Speedups pair two targets repeat by repeat (they ran back to
back under the same conditions) and carry a 95 % t-interval over the repeats. Along each axis
swept (variant, runtime, protocol) every other value is compared with the first one named.

Two runs compare through the history (:func:`compare_runs`): the report sets a run against the
previous comparable one (:func:`against_previous`), ``mnist-serve history compare`` any two.
Rendering (tables, plots, text files) is elsewhere: :mod:`loadtests.report`,
:mod:`loadtests.plots`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import product
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from loadtests import changes, history
from loadtests.decision import SEQUENTIAL_CONFIDENCE
from loadtests.labels import Label
from loadtests.openloop_results import OPENLOOP_FILE, OpenLoopRecord
from loadtests.results import LoadPlan, Percentiles, RunRecord
from loadtests.stats import Interval, ratio_interval
from modelrepo.stats import CONFIDENCE

# A repeat whose throughput is further than this from the median of its level's repeats is
# flagged as drift: the run was noisy there.
DRIFT = 0.2


@dataclass
class Level:
    """One target at one concurrency, all repeats together."""

    model: Label
    concurrency: int
    latency: np.ndarray  # successful requests' exact latencies, pooled over repeats, ms
    throughput: list[float]  # per repeat, requests/s
    p50: list[float]  # per repeat
    p99: list[float]  # per repeat
    errors: int
    requests: int
    accuracy: float
    queue_ms: float
    model_ms: float
    generator_busy: float
    failed: int = 0  # repeats without a single successful request
    cpu_steal: float | None = None  # the most the hypervisor took in a repeat (steal.py)

    @property
    def percentiles(self) -> Percentiles:
        """Latency percentiles of the pooled samples."""
        return Percentiles.of(self.latency)


Levels = dict[tuple[Label, int], Level]


def load_levels(out_dir: Path) -> tuple[RunRecord, Levels]:
    """The results record and, per (target, concurrency), the pooled measurements."""
    record = RunRecord.load(out_dir)
    levels: Levels = {}
    served: dict[tuple[Label, int], list[tuple[float, float, float]]] = {}
    for step in sorted(record.steps, key=lambda s: s.repeat):
        with np.load(out_dir / step.samples) as data:
            ok = data["ok"].astype(bool)
            latency = data["latency_ms"][ok]
        key = (step.target, step.concurrency)
        level = levels.setdefault(
            key, Level(key[0], key[1], np.empty(0), [], [], [], 0, 0, 0.0, 0.0, 0.0, 0.0)
        )
        level.latency = np.concatenate([level.latency, latency])
        level.throughput.append(step.throughput_rps)
        level.p50.append(step.latency_ms.p50)
        level.p99.append(step.latency_ms.p99)
        level.errors += step.errors
        level.requests += step.requests
        figures = (step.accuracy, step.server_queue_ms_p50, step.server_model_ms_p50)
        served.setdefault(key, []).append(figures)
        level.generator_busy = max(level.generator_busy, step.generator_busy)
        if step.cpu_steal is not None:
            level.cpu_steal = max(level.cpu_steal or 0.0, step.cpu_steal)
        level.failed += step.failed
    # Means over the repeats that have each figure: a failed repeat (or a server without
    # Server-Timing) has none, and must not turn the level's mean into NaN.
    for key, rows in served.items():
        level = levels[key]
        level.accuracy, level.queue_ms, level.model_ms = (
            finite_mean(c) for c in zip(*rows, strict=True)
        )
    return record, levels


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values, NaN when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def load_openloop(out_dir: Path) -> OpenLoopRecord | None:
    """The open-loop sweep run into the same folder, if there is one."""
    return OpenLoopRecord.load(out_dir) if (out_dir / OPENLOOP_FILE).is_file() else None


class Axis(StrEnum):
    """What a comparison varies, the other two held fixed."""

    VARIANT = "variant"
    RUNTIME = "runtime"
    PROTOCOL = "protocol"


@dataclass(frozen=True)
class Speedup:
    """How a candidate target compares with a baseline at one concurrency (>1 = faster)."""

    kind: Axis
    candidate: Label
    baseline: Label
    concurrency: int
    throughput: Interval
    p50: Interval
    p99: Interval
    p50_diff_ms: float


def comparisons(plan: LoadPlan) -> list[tuple[Axis, Label, Label]]:
    """(axis, baseline, candidate) targets along each axis swept.

    Along each axis (variant, runtime, protocol) with several values, every other value is
    compared with the first one named, the other two axes held fixed.
    """
    axes: dict[Axis, tuple[Any, ...]] = {
        Axis.VARIANT: plan.variants,
        Axis.RUNTIME: plan.runtimes or (None,),
        Axis.PROTOCOL: plan.protocols,
    }

    def at(parts: dict[Axis, Any]) -> Label:
        return plan.label(parts[Axis.VARIANT], parts[Axis.RUNTIME], parts[Axis.PROTOCOL])

    pairs = []
    for axis, values in axes.items():
        others = [a for a in axes if a != axis]
        for combo in product(*(axes[a] for a in others)):
            fixed = dict(zip(others, combo, strict=True))
            labels = [at({**fixed, axis: value}) for value in values]
            pairs += [(axis, labels[0], label) for label in labels[1:]]
    return pairs


def variant_pairs(plan: LoadPlan) -> list[tuple[Label, Label]]:
    """(baseline, candidate) of each variant against the first, the rest held fixed."""
    return [(b, c) for axis, b, c in comparisons(plan) if axis is Axis.VARIANT]


def speedups(record: RunRecord, levels: Levels) -> list[Speedup]:
    """Per level and compared pair, the candidate against the baseline, window by window (at
    the sequential rule's confidence when the run used it)."""
    confidence = SEQUENTIAL_CONFIDENCE if record.plan.precision > 0 else CONFIDENCE
    out = []
    for kind, baseline, candidate in comparisons(record.plan):
        for level in record.plan.concurrency:
            a, b = levels[(baseline, level)], levels[(candidate, level)]
            if a.failed or b.failed:
                continue  # no ratio with a failed step: the report lists it as failed
            out.append(
                Speedup(
                    kind,
                    candidate,
                    baseline,
                    level,
                    ratio_interval(a.throughput, b.throughput, confidence),
                    ratio_interval(b.p50, a.p50, confidence),  # latency: lower is faster
                    ratio_interval(b.p99, a.p99, confidence),
                    float(np.mean(b.p50) - np.mean(a.p50)),
                )
            )
    return out


class Drift(NamedTuple):
    """A level's spread between repeats: max/min - 1 of their throughput, and the repeats
    (from 1) over :data:`DRIFT` off the median."""

    target: Label
    level: int
    spread: float
    flagged: list[int]


def drift(levels: Levels) -> list[Drift]:
    """Per level with several repeats, the spread of its repeats and those flagged."""
    out = []
    for (target, level), lv in levels.items():
        median = float(np.median(lv.throughput)) if lv.throughput else 0.0
        if len(lv.throughput) < 2 or median <= 0:  # one repeat, or mostly failed: no drift
            continue
        flagged = [i + 1 for i, t in enumerate(lv.throughput) if abs(t / median - 1) > DRIFT]
        # A failed repeat (0 req/s) among served ones: the spread is unbounded.
        spread = max(lv.throughput) / min(lv.throughput) - 1 if min(lv.throughput) > 0 else math.inf
        out.append(Drift(target, level, spread, flagged))
    return out


def noise_line(levels: Levels) -> str | None:
    """A verdict line when repeats drifted, with what to change; None for a steady run."""
    noisy = [d for d in drift(levels) if d.flagged]
    if not noisy:
        return None
    where = "; ".join(
        f"{d.target} at {d.level} clients (repeat {', '.join(map(str, d.flagged))})"
        for d in noisy[:4]
    )
    more = f" and {len(noisy) - 4} more" if len(noisy) > 4 else ""
    return (
        f"The run was noisy: {len(noisy)} level(s) had a repeat more than {DRIFT:.0%} off its "
        f"siblings' median ({where}{more}). Treat their intervals with care; use longer steps "
        "(--duration), more repeats (--repeats) or a quieter machine."
    )


@dataclass(frozen=True)
class RunComparison:
    """Two stored runs side by side: the speedup of each variant over the first per level, each
    target's throughput and p99 per level (95 % intervals over repeats), and the open-loop
    rates."""

    before: history.Run
    after: history.Run
    speedups: list[changes.Change]
    throughputs: list[changes.Change]
    rates: list[changes.RateChange]
    p99s: list[changes.Change] = field(default_factory=list)  # p99 latency, ms, per level

    @property
    def comparable(self) -> bool:
        """Whether the runs tested the same models, levels and payloads on the same CPU,
        against services started with the same options."""
        return self.before.comparable == self.after.comparable

    @property
    def name(self) -> str:
        """The earlier run, for people: ``run 3 (demo-2026..., 2026-11-24T...)``."""
        run = self.before
        return f"run {run.id} ({Path(run.folder).name}, {run.created_at})"

    def speedup_lines(self) -> list[str]:
        """For a verdict: did the speedup move beyond the intervals, and where?"""
        shifted = [c for c in self.speedups if c.moved]
        if shifted:
            moves = "; ".join(
                f"{c.name} at {c.level} clients {c.before.mean:.2f}x -> {c.after.mean:.2f}x"
                for c in shifted
            )
            return [f"Against {self.name}, the speedup moved: {moves}."]
        if self.speedups:
            return [
                f"Against {self.name}, the speedup did not move beyond run-to-run noise at any "
                "level (95% intervals overlap)."
            ]
        return []


def compare_runs(path: Path, before: history.Run, after: history.Run) -> RunComparison:
    """``after`` against ``before``, both read from the history at ``path``."""
    return RunComparison(
        before,
        after,
        changes.compare_speedups(path, before, after, variant_pairs(after.plan)),
        changes.compare(path, before, after),
        changes.compare_rates(path, before, after),
        changes.compare(path, before, after, history.Figure.P99),
    )


def against_previous(out_dir: Path, record: RunRecord) -> RunComparison | None:
    """The run in ``out_dir`` against the previous comparable run, if the history has one."""
    path = history.locate(out_dir)
    before = history.previous_comparable(path, out_dir, record)
    if before is None:
        return None
    try:
        after = history.get(path, str(out_dir))
    except KeyError:
        return None
    return compare_runs(path, before, after)
