"""Write a load test's report: ``report.md``, a self-contained ``report.html`` and
``steps.csv`` (and ``openloop.md`` for an open-loop run on its own).

The figures come from :mod:`loadtests.analysis` (levels, speedups, drift, the previous run),
:mod:`loadtests.claims` (the seed study's claims) and :mod:`loadtests.plots` (the PNGs), laid
out as tables by :mod:`loadtests.tables`; this module writes the files.
"""

from __future__ import annotations

import base64
import csv
import html
import os
from dataclasses import dataclass
from pathlib import Path

from loadtests.analysis import (
    against_previous,
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
from loadtests.tables import Previous, Table, openloop_tables, previous_tables, tables
from loadtests.tuned_compare import tuned_lines, tuned_tables


def relative_link(previous: Previous, out_dir: Path, page: str) -> str:
    """A link from this report to the previous run's ``page`` (relative when the two folders
    are siblings, as under runs/, so it also works on the web page's /reports/)."""
    try:
        return (Path(os.path.relpath(previous.folder, out_dir)) / page).as_posix()
    except ValueError:  # another drive
        return (previous.folder / page).as_posix()


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
    lines += tuned_lines(out_dir)
    noisy = noise_line(levels)
    if noisy:
        lines.append(noisy)
    compared = against_previous(out_dir, record)
    previous = previous_tables(compared) if compared is not None else None
    if previous is not None:
        lines += previous.lines
    figures = plots(record, levels, out_dir, openloop)
    all_tables = tables(record, levels, items, found, previous, openloop)
    all_tables.update(tuned_tables(out_dir))
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
    header = [
        "model",
        "runtime",
        "concurrency",
        "repeat",
        "requests",
        "errors",
        "throughput_rps",
        *[f"{q}_ms" for q in Percentiles.labels()],
        "right_on_digits_sent",
        "server_model_ms_p50",
        "server_queue_ms_p50",
        "generator_busy",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for s in record.steps:
            writer.writerow(
                [
                    s.model,
                    s.runtime,
                    s.concurrency,
                    s.repeat,
                    s.requests,
                    s.errors,
                    round(s.throughput_rps, 2),
                    *[round(v, 4) for v in s.latency_ms.values()],
                    round(s.accuracy, 4),
                    round(s.server_model_ms_p50, 4),
                    round(s.server_queue_ms_p50, 4),
                    s.generator_busy,
                ]
            )
