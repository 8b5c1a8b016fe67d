"""The report's tables, as (header, rows) of text in display order: the claims, the speedups,
the open loop, latency and throughput, where the time goes, the variants and runtimes, drift,
the previous run, and the machine. :mod:`loadtests.report` writes them as Markdown and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtests import history
from loadtests.analysis import DRIFT, Levels, RunComparison, Speedup, drift
from loadtests.claims import Claim
from loadtests.openloop_results import OpenLoopRecord, RatePoint
from loadtests.results import Failure, Percentiles, RunRecord

Table = tuple[list[str], list[list[str]]]


@dataclass(frozen=True)
class Previous:
    """This run against the previous comparable one in the history, as the report shows it."""

    tables: dict[str, Table]
    lines: list[str]  # for the verdict: did the speedup move?
    name: str  # "run 3 (demo-20261124-..., 2026-11-24T...)"
    folder: Path  # where its report is


def previous_tables(comparison: RunComparison) -> Previous:
    """The report's view of :func:`loadtests.analysis.against_previous`."""
    header = ["model", "clients", "then", "now", "now/then", "moved"]

    def moved(change: history.Change) -> str:
        return "yes" if change.moved else "no (intervals overlap)"

    throughput = [
        [
            c.name,
            str(c.level),
            f"{c.before.mean:,.0f}",
            f"{c.after.mean:,.0f}",
            f"{c.ratio:.2f}x",
            moved(c),
        ]
        for c in comparison.throughputs
    ]
    speedup = [
        [c.name, str(c.level), str(c.before), str(c.after), f"{c.ratio:.2f}x", moved(c)]
        for c in comparison.speedups
    ]
    name = comparison.name
    note = "moved = 95% intervals over repeats do not overlap"
    tables = {
        f"Against the previous comparable {name}: speedup ({note})": (header, speedup),
        f"Against the previous comparable {name}: throughput, req/s ({note})": (header, throughput),
    }
    return Previous(tables, comparison.speedup_lines(), name, Path(comparison.before.folder))


def openloop_summary(record: OpenLoopRecord) -> Table:
    """Per model: its highest rate under the SLO (">=" when it met every rate tried), the ratio
    to the first model, its latency there, and where the search stopped."""
    from loadtests.claims import rate_figure

    base = record.models[0]
    header = [
        "model",
        "max rate under SLO (req/s)",
        f"vs {base}",
        "p50 ms there",
        "p99 ms there",
        "generator lag p99 ms",
        "search stopped at",
    ]
    rows = []
    for model in record.models:
        point = record.at_max_rate(model)
        missed = [p for p in record.points if p.model == model and not p.met]
        stop = "every rate tried met"
        if missed:
            first = min(missed, key=lambda p: p.rate)
            stop = f"{first.rate:,g} req/s: {first.verdict}"
        if model == base:
            ratio = "baseline"
        elif record.open_ended(model) and record.open_ended(base):
            ratio = "not separated"
        else:
            ratio = f"{record.ratio_to(model, base):.2f}x"
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
        "goodput/s",
        *[f"{q} ms" for q in Percentiles.labels()],
        f"SLO p{record.slo.percentile:g} ms",
        "verdict",
        "over the bound",
        "generator lag p99 ms",
        "runs",
        "LoadGen summary",
    ]
    rows = [
        [
            p.model,
            f"{p.rate:,.1f}",
            f"{p.ok}/{p.requests}",
            f"{p.goodput_rps:,.1f}",
            *[f"{v:.2f}" for v in p.latency_ms.values()],
            f"{p.slo_ms:.2f}",
            p.verdict,
            f"{p.loadgen.overlatency}" if p.loadgen else "-",
            f"{p.lag_p99_ms:.2f}",
            "1" if p.runs == 1 else f"{p.runs} (first {first_verdict(p)})",
            p.loadgen.summary if p.loadgen else "-",
        ]
        for p in record.points
    ]
    return header, rows


def first_verdict(point: RatePoint) -> str:
    """LoadGen's verdict on the first of two runs at a rate."""
    first = point.first
    if first is None:
        return "not VALID"
    return f"needs {first.needs_more or 0:,} more" if first.undecided else "INVALID"


def failure_lines(record: RunRecord) -> list[str]:
    """For the top of the report: each step without a single successful request, and why."""
    return [
        f"FAILED: {s.target} at {s.concurrency} client(s), repeat {s.repeat + 1}: no successful "
        f"request ({s.errors} of {s.requests} failed: {s.failure_line})"
        for s in record.failed_steps
    ]


def failure_table(record: RunRecord) -> Table | None:
    """Every step with failed requests: each status, its count and the server's first message
    (None when no request failed)."""
    rows = [
        [
            str(s.target),
            str(s.concurrency),
            str(s.repeat + 1),
            f"{s.errors}/{s.requests}",
            "yes" if s.failed else "no",
            f.status,
            str(f.count),
            f.message or "-",
        ]
        for s in record.steps
        if s.errors or s.failed
        for f in (s.failures or [Failure("unknown", s.errors)])
    ]
    if not rows:
        return None
    header = ["model", "clients", "repeat", "errors", "failed", "status", "count", "first message"]
    return header, rows


def openloop_tables(openloop: OpenLoopRecord) -> dict[str, Table]:
    """The open-loop sweep's tables: the highest rate under the SLO per model, every run."""
    judge = openloop.generator or "the asyncio generator"
    best = (
        f"Open loop: the highest Poisson arrival rate within {openloop.slo} ({judge}; VALID "
        "needs the percentile within the bound and LoadGen's early stopping passed; latency "
        "from the scheduled send time, failures count as over the bound; bisection)"
    )
    every = (
        f"Open loop: every run (at least {openloop.seconds_per_run:g} s and "
        f"{openloop.min_requests:,} requests each, after {openloop.warmup_s:g} s of warm-up)"
    )
    return {best: openloop_summary(openloop), every: openloop_runs(openloop)}


def tables(
    record: RunRecord,
    levels: Levels,
    items: list[Speedup],
    found: list[Claim],
    previous: Previous | None = None,
    openloop: OpenLoopRecord | None = None,
) -> dict[str, Table]:
    """The report's tables, as (header, rows) in display order."""
    plan = record.plan
    out: dict[str, Table] = {}
    if found:
        out["Claims: the seed study's against what was measured"] = (
            ["claim", "reference", "measured", "verdict"],
            [[c.claim, c.reference, c.measured, c.verdict] for c in found],
        )
    if openloop is not None:
        out.update(openloop_tables(openloop))
    errors = failure_table(record)
    if errors is not None:
        out["Failed requests by status (a step failed: not one request succeeded)"] = errors
    if record.steps:  # an open-loop run on its own has no closed-loop steps
        out.update(closed_loop_tables(record, levels))
    out["The variants (training figures)"] = (
        [
            "variant",
            "version",
            "parameters",
            "MACs/image",
            "test accuracy",
            "SavedModel",
            "epochs",
            "device",
        ],
        [
            [
                e.name,
                str(e.version),
                f"{e.parameters or 0:,}",
                f"{e.macs or 0:,}",
                _percent(e.test_accuracy),
                f"{(e.savedmodel_bytes or 0) / 1e6:.2f} MB",
                str(e.epochs),
                str(e.device),
            ]
            for e in record.variants
        ],
    )
    tested = {(step.variant, step.runtime) for step in record.steps} or {
        (name.variant, name.runtime or default_runtime(record, name.variant))
        for name in plan.model_names()
    }
    out["Runtimes served (device, model time at warm-up, difference from the SavedModel)"] = (
        ["model", "device", "batch-1 ms", "max abs diff"],
        [
            [
                r.model,
                str(r.device),
                f"{r.batch1_ms:.3f}" if r.batch1_ms is not None else "-",
                f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "-",
            ]
            for entry in record.variants
            for r in entry.runtimes
            if (entry.name, r.runtime) in tested
        ],
    )
    if record.steps:
        out[
            "Drift between repeats (throughput spread = max/min - 1; flagged: over "
            f"{DRIFT:.0%} off the level's median)"
        ] = (
            ["model", "clients", "spread", "flagged repeats"],
            [
                [
                    str(d.target),
                    str(d.level),
                    f"{d.spread:.0%}",
                    ", ".join(map(str, d.flagged)) or "-",
                ]
                for d in drift(levels)
            ],
        )
    if previous is not None:
        out.update(previous.tables)
    m = record.machine
    out["Machine and settings"] = (
        ["what", "value"],
        [
            ["CPU", f"{m.cpu} ({m.cores} cores)"],
            ["platform", m.platform],
            ["Python / TensorFlow / Locust", f"{m.python} / {m.tensorflow} / {m.locust}"],
            [
                "target",
                record.target + (" (started by the load test)" if record.started_server else ""),
            ],
            ["server options", " ".join(record.server_args) or "defaults"],
            ["serving engine", str(record.engine) if record.engine else "not reported"],
            [
                "tensors (from each model's metadata)",
                "; ".join(map(str, record.layouts)) or "-",
            ],
            ["load", load_line(record, openloop)],
            ["run", f"{record.created_at} to {record.finished_at}"],
        ],
    )
    return out


def closed_loop_tables(record: RunRecord, levels: Levels) -> dict[str, Table]:
    """The closed-loop steps' latency and throughput, and where the time goes."""
    models, conc = record.plan.targets(), record.plan.concurrency
    out: dict[str, Table] = {}
    header = [
        "clients",
        "model",
        "req/s",
        *[f"{q} ms" for q in Percentiles.labels()],
        "errors",
        "right on digits sent",
        "test accuracy (10k)",
        "gen. CPU",
    ]
    rows = []
    for c in conc:
        for v in models:
            lv = levels[(v, c)]
            served = record.variant(v.variant)
            latency = [f"{value:.3f}" for value in lv.percentiles.values()]
            rows.append(
                [
                    str(c),
                    str(v) + (f" (FAILED {lv.failed}x)" if lv.failed else ""),
                    f"{np.mean(lv.throughput):,.0f}",
                    *(latency if len(lv.latency) else ["failed"] * len(latency)),
                    f"{lv.errors}/{lv.requests}",
                    f"{lv.accuracy:.2%}" if len(lv.latency) else "-",
                    _percent(served.test_accuracy if served else None),
                    f"{lv.generator_busy:.0%}",
                ]
            )
    title = (
        "Client-side latency and throughput (exact samples, pooled over repeats; 'right on "
        "digits sent' is over the few hundred test digits the load cycles through, not an "
        "accuracy: that is the test-set column, from training)"
    )
    out[title] = (header, rows)
    rows = []
    for c in conc:
        for v in models:
            lv = levels[(v, c)]
            if not len(lv.latency):
                continue  # failed: no time to split
            p50 = lv.percentiles.p50
            rest = p50 - lv.model_ms - lv.queue_ms
            rows.append(
                [
                    str(c),
                    str(v),
                    f"{p50:.3f}",
                    f"{lv.model_ms:.3f}",
                    f"{lv.queue_ms:.3f}",
                    f"{rest:.3f}",
                    f"{lv.model_ms / p50:.0%}",
                ]
            )
    out["Where the time goes (medians, ms): client vs server"] = (
        ["clients", "model", "client p50", "model time", "queue", "HTTP + rest", "model share"],
        rows,
    )
    return out


def default_runtime(record: RunRecord, variant: str) -> str:
    """The runtime a bare variant name is served on ("" when the server did not say)."""
    served = record.variant(variant)
    return (served.runtime if served else None) or ""


def load_line(record: RunRecord, openloop: OpenLoopRecord | None) -> str:
    """How the load was made: the closed loop's plan and/or the open loop's generator."""
    plan = record.plan
    parts = []
    if record.steps:
        parts.append(
            f"closed loop, {', '.join(plan.protocols)} protocol(s), {plan.mode} payloads, "
            f"windows of {plan.duration_s} s in alternating order after a {plan.warmup_s} s "
            f"warm-up per Locust run, {len(record.steps) // max(len(plan.targets()), 1)} windows "
            f"per model in all, {plan.processes} Locust process(es)"
            + (
                f", until each ratio is within ±{plan.precision:.0%} (budget {plan.budget_s} s)"
                if plan.precision > 0
                else ""
            )
        )
    if openloop is not None:
        parts.append(
            f"open loop, {openloop.generator or 'asyncio generator'}, Poisson arrivals at "
            f"{', '.join(f'{r:g}' for r in openloop.rates)} req/s then bisection, JSON payloads"
        )
    return "; ".join(parts)


def _percent(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "-"
