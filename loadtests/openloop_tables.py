"""The report's open-loop tables: each model's highest Poisson arrival rate within the SLO,
against the first variant on the same runtime (as the claims compare), and every run of the
search with LoadGen's verdicts. :mod:`loadtests.tables` puts them among the report's tables.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from loadtests import steal
from loadtests.loadgen import TIMEOUT_S
from loadtests.openloop_results import OpenLoopRecord, RatePoint
from loadtests.results import Percentiles
from modelrepo.layout import ModelName

if TYPE_CHECKING:  # tables imports this module: the alias is only needed for annotations
    from loadtests.tables import Table


def same_runtime_baseline(models: list[str], model: str) -> str:
    """The first model's variant on ``model``'s runtime (the claims' baseline); the first
    model itself for names that are not ``variant@runtime`` (another server's)."""
    try:
        first, name = ModelName.parse(models[0]), ModelName.parse(model)
    except ValueError:
        return models[0]
    return str(ModelName(first.variant, name.runtime))


def openloop_summary(record: OpenLoopRecord) -> Table:
    """Per model: its highest rate under the SLO (">=" when it met every rate tried), the ratio
    to the first variant on the same runtime (as the claims compare), its latency there, and
    where the search stopped."""
    from loadtests.rate_claims import rate_figure, rate_ratio

    header = [
        "model",
        "max rate under SLO (req/s)",
        "vs the first variant, same runtime",
        "p50 ms there",
        "p99 ms there",
        "generator lag p99 ms",
        "search stopped at",
    ]
    rows = []
    for model in record.models:
        point = record.at_max_rate(model)
        stop = stopped_at(record, model)
        base = same_runtime_baseline(record.models, model)
        if model == base:
            ratio = "baseline"
        elif base not in record.max_rate:
            ratio = "-"  # the baseline was not searched on this runtime
        else:
            ratio = rate_ratio(record, model, base)
        rows.append(
            [
                model,
                rate_figure(record, model),
                ratio,
                f"{point.latency_ms.p50:.2f}" if point else "-",
                f"{point.latency_ms.p99:.2f}" if point else "-",
                f"{point.lag_p99_ms:.2f}" if point else "-",
                stop,
            ]
        )
    return header, rows


def openloop_runs(record: OpenLoopRecord) -> Table:
    """Every run of the sweep and the search, in the order made, with LoadGen's verdict."""
    header = [
        "model",
        "rate",
        "answered 200",
        "failed",
        "goodput/s",
        *[f"{q} ms" for q in Percentiles.labels()],
        f"SLO p{record.slo.percentile:g} ms",
        "verdict",
        "over the bound",
        "generator lag p99 ms",
        "CPU steal",
        "runs",
        "LoadGen summary",
    ]
    rows = [
        [
            p.model,
            f"{p.rate:,.1f}",
            f"{p.ok}/{p.requests}",
            f"{p.requests - p.ok:,}",
            f"{p.goodput_rps:,.1f}",
            *[f"{v:.2f}" for v in p.latency_ms.values()],
            f"{p.slo_ms:.2f}",
            p.verdict + lagged(record, p),
            f"{p.loadgen.overlatency}" if p.loadgen else "-",
            f"{p.lag_p99_ms:.2f}",
            steal.percent(p.cpu_steal),
            "1" if p.runs == 1 else f"{p.runs} (first {first_verdict(p)})",
            p.loadgen.summary if p.loadgen else "-",
        ]
        for p in record.points
    ]
    return header, rows


def stopped_at(record: OpenLoopRecord, model: str) -> str:
    """Where ``model``'s search stopped: the miss that bounds its rate (the upper end of its
    bracket), then any miss below it with the client itself late, which bounds nothing."""
    high = record.bracket(model)[1]
    late = ", ".join(f"{rate:,g}" for rate in sorted(p.rate for p in record.lagged_misses(model)))
    if math.isinf(high):
        missed = [p.rate for p in record.points if p.model == model and not p.met]
        if missed and record.client is not None and record.client.unmeasurable:
            return (
                f"{min(missed):,g} req/s: missed, which bounds nothing (the client kept up with "
                "no calibration rate)"
            )
        return (
            f"missed only with the client late, at {late} req/s" if late else "every rate tried met"
        )
    bound = next(p for p in record.points if p.model == model and not p.met and p.rate == high)
    stop = f"{high:,g} req/s: {bound.verdict}"
    return f"{stop}; below it the client lagged at {late} req/s" if late else stop


def lagged(record: OpenLoopRecord, point: RatePoint) -> str:
    """A miss's label when the client itself lagged (it bounds nothing: ``Slo.upper_end``)."""
    return " (the client lagged)" if record.slo.client_lagged(point) else ""


def first_verdict(point: RatePoint) -> str:
    """LoadGen's verdict on the first of two runs at a rate."""
    first = point.first
    if first is None:
        return "not VALID"
    return f"needs {first.needs_more or 0:,} more" if first.undecided else "INVALID"


def openloop_tables(openloop: OpenLoopRecord) -> dict[str, Table]:
    """The open-loop sweep's tables: the highest rate under the SLO per model, every run."""
    judge = openloop.generator or "the asyncio generator"
    best = (
        f"Open loop: the highest Poisson arrival rate within {openloop.slo} ({judge}; VALID "
        "needs the percentile within the bound and LoadGen's early stopping passed; latency "
        "from the scheduled send time, failures count as over the bound; bisection"
    )
    if openloop.client is not None:
        best += f"; the ceiling: {openloop.client.summary}"
    best += ")"
    every = (
        f"Open loop: every run (at least {openloop.seconds_per_run:g} s and "
        f"{openloop.min_requests:,} requests each, after {openloop.warmup_s:g} s of warm-up"
    )
    if any(p.loadgen is not None for p in openloop.points):
        every += (
            "; LoadGen takes a latency for every request, so a failed one counts as just over "
            f"the bound ({TIMEOUT_S:g} s if never answered): in a run with failures the high "
            "percentiles show that, not the answers' times"
        )
    if stolen := steal.warning([p.cpu_steal for p in openloop.points], "runs"):
        every += f"; {stolen}"
    every += ")"
    return {best: openloop_summary(openloop), every: openloop_runs(openloop)}
