"""Write a load test's report: ``report.md``, a self-contained ``report.html`` and
``steps.csv`` (and ``openloop.md`` for an open-loop run on its own).

The figures come from :mod:`loadtests.analysis` (levels, speedups, drift, the previous run),
:mod:`loadtests.claims` (the seed study's claims) and :mod:`loadtests.plots` (the PNGs); this
module lays them out as tables and writes the files.
"""

from __future__ import annotations

import base64
import csv
import html
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtests import history
from loadtests.analysis import (
    DRIFT,
    Axis,
    Levels,
    RunComparison,
    Speedup,
    against_previous,
    drift,
    load_levels,
    load_openloop,
    noise_line,
    speedups,
    verdict,
)
from loadtests.claims import Claim, bottom_line, claims, rate_claims
from loadtests.plots import plots
from loadtests.protocols import Protocol
from loadtests.results import OpenLoopRecord, Percentiles, RunRecord

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
        [c.name, str(c.level), f"{c.before.mean:,.0f}", f"{c.after.mean:,.0f}",
         f"{c.ratio:.2f}x", moved(c)]
        for c in comparison.throughputs
    ]  # fmt: skip
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


def relative_link(previous: Previous, out_dir: Path, page: str) -> str:
    """A link from this report to the previous run's ``page`` (relative when the two folders
    are siblings, as under runs/, so it also works on the web page's /reports/)."""
    try:
        return (Path(os.path.relpath(previous.folder, out_dir)) / page).as_posix()
    except ValueError:  # another drive
        return (previous.folder / page).as_posix()


def openloop_summary(record: OpenLoopRecord) -> Table:
    """Per model: its highest rate under the SLO, the ratio to the first model, and its
    latency and the generator's lag at that rate."""
    base = record.models[0]
    header = ["model", "max rate under SLO (req/s)", f"vs {base}", "p50 ms there",
              "p99 ms there", "generator lag p99 ms"]  # fmt: skip
    rows = []
    for model in record.models:
        point = record.at_max_rate(model)
        rows.append(
            [model, f"{record.max_rate[model]:,.0f}", f"{record.ratio_to(model, base):.2f}x",
             f"{point.latency_ms.p50:.2f}" if point else "-",
             f"{point.latency_ms.p99:.2f}" if point else "-",
             f"{point.lag_p99_ms:.2f}" if point else "-"]
        )  # fmt: skip
    return header, rows


def openloop_runs(record: OpenLoopRecord) -> Table:
    """Every run of the sweep and the search, in the order made."""
    header = ["model", "rate", "answered 200", "goodput/s", *[f"{q} ms" for q in
              Percentiles.labels()], f"SLO p{record.slo.percentile:g} ms", "met",
              "generator lag p99 ms", "runs"]  # fmt: skip
    rows = [
        [p.model, f"{p.rate:,.1f}", f"{p.ok}/{p.requests}", f"{p.goodput_rps:,.1f}",
         *[f"{v:.2f}" for v in p.latency_ms.values()], f"{p.slo_ms:.2f}",
         "yes" if p.met else "no", f"{p.lag_p99_ms:.2f}",
         "1" if p.runs == 1 else f"{p.runs} (missed once: pooled)"]
        for p in record.points
    ]  # fmt: skip
    return header, rows


def openloop_tables(openloop: OpenLoopRecord) -> dict[str, Table]:
    """The open-loop sweep's tables: the highest rate under the SLO per model, every run."""
    best = (
        f"Open loop: the highest Poisson arrival rate within {openloop.slo} (bisection; latency "
        "from the scheduled send time, failures count as infinitely slow)"
    )
    every = (
        f"Open loop: every run (at least {openloop.seconds_per_run:g} s and "
        f"{openloop.min_requests:,} requests each, after {openloop.warmup_s:g} s of warm-up)"
    )
    return {best: openloop_summary(openloop), every: openloop_runs(openloop)}


def write_openloop_report(out_dir: Path) -> Path:
    """``openloop.md`` of an open-loop run on its own (with a closed-loop run beside it, the
    same tables are in report.md too)."""
    record = OpenLoopRecord.load(out_dir)
    md = [f"# Open-loop load: the highest Poisson arrival rate meeting {record.slo}", ""]
    for name, table in openloop_tables(record).items():
        md += [f"## {name}", "", markdown_table(table), ""]
    path = out_dir / "openloop.md"
    path.write_text("\n".join(md))
    return path


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
    models, conc = plan.targets(), plan.concurrency
    out: dict[str, Table] = {}
    if found:
        out["Claims: the seed study's against what was measured"] = (
            ["claim", "reference", "measured", "verdict"],
            [[c.claim, c.reference, c.measured, c.verdict] for c in found],
        )
    titles = {
        Axis.VARIANT: "Speedup of " + ", ".join(plan.variants[1:]) + f" over "
        f"{plan.variants[0]}, on each runtime (95% CI over repeats)",
        Axis.RUNTIME: "Runtimes compared on the same variant, against "
        f"{(plan.runtimes or ('-',))[0]} (95% CI over repeats)",
        Axis.PROTOCOL: f"Protocols compared on the same model, against {plan.protocols[0]} "
        "(95% CI over repeats)",
    }
    for kind, title in titles.items():
        rows = [
            [str(s.concurrency), str(s.candidate), str(s.baseline), str(s.throughput),
             str(s.p50), str(s.p99), f"{s.p50_diff_ms:+.3f}"]
            for s in items
            if s.kind is kind
        ]  # fmt: skip
        if rows:
            header = ["clients", "model", "vs", "throughput ratio", "p50 speedup", "p99 speedup",
                      "p50 diff (ms)"]  # fmt: skip
            out[title] = (header, rows)
    if openloop is not None:
        out.update(openloop_tables(openloop))
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
            rows.append(
                [
                    str(c),
                    str(v),
                    f"{np.mean(lv.throughput):,.0f}",
                    *[f"{value:.3f}" for value in lv.percentiles.values()],
                    f"{lv.errors}/{lv.requests}",
                    f"{lv.accuracy:.2%}",
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
            p50 = lv.percentiles.p50
            rest = p50 - lv.model_ms - lv.queue_ms
            rows.append(
                [str(c), str(v), f"{p50:.3f}", f"{lv.model_ms:.3f}", f"{lv.queue_ms:.3f}",
                 f"{rest:.3f}", f"{lv.model_ms / p50:.0%}"]
            )  # fmt: skip
    out["Where the time goes (medians, ms): client vs server"] = (
        ["clients", "model", "client p50", "model time", "queue", "HTTP + rest", "model share"],
        rows,
    )
    out["The variants (training figures)"] = (
        ["variant", "version", "parameters", "MACs/image", "test accuracy", "SavedModel",
         "epochs", "device"],
        [
            [e.name, str(e.version), f"{e.parameters or 0:,}", f"{e.macs or 0:,}",
             _percent(e.test_accuracy), f"{(e.savedmodel_bytes or 0) / 1e6:.2f} MB",
             str(e.epochs), str(e.device)]
            for e in record.variants
        ],
    )  # fmt: skip
    tested = {(step.variant, step.runtime) for step in record.steps}
    out["Runtimes served (device, model time at warm-up, difference from the SavedModel)"] = (
        ["model", "device", "batch-1 ms", "max abs diff"],
        [
            [r.model, str(r.device),
             f"{r.batch1_ms:.3f}" if r.batch1_ms is not None else "-",
             f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "-"]
            for entry in record.variants
            for r in entry.runtimes
            if (entry.name, r.runtime) in tested
        ],
    )  # fmt: skip
    out["Drift between repeats (throughput spread = max/min - 1; flagged: over "
        f"{DRIFT:.0%} off the level's median)"] = (
        ["model", "clients", "spread", "flagged repeats"],
        [[str(d.target), str(d.level), f"{d.spread:.0%}", ", ".join(map(str, d.flagged)) or "-"]
         for d in drift(levels)],
    )  # fmt: skip
    if previous is not None:
        out.update(previous.tables)
    m = record.machine
    out["Machine and settings"] = (
        ["what", "value"],
        [
            ["CPU", f"{m.cpu} ({m.cores} cores)"],
            ["platform", m.platform],
            ["Python / TensorFlow / Locust", f"{m.python} / {m.tensorflow} / {m.locust}"],
            ["target", record.target
             + (" (started by the load test)" if record.started_server else "")],
            ["server options", " ".join(record.server_args) or "defaults"],
            [
                "load",
                f"closed loop, {', '.join(plan.protocols)} protocol(s), {plan.mode} payloads, "
                f"{plan.duration_s} s per step after {plan.warmup_s} s warm-up, "
                f"{plan.repeats} repeats, alternating order, {plan.processes} Locust "
                "process(es)",
            ],
            ["run", f"{record.created_at} to {record.finished_at}"],
        ],
    )  # fmt: skip
    return out


def _percent(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "-"


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table."""
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(table: Table) -> str:
    """An HTML table."""
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class Report:
    """A written report: its files, and what to print of it."""

    markdown: Path
    html: Path
    bottom_line: str
    claims: list[Claim]
    verdict: list[str]


def build_report(out_dir: Path) -> Report:
    """Write report.md, report.html and steps.csv into ``out_dir``."""
    record, levels = load_levels(out_dir)
    openloop = load_openloop(out_dir)
    items = speedups(record, levels)
    found = claims(record, items, openloop)
    summary = bottom_line(record, items, openloop)
    lines = verdict(items)
    if openloop is not None:
        lines += [
            f"Open loop: {c.subject}, highest Poisson arrival rate within {openloop.slo}: "
            f"{c.measured} ({c.verdict})."
            for c in rate_claims(openloop, record.plan)
        ]
    noisy = noise_line(levels)
    if noisy:
        lines.append(noisy)
    compared = against_previous(out_dir, record)
    previous = previous_tables(compared) if compared is not None else None
    if previous is not None:
        lines += previous.lines
    figures = plots(record, levels, out_dir, openloop)
    all_tables = tables(record, levels, items, found, previous, openloop)
    warnings = sorted({w for step in record.steps for w in step.warnings})
    plan = record.plan
    title = "mnist-serve load test: " + " vs ".join(plan.variants)
    if plan.runtimes:
        title += " on " + ", ".join(plan.runtimes)
    if plan.protocols != (Protocol.NATIVE,):
        title += " over " + ", ".join(plan.protocols)

    md = [f"# {title}", "", f"**{summary}**" if summary else "", ""]
    if previous is not None:
        link = relative_link(previous, out_dir, "report.md")
        md += [f"Previous comparable run: [{previous.name}]({link})", ""]
    md += ["## Verdict", "", *[f"- {line}" for line in lines], ""]
    if warnings:
        md += ["**Warnings:** " + "; ".join(warnings), ""]
    for name, table in all_tables.items():
        md += [f"## {name}", "", markdown_table(table), ""]
    for name, path in figures.items():
        md += [f"## {name}", "", f"![{name}]({path.relative_to(out_dir)})", ""]
    raw = "`results.json` (every step), `steps.csv`, `samples/*.npz` (every request)"
    if openloop is not None:
        raw += ", `openloop.json` (every open-loop run)"
    md += [f"Raw data: {raw}.", ""]
    report_md = out_dir / "report.md"
    report_md.write_text("\n".join(md))

    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p><b>{html.escape(summary)}</b></p>" if summary else "",
        (
            f'<p>Previous comparable run: <a href="'
            f'{html.escape(relative_link(previous, out_dir, "report.html"))}">'
            f"{html.escape(previous.name)}</a></p>"
            if previous is not None
            else ""
        ),
        "<h2>Verdict</h2><ul>",
        *[f"<li>{html.escape(line)}</li>" for line in lines],
        "</ul>",
    ]
    if warnings:
        parts.append(f"<p class=warn><b>Warnings:</b> {html.escape('; '.join(warnings))}</p>")
    for name, table in all_tables.items():
        parts += [f"<h2>{html.escape(name)}</h2>", html_table(table)]
    for name, path in figures.items():
        encoded = base64.b64encode(path.read_bytes()).decode()
        parts += [
            f"<h2>{html.escape(name)}</h2>",
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">',
        ]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%}.warn{color:#a40}"
    )
    report_html = out_dir / "report.html"
    report_html.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    write_steps_csv(record, out_dir / "steps.csv")
    return Report(report_md, report_html, summary, found, lines)


def write_steps_csv(record: RunRecord, path: Path) -> None:
    """Every step's figures, one row each."""
    header = ["model", "runtime", "concurrency", "repeat", "requests", "errors",
              "throughput_rps", *[f"{q}_ms" for q in Percentiles.labels()],
              "right_on_digits_sent", "server_model_ms_p50", "server_queue_ms_p50",
              "generator_busy"]  # fmt: skip
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for s in record.steps:
            writer.writerow(
                [s.model, s.runtime, s.concurrency, s.repeat, s.requests, s.errors,
                 round(s.throughput_rps, 2), *[round(v, 4) for v in s.latency_ms.values()],
                 round(s.accuracy, 4), round(s.server_model_ms_p50, 4),
                 round(s.server_queue_ms_p50, 4), s.generator_busy]
            )  # fmt: skip
