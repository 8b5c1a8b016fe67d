"""Write a load test's report: ``report.md``, a self-contained ``report.html`` and
``steps.csv``, for every mode: closed loop, open loop, or both. The sections that apply are
shown: an open-loop run on its own has no closed-loop steps (its ``results.json`` holds the
plan and the served models only), so its report has the claims, the open-loop tables with each
model's test accuracy, and links to LoadGen's summaries.

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

from loadtests import cost, steal
from loadtests.analysis import (
    against_previous,
    load_levels,
    load_openloop,
    noise_line,
    speedups,
)
from loadtests.answer import (
    CHANGES,
    COMPARISONS_HEADER,
    Answer,
    answer,
    comparison_rows,
    interval_note,
)
from loadtests.bottom_line import bottom_line
from loadtests.claims import Claim, claims, pair
from loadtests.openloop_results import OpenLoopRecord
from loadtests.plots import plots
from loadtests.protocols import Protocol
from loadtests.rate_claims import rate_claims
from loadtests.results import Percentiles, RunRecord
from loadtests.tables import Previous, Table, failure_lines, previous_tables, tables
from loadtests.tuned_compare import tuned_lines, tuned_tables


def relative_link(previous: Previous, out_dir: Path, page: str) -> str:
    """A link from this report to the previous run's ``page`` (relative when the two folders
    are siblings, as under runs/, so it also works on the web page's /reports/)."""
    try:
        return (Path(os.path.relpath(previous.folder, out_dir)) / page).as_posix()
    except ValueError:  # another drive
        return (previous.folder / page).as_posix()


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
    verdict: list[str]  # notes beside the comparisons: open loop, noise, the previous run
    answer: Answer | None
    comparisons: Table


def build_report(out_dir: Path) -> Report:
    """Write report.md, report.html and steps.csv into ``out_dir``."""
    record, levels = load_levels(out_dir)
    openloop = load_openloop(out_dir)
    closed = bool(record.steps)  # False: an open-loop run on its own
    items = speedups(record, levels) if closed else []
    found = claims(record, items)
    if openloop is not None and pair(record) is not None:
        found += rate_claims(openloop, record.plan)
    summary = bottom_line(record, items, openloop)
    costed = cost.load(out_dir)
    price = cost.bottom_line(costed) if costed is not None else ""
    if price:  # the cost per inference, after the speedup
        summary = " ".join(part for part in (summary, price) if part)
    the_answer = answer(record, levels, items, openloop, price)
    compared_rows: Table = (COMPARISONS_HEADER, comparison_rows(record, items))
    lines = failure_lines(record)
    if openloop is not None:
        lines += [
            f"Open loop: {c.subject}, highest Poisson arrival rate within {openloop.slo}: "
            f"{c.measured} ({c.verdict})."
            for c in rate_claims(openloop, record.plan)
        ]
    lines += tuned_lines(out_dir)
    noisy = noise_line(levels) if record.plan.precision <= 0 else None  # paired: it cancels
    if noisy:
        lines.append(noisy)
    compared = against_previous(out_dir, record) if closed else None
    previous = previous_tables(compared) if compared is not None else None
    if previous is not None:
        lines += previous.lines
    figures = plots(record, levels, out_dir, openloop)
    all_tables = tables(record, levels, items, found, previous, openloop)
    if costed is not None:
        all_tables.update([cost.cost_table(costed)])
    all_tables.update(tuned_tables(out_dir))
    warnings = sorted({w for step in record.steps for w in step.warnings})
    if stolen := steal.warning([step.cpu_steal for step in record.steps], "windows"):
        warnings.append(stolen)
    plan = record.plan
    title = "mnist-serve load test: " + " vs ".join(plan.variants)
    if not closed:
        title = "mnist-serve open-loop load test: " + " vs ".join(plan.variants)
    if plan.runtimes:
        title += " on " + ", ".join(plan.runtimes)
    if plan.protocols != (Protocol.NATIVE,):
        title += " over " + ", ".join(plan.protocols)

    md = [f"# {title}", "", f"**{summary}**" if summary else "", ""]
    if previous is not None:
        link = relative_link(previous, out_dir, "report.md")
        md += [f"Previous comparable run: [{previous.name}]({link})", ""]
    if the_answer is not None:
        md += ["## The answer", "", *the_answer.lines(), ""]
    if compared_rows[1]:
        md += ["## Comparisons", "", markdown_table(compared_rows), "", interval_note(record), ""]
    if lines:
        md += ["## Notes", "", *[f"- {line}" for line in lines], ""]
    if warnings:
        md += ["**Warnings:** " + "; ".join(warnings), ""]
    for name, table in all_tables.items():
        md += [f"## {name}", "", markdown_table(table), ""]
    for name, path in figures.items():
        md += [f"## {name}", "", f"![{name}]({path.relative_to(out_dir)})", ""]
    logs = loadgen_logs(openloop)
    if logs:
        md += ["## LoadGen's summaries", "", *[f"- [{name}]({path})" for name, path in logs], ""]
    if closed:
        raw = "`results.json` (every step), `steps.csv`, `samples/*.npz` (every request)"
    else:
        raw = "`results.json` (the plan and the models served)"
    if openloop is not None:
        raw += ", `openloop.json` (every open-loop run)"
    if costed is not None:
        raw += ", `cost.json` (the cost per inference)"
    if logs:
        raw += ", `loadgen/` (LoadGen's logs of every run)"
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
    ]
    if the_answer is not None:
        parts += ["<h2>The answer</h2>", answer_html(the_answer)]
    if compared_rows[1]:
        parts += ["<h2>Comparisons</h2>", html_table(compared_rows)]
        parts.append(f"<p>{html.escape(interval_note(record))}</p>")
    if lines:
        parts += ["<h2>Notes</h2><ul>", *[f"<li>{html.escape(line)}</li>" for line in lines]]
        parts.append("</ul>")
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
    if logs:
        links = "".join(
            f'<li><a href="{html.escape(path)}">{html.escape(name)}</a></li>' for name, path in logs
        )
        parts += ["<h2>LoadGen's summaries</h2>", f"<ul>{links}</ul>"]
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
    if closed:
        write_steps_csv(record, out_dir / "steps.csv")
    return Report(report_md, report_html, summary, found, lines, the_answer, compared_rows)


def answer_html(found: Answer) -> str:
    """The answer block as HTML (the Markdown's bold marks dropped)."""

    def text(line: str) -> str:
        return html.escape(line.replace("**", ""))

    items = [f"<li><b>{name}:</b> {text(value)}</li>" for name, value in found.facts()]
    if found.changes:
        inner = "".join(f"<li>{text(change)}</li>" for change in found.changes)
        items.append(f"<li><b>{CHANGES}:</b><ul>{inner}</ul></li>")
    name = html.escape(str(found.recommended))
    head = f"<p class=answer><b>Deploy {name}</b>: {text(found.why)}.</p>"
    return head + f"<ul>{''.join(items)}</ul>"


def loadgen_logs(openloop: OpenLoopRecord | None) -> list[tuple[str, str]]:
    """(run, LoadGen summary path relative to the run folder) for every LoadGen run."""
    if openloop is None:
        return []
    out = []
    for p in openloop.points:
        if p.first is not None and p.first.summary:
            out.append((f"{p.model} at {p.rate:,.1f} req/s, first run", p.first.summary))
        if p.loadgen is not None and p.loadgen.summary:
            out.append((f"{p.model} at {p.rate:,.1f} req/s: {p.verdict}", p.loadgen.summary))
    return out


def write_steps_csv(record: RunRecord, path: Path) -> None:
    """Every step's figures, one row each."""
    header = [
        "model",
        "runtime",
        "protocol",
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
        "cpu_steal",
        "failed",
        "failures",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for s in record.steps:
            writer.writerow(
                [
                    s.model,
                    s.runtime,
                    str(s.protocol),
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
                    "" if s.cpu_steal is None else s.cpu_steal,
                    int(s.failed),
                    s.failure_line if s.errors or s.failed else "",
                ]
            )
