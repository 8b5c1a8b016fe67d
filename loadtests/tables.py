"""The report's tables, as (header, rows) of text in display order: the claims, the speedups,
the open loop (:mod:`loadtests.openloop_tables`), latency and throughput, where the time goes,
the variants and runtimes, drift, the previous run, and the machine. :mod:`loadtests.report`
writes them as Markdown and HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtests import changes, steal
from loadtests.analysis import DRIFT, Levels, RunComparison, Speedup, drift
from loadtests.claims import Claim
from loadtests.openloop_results import OpenLoopRecord
from loadtests.openloop_tables import openloop_tables
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

    def moved(change: changes.Change) -> str:
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
                _known(e.version),
                _known(e.parameters, ","),
                _known(e.macs, ","),
                _percent(e.test_accuracy),
                _known(e.savedmodel_bytes and e.savedmodel_bytes / 1e6, ".2f", " MB"),
                _known(e.epochs),
                _known(e.device),
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
                    "a repeat failed" if math.isinf(d.spread) else f"{d.spread:.0%}",
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
                "batching, as served",
                "; ".join(f"{m}: {b}" for m, b in record.batching().items()) or "not reported",
            ],
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
        "CPU steal (max)",
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
                    _figure(lv.accuracy, ".2%") if len(lv.latency) else "-",
                    _percent(served.test_accuracy if served else None),
                    f"{lv.generator_busy:.0%}",
                    steal.percent(lv.cpu_steal),
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
            rest = p50 - lv.model_ms - lv.queue_ms  # NaN without Server-Timing: shown "-"
            rows.append(
                [
                    str(c),
                    str(v),
                    f"{p50:.3f}",
                    _figure(lv.model_ms, ".3f"),
                    _figure(lv.queue_ms, ".3f"),
                    _figure(rest, ".3f"),
                    _figure(lv.model_ms / p50, ".0%"),
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


def _known(value: object, spec: str = "", unit: str = "") -> str:
    """A figure the server may not have given (another server's, or an older model's): "-"
    when it did not, never "0" or "None"."""
    return "-" if value is None else f"{format(value, spec)}{unit}"


def _figure(value: float, spec: str) -> str:
    """``value`` formatted with ``spec``, or "-" when it is not a number (not measured)."""
    return "-" if math.isnan(value) else format(value, spec)
