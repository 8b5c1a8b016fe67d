"""Measure one concurrency level until its comparisons are decided: the sequential, paired plan.

Every target of the level is driven in short windows (``--duration``), in alternating order
(A B C D, D C B A, ...), in as few Locust runs as possible (:mod:`loadtests.windows`). After the
first ``--repeats`` rounds, and after each further run, every headline ratio (each comparison
the report makes: candidate over baseline throughput, paired window by window) is checked
against the stopping rule of :mod:`loadtests.decision`; the level ends when all are settled or
when its share of ``--budget`` is spent. A plan without a precision (``--precision off``) runs
exactly ``--repeats`` rounds, like the old fixed repeats.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from loadtests.analysis import comparisons
from loadtests.decision import (
    BUDGET_SPENT,
    FIXED,
    MIN_PAIRS,
    PRECISION_REACHED,
    SEQUENTIAL_CONFIDENCE,
    UNMEASURABLE,
    Decision,
    Stop,
    decide,
    pairs_needed,
    settled,
)
from loadtests.labels import Label, Step
from loadtests.results import LoadPlan, StepResult
from loadtests.schedule import TAIL_S
from loadtests.stats import Interval, ratio_interval
from loadtests.windows import LOCUST_OVERHEAD_S

# Rounds per Locust run after the first: at most this many (more only if the estimate asks).
MAX_CHUNK_ROUNDS = 12
# Without a budget, a level stops after this many rounds whatever the intervals say.
MAX_ROUNDS = 200


@dataclass(frozen=True)
class Estimate:
    """A headline ratio as it stands: candidate over baseline throughput, paired by window."""

    baseline: Label
    candidate: Label
    concurrency: int
    throughput: Interval
    decision: Decision


RunWindows = Callable[[list[Step]], list[StepResult]]
OnCheck = Callable[[int, list[Estimate], Stop | None], None]


def rounds(targets: list[Label], level: int, first: int, count: int) -> list[Step]:
    """Rounds ``first`` .. ``first + count - 1`` of a level: every target once per round, in
    alternating order; the round number is each step's repeat (window) index."""
    steps = []
    for repeat in range(first, first + count):
        order = targets if repeat % 2 == 0 else list(reversed(targets))
        steps += [Step(target, level, repeat) for target in order]
    return steps


def estimates(plan: LoadPlan, level: int, results: list[StepResult]) -> list[Estimate]:
    """Every headline ratio of ``level`` from the windows measured so far."""
    by_target: dict[Label, dict[int, float]] = {}
    for result in results:
        if result.concurrency == level:
            by_target.setdefault(result.target, {})[result.repeat] = result.throughput_rps
    found = []
    for _, baseline, candidate in comparisons(plan):
        a, b = by_target.get(baseline, {}), by_target.get(candidate, {})
        common = sorted(set(a) & set(b))
        interval = ratio_interval(
            [a[r] for r in common], [b[r] for r in common], SEQUENTIAL_CONFIDENCE
        )
        found.append(
            Estimate(baseline, candidate, level, interval, decide(interval, plan.precision))
        )
    return found


def round_seconds(plan: LoadPlan) -> float:
    """One round: every target for one window."""
    return len(plan.targets()) * plan.duration_s


def run_seconds(plan: LoadPlan, count: int) -> float:
    """A Locust run of ``count`` rounds, start-up, warm-up and tail included."""
    return LOCUST_OVERHEAD_S + plan.warmup_s + count * round_seconds(plan) + TAIL_S


def run_level(
    plan: LoadPlan, level: int, run: RunWindows, on_check: OnCheck | None = None
) -> tuple[list[StepResult], Stop]:
    """Measure ``level`` until every headline ratio is settled or its budget is spent.

    The rule looks at the ratios only at planned points: after the first ``--repeats`` rounds
    (at least :data:`MIN_PAIRS`), then at the number of pairs the spread measured at the last
    look says will settle them (:func:`loadtests.decision.pairs_needed`), reached in Locust
    runs of at most :data:`MAX_CHUNK_ROUNDS` rounds. Looking only there, and not every time
    the interval happens to narrow, keeps a luckily small spread from stopping the level.
    """
    targets = plan.targets()
    started = time.monotonic()
    budget = plan.budget_s / len(plan.concurrency) if plan.budget_s > 0 else math.inf
    results: list[StepResult] = []
    done = 0
    planned = 0.0  # what the runs should take; the clock can say more

    def more(count: int) -> None:
        nonlocal done, planned
        while count > 0:
            chunk = min(count, MAX_CHUNK_ROUNDS) if done else count
            results.extend(run(rounds(targets, level, done, chunk)))
            done += chunk
            planned += run_seconds(plan, chunk)
            count -= chunk

    sequential = plan.precision > 0 and bool(comparisons(plan))
    more(max(plan.repeats, MIN_PAIRS) if sequential else plan.repeats)
    if not sequential:
        fixed = Stop(level, done, time.monotonic() - started, FIXED)
        if on_check:
            on_check(level, estimates(plan, level, results), fixed)
        return results, fixed
    while True:
        found = estimates(plan, level, results)
        # A ratio with fewer than two valid pairs (a model failed its windows) cannot be
        # settled by more windows: the others decide when to stop.
        live = [e for e in found if e.throughput.n >= 2]
        spent = max(time.monotonic() - started, planned)
        needed = max((pairs_needed(e.throughput, plan.precision) for e in live), default=done)
        stop: Stop | None = None
        if all(settled(e.throughput, plan.precision) for e in live):
            reason = PRECISION_REACHED if len(live) == len(found) else UNMEASURABLE
            stop = Stop(level, done, spent, reason)
        else:
            wanted = min(max(needed - done, 2), MAX_ROUNDS - done)
            affordable = affordable_rounds(plan, budget - spent, wanted)
            if affordable < 2 or done >= MAX_ROUNDS:
                stop = Stop(level, done, spent, BUDGET_SPENT, needed_pairs=needed)
        if on_check:
            on_check(level, found, stop)
        if stop is not None:
            return results, stop
        more(affordable)


def affordable_rounds(plan: LoadPlan, seconds: float, wanted: int) -> int:
    """How many of ``wanted`` rounds fit in ``seconds``, in runs of MAX_CHUNK_ROUNDS."""
    count = 0
    while count < wanted:
        step = min(MAX_CHUNK_ROUNDS, wanted - count)
        if run_seconds(plan, step) > seconds:
            while step > 0 and run_seconds(plan, step) > seconds:
                step -= 1
            return count + step
        seconds -= run_seconds(plan, step)
        count += step
    return count
