"""The one-screen answer a report and the demo open with, and the table of every comparison.

A user came to learn which model to deploy. The answer names it (the ``model@runtime`` with
the highest Poisson rate within the SLO when the run searched for one, else the highest
closed-loop throughput at the highest load), gives the effect size against the other variant on
the same runtime with its interval and decision (:mod:`loadtests.decision`), what it costs in
test accuracy, and what would change the answer: an accuracy trade-off, a level where the
decision flips, comparisons still undecided and the time that would decide them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from loadtests import steal
from loadtests.analysis import Axis, Levels, Speedup
from loadtests.claims import accuracy_difference
from loadtests.decision import (
    LOOKS,
    PRECISION,
    SEQUENTIAL_CONFIDENCE,
    Decision,
    Stop,
    decide,
    pairs_needed,
)
from loadtests.labels import Label
from loadtests.openloop_results import OpenLoopRecord
from loadtests.rate_claims import WHY_LOWER_BOUND, rate_figure
from loadtests.results import RunRecord
from loadtests.stats import Interval

COMPARISONS_HEADER = [
    "clients",
    "model",
    "vs",
    "throughput ratio [interval]",
    "±",
    "p50 speedup",
    "p99 speedup",
    "window pairs",
    "verdict",
]


def interval_note(record: RunRecord) -> str:
    """What the comparisons' intervals are."""
    if record.plan.precision > 0:
        return (
            f"Intervals: {SEQUENTIAL_CONFIDENCE:.1%}, the 5% error split between the "
            f"sequential rule's {LOOKS} stopping widths (Bonferroni); about 95% over the run in "
            "simulation; paired window by window. Verdicts: "
            f"faster/slower when the interval excludes 1, equivalent when a two one-sided test "
            f"puts the ratio within ±{record.plan.precision:.0%}."
        )
    return (
        "Intervals: 95%, paired window by window (fixed windows: --precision off). Verdicts: "
        f"faster/slower when the interval excludes 1, equivalent within ±{PRECISION:.0%} (TOST)."
    )


def precision_of(record: RunRecord) -> float:
    """The equivalence margin: the run's --precision, or the default for a fixed-window run."""
    return record.plan.precision or PRECISION


def comparison_rows(record: RunRecord, items: Sequence[Speedup]) -> list[list[str]]:
    """One row per comparison and level: ratios with intervals, the precision, the verdict."""
    margin = precision_of(record)
    rows = []
    for s in items:
        t = s.throughput
        width = "" if math.isnan(t.half_width) else f"{t.half_width:.1%}"
        rows.append(
            [
                str(s.concurrency),
                str(s.candidate),
                str(s.baseline),
                str(t),
                width,
                str(s.p50),
                str(s.p99),
                str(t.n),
                str(decide(t, margin)),
            ]
        )
    return rows


CHANGES = "What would change the answer"


@dataclass(frozen=True)
class Answer:
    """What to deploy, by how much, at what cost, and what would change it."""

    recommended: Label
    why: str
    effect: str
    cost: str
    changes: list[str]
    price: str = ""  # the cost per million inferences, with --price-per-hour

    def facts(self) -> list[tuple[str, str]]:
        """The block's labelled facts, in order (those given): for Markdown and HTML alike."""
        named = (
            ("Effect", self.effect),
            ("Cost in accuracy", self.cost),
            ("Cost to serve", self.price),
        )
        return [(name, value) for name, value in named if value]

    def lines(self) -> list[str]:
        """The block as Markdown lines."""
        out = [f"**Deploy {self.recommended}**: {self.why}.", ""]
        out += [f"- **{name}:** {value}" for name, value in self.facts()]
        if self.changes:
            out.append(f"- **{CHANGES}:**")
            out += [f"  - {change}" for change in self.changes]
        return out


def score(
    record: RunRecord, levels: Levels, openloop: OpenLoopRecord | None, label: Label
) -> tuple[float, float]:
    """How a target ranks: its highest rate within the SLO (0 without an open loop, or one
    whose client kept up with no calibration rate), then its mean closed-loop throughput at
    the highest level."""
    top = max(record.plan.concurrency)
    level = levels.get((label, top))
    throughput = (
        float(sum(level.throughput) / len(level.throughput)) if level and level.throughput else 0.0
    )
    rate = 0.0
    if openloop is not None and measurable(openloop):
        rate = openloop.max_rate.get(str(label.model), 0.0)
    return rate, throughput


def unseparated(openloop: OpenLoopRecord, best: Label, others: Sequence[Label]) -> list[Label]:
    """The ``others`` the open loop did not separate ``best`` from
    (:meth:`OpenLoopRecord.ahead`)."""
    return [o for o in others if not openloop.ahead(str(best.model), str(o.model))]


def measurable(openloop: OpenLoopRecord | None) -> bool:
    """Whether an open loop was run and its rates can rank the models (its client kept up
    with some calibration rate: ``ClientCeiling.unmeasurable``)."""
    return openloop is not None and not (openloop.client and openloop.client.unmeasurable)


def answer(
    record: RunRecord,
    levels: Levels,
    items: Sequence[Speedup],
    openloop: OpenLoopRecord | None = None,
    price: str = "",
) -> Answer | None:
    """The one-screen answer, or None for a run of a single target (``price``: the cost line,
    when the run was priced)."""
    plan = record.plan
    targets = plan.targets()
    if len(targets) < 2 or not (levels or openloop):
        return None
    margin = precision_of(record)
    top = max(plan.concurrency)
    ranked = sorted(targets, key=lambda t: score(record, levels, openloop, t), reverse=True)
    best = ranked[0]
    rate, throughput = score(record, levels, openloop, best)
    close = unseparated(openloop, best, ranked[1:]) if openloop is not None and rate > 0 else []
    if close:  # the open loop cannot order these: the closed loop's throughput does
        best = max([best, *close], key=lambda t: score(record, levels, None, t))
        throughput = score(record, levels, None, best)[1]
    if openloop is not None and rate > 0 and not close:
        why = f"the highest Poisson rate within {openloop.slo} ({rate:,.0f} req/s)"
    else:
        why = f"the highest throughput at {top} clients ({throughput:,.0f} req/s)"
        if openloop is not None and close:
            shown = [ranked[0], *close[:3]]
            figures = [rate_figure(openloop, str(t.model)) for t in shown]
            names = ", ".join(
                f"{t} ({f} req/s)" for t, f in zip(shown[1:], figures[1:], strict=True)
            ) + (" and more" if len(close) > 3 else "")
            why += (
                f"; the open loop did not separate {shown[0]} ({figures[0]} req/s within "
                f"{openloop.slo}) from {names}"
            )
            if any(f.startswith(">=") for f in figures):
                why += f"; a rate with >= is a lower bound: each such model {WHY_LOWER_BOUND}"
        elif openloop is not None and not measurable(openloop):
            why += (
                f"; the open loop cannot rank them on this machine now (its client met "
                f"{openloop.slo} at no rate against a server that does nothing)"
            )
    rival, effect = rival_of(best, items, top)
    changes: list[str] = []
    if rival is not None and effect is not None:
        decision = decide(effect, margin)
        if decision is Decision.EQUIVALENT:  # speed does not choose: accuracy does
            if more_accurate(record, rival, best):
                best, rival, effect = rival, best, effect.inverse()
                decision = decide(effect, margin)
            why = f"as fast as {rival} within ±{margin:.0%} at {top} clients (equivalent)"
            if more_accurate(record, best, rival):
                why += " and more accurate"
        effect_text = (
            f"{effect} the requests/s of {rival} at {top} clients, ±{effect.half_width:.1%} "
            f"after {effect.n} window pairs: **{decision}**"
            if not math.isnan(effect.low)
            else f"{effect.mean:.2f}x the requests/s of {rival} at {top} clients (no interval)"
        )
        cost, trade = accuracy_cost(record, best, rival, effect)
        if trade:
            changes.append(trade)
        changes += flips(best, rival, items, top, margin)
    else:
        effect_text, cost = "", ""
    if openloop is not None:
        changes = disagreements(openloop, best, items, top, margin) + changes
    changes += undecided(record, items, margin)
    return Answer(best, why, effect_text, cost, changes, price)


def disagreements(
    openloop: OpenLoopRecord, best: Label, items: Sequence[Speedup], top: int, margin: float
) -> list[str]:
    """Where the closed loop at ``top`` clients decides a target faster than ``best`` while
    the open loop did not put it below ``best``: the two loops' runs disagree (a busy or
    shared machine), and the answer says so rather than hide it."""
    out = []
    for s in items:
        if s.concurrency != top or best not in (s.candidate, s.baseline):
            continue
        other = s.baseline if s.candidate == best else s.candidate
        ratio = s.throughput if s.candidate == other else s.throughput.inverse()
        if decide(ratio, margin) is not Decision.FASTER:
            continue
        if measurable(openloop) and other not in unseparated(openloop, best, [other]):
            continue  # the open loop put it below best: no disagreement to speak of
        worst = max((p.cpu_steal or 0.0 for p in openloop.points), default=0.0)
        out.append(
            f"the runs disagree: at {top} clients {other} serves {ratio} the requests/s of "
            f"{best}, and only the open loop's rates, which did not order them, put {best} "
            "first; re-run on a quiet machine"
            + (f" (CPU steal up to {steal.percent(worst)} here)" if steal.noisy(worst) else "")
        )
    return out


def rival_of(
    best: Label, items: Sequence[Speedup], top: int
) -> tuple[Label | None, Interval | None]:
    """The other variant on ``best``'s runtime and protocol, and best's ratio over it at
    ``top`` clients."""
    for s in items:
        if s.kind is not Axis.VARIANT or s.concurrency != top:
            continue
        if s.candidate == best:
            return s.baseline, s.throughput
        if s.baseline == best:
            return s.candidate, s.throughput.inverse()
    return None, None


def more_accurate(record: RunRecord, first: Label, second: Label) -> bool:
    """Whether ``first``'s variant has the higher test accuracy."""
    a, b = record.variant(first.variant), record.variant(second.variant)
    if a is None or b is None or a.test_accuracy is None or b.test_accuracy is None:
        return False
    return a.test_accuracy > b.test_accuracy


def accuracy_cost(
    record: RunRecord, best: Label, rival: Label, effect: Interval
) -> tuple[str, str]:
    """The accuracy difference of best against rival, and the trade-off it opens."""
    a, b = record.variant(rival.variant), record.variant(best.variant)
    if a is None or b is None or a.test_accuracy is None or b.test_accuracy is None:
        return "", ""
    diff, low, high = accuracy_difference(a.test_accuracy, b.test_accuracy)
    cost = (
        f"{b.test_accuracy:.2%} vs {a.test_accuracy:.2%} for {rival} ({diff * 100:+.2f} points, "
        f"95% CI {low * 100:+.2f} to {high * 100:+.2f}; 10,000 test images)"
    )
    trade = ""
    if high < 0:
        trade = (
            f"if {abs(diff) * 100:.2f} points of test accuracy are worth more than "
            f"{effect.mean:.2f}x the throughput, deploy {rival}"
        )
    return cost, trade


def flips(
    best: Label, rival: Label, items: Sequence[Speedup], top: int, margin: float
) -> list[str]:
    """Levels below ``top`` where best does not beat rival."""
    out = []
    for s in items:
        if (
            s.kind is not Axis.VARIANT
            or s.concurrency == top
            or {s.candidate, s.baseline} != {best, rival}
        ):
            continue
        ratio = s.throughput if s.candidate == best else s.throughput.inverse()
        decision = decide(ratio, margin)
        if decision is not Decision.FASTER:
            out.append(
                f"at {s.concurrency} client{'s' if s.concurrency > 1 else ''} {best} is "
                f"{decision} ({ratio} the requests/s of {rival}): with such traffic the choice "
                + ("is reversed" if decision is Decision.SLOWER else "matters less")
            )
    return out


def undecided(record: RunRecord, items: Sequence[Speedup], margin: float) -> list[str]:
    """Comparisons left inconclusive, with the time that would decide them; those with no
    valid pairs (a model failed its windows), which no time would decide, said apart."""
    failed = [s for s in items if s.throughput.n < 2]
    lines = [
        f"{s.candidate} vs {s.baseline} at {s.concurrency}: no valid window pairs (a model "
        "failed its windows; see its errors), so no time would decide it"
        for s in failed[:3]
    ]
    open_items = [
        s
        for s in items
        if s.throughput.n >= 2 and decide(s.throughput, margin) is Decision.INCONCLUSIVE
    ]
    if not open_items:
        return lines
    stops = {stop.concurrency: stop for stop in record.stops}
    seconds = 0.0
    for s in open_items:
        stop: Stop | None = stops.get(s.concurrency)
        needed = pairs_needed(s.throughput, margin)
        per_pair = float(len(record.plan.targets()) * record.plan.duration_s)
        if stop is not None and stop.pairs:
            per_pair = stop.seconds / stop.pairs
        seconds = max(seconds, (needed - s.throughput.n) * per_pair)
    names = ", ".join(f"{s.candidate} vs {s.baseline} at {s.concurrency}" for s in open_items[:3])
    more = f" and {len(open_items) - 3} more" if len(open_items) > 3 else ""
    levels = len(record.plan.concurrency)
    spent = sum(stop.seconds for stop in record.stops) or float(record.plan.budget_s)
    total = math.ceil((spent + seconds * levels) / 60)
    return [
        *lines,
        f"{len(open_items)} comparison(s) undecided ({names}{more}): at the spread measured, "
        f"about {seconds * levels / 60:.0f} more minutes would decide them (--budget {total}m)",
    ]
