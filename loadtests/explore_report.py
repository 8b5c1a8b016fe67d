"""The explore report: ``explore.md``, a self-contained ``explore.html`` and the Pareto plot.

What it shows, from an :class:`~loadtests.explore_results.ExploreRecord`:

* the Pareto front of test accuracy against served p50 at one client, and against the highest
  Poisson rate within the SLO (:mod:`loadtests.pareto_plot` draws it; when most models met
  every rate tried, its second panel shows throughput at 32 clients instead);
* every model in a table sorted by its Pareto ranks on the figure's two panels (the same
  :meth:`~loadtests.pareto_plot.Panel.ranks`, so the table's fronts are the figure's);
* Spearman's rank correlation of served p50 with parameters, with MACs and with model-alone
  time, each with its 95 % interval (:func:`modelrepo.stats.spearman`), over all models and
  within each runtime: "do fewer parameters mean faster when served?" in numbers;
* findings per design choice (kernels, strides, padding, pooling), as the reference study
  reports them (parameters, MACs, accuracy, training time) with served time added;
* a warning naming every model that answered errors under load, whose figures count the
  successes only (:func:`errors_warning`).
"""

from __future__ import annotations

import base64
import html
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests.explore_results import ExploreRecord, ModelMeasurement
from loadtests.pareto_plot import Panel, panels, pareto_figure
from loadtests.report import html_table, markdown_table
from loadtests.tables import Table
from modelrepo.stats import Correlation, spearman

DESIGN_FAMILIES = ("kernels", "strides", "padding", "pooling")


class ExploreError(Exception):
    """Explore has nothing to report on."""


@dataclass(frozen=True)
class Ranked:
    """A model with its Pareto ranks: accuracy vs p50 at one client, and vs the second panel's
    speed (the highest rate within the SLO, or throughput at 32 clients: :func:`panels`)."""

    m: ModelMeasurement
    rank_p50: int
    rank_speed: int


@dataclass(frozen=True)
class ExploreReport:
    """A written explore report: its files, the ranked models, the correlations, a summary."""

    markdown: Path
    html: Path
    json: Path
    ranked: list[Ranked]
    correlations: dict[str, dict[str, Correlation]]  # scope -> against -> correlation
    summary: str
    answer: str
    warning: str = ""  # the models that answered errors, if any (errors_warning)


def rank(models: Sequence[ModelMeasurement], p50: Panel, speed: Panel) -> list[Ranked]:
    """Both Pareto ranks of every model, sorted by rank (p50 front first), then p50."""
    pairs = zip(models, p50.ranks(models), speed.ranks(models), strict=True)
    ranked = [Ranked(m, a, b) for m, a, b in pairs]
    return sorted(ranked, key=lambda r: (r.rank_p50, r.rank_speed, r.m.c1_latency_ms.p50))


AGAINST: dict[str, Callable[[ModelMeasurement], float]] = {
    "parameters": lambda m: m.parameters,
    "MACs": lambda m: m.macs,
    "model alone, batch 1": lambda m: m.alone_b1_ms,
}


def correlations(models: Sequence[ModelMeasurement]) -> dict[str, dict[str, Correlation]]:
    """Spearman's rho of served p50 (one client) with each of :data:`AGAINST`, over all models
    and within each runtime."""
    scopes = {"all models": list(models)}
    for runtime in dict.fromkeys(m.runtime for m in models):
        scopes[f"on {runtime}"] = [m for m in models if m.runtime == runtime]
    return {
        scope: {
            name: spearman([get(m) for m in group], [m.c1_latency_ms.p50 for m in group])
            for name, get in AGAINST.items()
        }
        for scope, group in scopes.items()
    }


SERVED: dict[str, Callable[[ModelMeasurement], float]] = {
    "p50 at 1 client": lambda m: m.c1_latency_ms.p50,
    "req/s at 32 clients": lambda m: m.c32_rps,
    "highest rate within the SLO": lambda m: m.max_rate,
}


def served_correlations(models: Sequence[ModelMeasurement]) -> dict[str, dict[str, Correlation]]:
    """Over all models, Spearman's rho of each served measure with each of :data:`AGAINST`
    (a positive rho for a latency means bigger is slower; for a rate, bigger is faster)."""
    return {
        measure: {
            name: spearman([against(m) for m in models], [served(m) for m in models])
            for name, against in AGAINST.items()
        }
        for measure, served in SERVED.items()
    }


def describe(c: Correlation) -> str:
    """``0.62 [0.31, 0.81] (n=16)``."""
    if math.isnan(c.rho):
        return f"- (n={c.n})"
    if math.isnan(c.low):
        return f"{c.rho:+.2f} (n={c.n}, no interval)"
    return f"{c.rho:+.2f} [{c.low:+.2f}, {c.high:+.2f}] (n={c.n})"


def answer(found: dict[str, dict[str, Correlation]]) -> str:
    """The question "do fewer parameters mean faster when served?", answered from the
    correlations."""
    overall = found["all models"]["parameters"]
    within = {s: c["parameters"] for s, c in found.items() if s != "all models"}
    held = [s for s, c in within.items() if not math.isnan(c.low) and c.low > 0]
    if math.isnan(overall.rho):
        return "Too few models to say whether fewer parameters mean faster when served."
    if not math.isnan(overall.low) and overall.low > 0:
        verdict = "yes, on the whole"
    elif not math.isnan(overall.high) and overall.high < 0:
        verdict = "no: more parameters went with *lower* served latency"
    else:
        verdict = "not established (the interval includes no correlation)"
    alone = found["all models"]["model alone, batch 1"]
    return (
        f"Do fewer parameters mean faster when served? {verdict}: Spearman's rho of served p50 "
        f"at one client with parameters is {describe(overall)}; with model-alone time "
        f"{describe(alone)}. Within one runtime the parameters' link holds on "
        f"{len(held)} of {len(within)} runtimes ({', '.join(held) or 'none'})."
    )


def fmt(value: float, digits: int = 2) -> str:
    """A figure, or '-' for NaN."""
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def rate_text(m: ModelMeasurement) -> str:
    """The highest rate within the SLO; ">=" when it is a lower bound, not the model's limit:
    every rate tried met it, or it missed only with the client late (``first_missed`` None)."""
    if math.isnan(m.max_rate):
        return "-"
    return f"{'>=' if m.first_missed is None and m.max_rate > 0 else ''}{m.max_rate:,.0f}"


def errors_text(m: ModelMeasurement) -> str:
    """A model's failed closed-loop requests, with their share when it was counted."""
    share = m.error_share
    return f"{m.errors:,}" + ("" if math.isnan(share) or not m.errors else f" ({share:.1%})")


def errors_warning(models: Sequence[ModelMeasurement]) -> str:
    """A warning naming the models that answered errors (their figures count successes only),
    or '' when none did."""
    failing = [m for m in models if m.errors]
    if not failing:
        return ""
    named = ", ".join(f"{m.model} ({errors_text(m)})" for m in failing)
    return (
        f"Warning: {len(failing)} of {len(models)} models answered errors under load: {named}. "
        "Their latency and throughput count the successes only, so they may look faster than "
        "they serve: read the service's log before ranking them."
    )


def ranked_table(ranked: Sequence[Ranked], speed: Panel) -> Table:
    """Every model, sorted by Pareto rank."""
    header = [
        "rank (p50)", f"rank ({speed.short})", "model", "params", "MACs", "test acc", "p50 c=1 ms",
        "p99 c=1 ms", "req/s c=32", "max rate in SLO", "alone b1 ms", "alone b32 ms", "errors",
    ]  # fmt: skip
    rows = [
        [
            str(r.rank_p50),
            str(r.rank_speed),
            r.m.model,
            f"{r.m.parameters:,}",
            f"{r.m.macs:,}",
            f"{r.m.test_accuracy:.2%}",
            fmt(r.m.c1_latency_ms.p50, 3),
            fmt(r.m.c1_latency_ms.p99, 3),
            fmt(r.m.c32_rps, 0),
            rate_text(r.m),
            fmt(r.m.alone_b1_ms, 3),
            fmt(r.m.alone_b32_ms, 3),
            errors_text(r.m),
        ]
        for r in ranked
    ]
    return header, rows


def correlation_table(found: dict[str, dict[str, Correlation]]) -> Table:
    """Spearman's rho of served p50 with each figure, per scope, with 95 % intervals."""
    header = ["served p50 (c=1) against", *found]
    rows = [[name, *(describe(found[s][name]) for s in found)] for name in AGAINST]
    return header, rows


def served_table(found: dict[str, dict[str, Correlation]]) -> Table:
    """Every served measure against each figure, over all models."""
    header = ["against", *found]
    rows = [[name, *(describe(found[m][name]) for m in found)] for name in AGAINST]
    return header, rows


def family_findings(models: Sequence[ModelMeasurement]) -> list[tuple[str, Table, str]]:
    """Per design choice: its variants side by side, and what served time adds."""
    out = []
    runtimes = list(dict.fromkeys(m.runtime for m in models))
    for family in DESIGN_FAMILIES:
        group = [m for m in models if m.family == family]
        if not group:
            continue
        variants = list(dict.fromkeys(m.variant for m in group))
        header = ["variant", "setting", "params", "MACs", "test acc", "s/epoch"]
        header += [f"p50 {r} ms" for r in runtimes] + ["best max rate"]
        rows, served = [], {}
        for v in variants:
            ms = {m.runtime: m for m in group if m.variant == v}
            first = next(iter(ms.values()))
            served[v] = statistics.median(m.c1_latency_ms.p50 for m in ms.values())
            best = max(ms.values(), key=lambda m: m.max_rate)
            rows.append(
                [
                    v, first.description.rsplit(family, 1)[-1].strip(), f"{first.parameters:,}",
                    f"{first.macs:,}", f"{first.test_accuracy:.2%}", fmt(first.epoch_seconds, 1),
                    *(fmt(ms[r].c1_latency_ms.p50, 3) if r in ms else "-" for r in runtimes),
                    f"{rate_text(best)} ({best.runtime})",
                ]
            )  # fmt: skip
        info = {m.variant: m for m in group}
        accurate = max(variants, key=lambda v: info[v].test_accuracy)
        timed = [v for v in variants if not math.isnan(served[v])] or variants  # failed: NaN
        fastest = min(timed, key=lambda v: served[v])
        slowest = max(served[v] for v in timed)
        lightest = min(variants, key=lambda v: info[v].parameters)
        cheapest = min(variants, key=lambda v: info[v].macs)
        rho = spearman([info[v].macs for v in variants], [served[v] for v in variants])
        text = (
            f"{family}: most accurate {accurate} ({info[accurate].test_accuracy:.2%}); fewest "
            f"parameters {lightest}, fewest MACs {cheapest}; fastest served (median p50 over "
            f"runtimes) {fastest} at {served[fastest]:.3f} ms against {slowest:.3f} "
            f"ms for the slowest. Rank correlation of MACs with served p50 across the "
            f"{len(variants)} settings: {describe(rho)}."
        )
        out.append((family, (header, rows), text))
    return out


def write_explore_report(
    record: ExploreRecord, out: Path, models: set[str], family: str
) -> ExploreReport:
    """Write explore.md, explore.html and the plot for ``models`` of ``record``."""
    chosen = [m for m in record.measurements if m.model in models]
    if not chosen:
        raise ExploreError(
            "no model measured to report on: is the family exported on those runtimes?"
        )
    p50, speed = panels(chosen, str(record.slo))
    ranked = rank(chosen, p50, speed)
    found = correlations(chosen)
    said = answer(found)
    front = [r.m.model for r in ranked if r.rank_p50 == 1]
    warning = errors_warning(chosen)
    failing = sum(1 for m in chosen if m.errors)
    summary = (
        f"explore {family}: {len(chosen)} models, {record.slo}; Pareto front (accuracy vs p50): "
        f"{', '.join(front)}" + (f"; {failing} with errors" if failing else "")
    )
    figure = pareto_figure(chosen, str(record.slo), out / "pareto.png")
    title = f"mnist-serve explore: {family}"
    b = record.budget
    method = (
        f"Each model served alone in turn by one service on {record.machine.cpu} "
        f"({record.machine.cores} cores): one closed-loop client for {b.c1_s:g} s, 32 for "
        f"{b.c32_s:g} s (after {b.warmup_s:g} s warm-ups), then Poisson arrivals at "
        f"{', '.join(f'{r:g}' for r in b.rates)} req/s and {b.bisections} bisection(s) for the "
        f"highest rate within {record.slo} ({b.rate_s:g} s / at least {b.min_requests} requests "
        f"a run); model alone: median in-process call, one thread."
        + (f" {record.client.search_note}" if record.client else "")
        + (" QUICK budget: a shape check, not figures to quote." if chosen[0].quick else "")
    )
    tables = {"Models by Pareto rank": ranked_table(ranked, speed)}
    tables["Rank correlation (Spearman, 95% interval) of served p50"] = correlation_table(found)
    tables["Every served measure, all models (Spearman, 95% interval)"] = served_table(
        served_correlations(chosen)
    )
    findings = family_findings(chosen)
    md = [f"# {title}", "", f"**{said}**", ""] + ([f"**{warning}**", ""] if warning else [])
    md += [method, "", "![Pareto front](pareto.png)", ""]
    for name, table in tables.items():
        md += [f"## {name}", "", markdown_table(table), ""]
    if findings:
        md += ["## Findings per design choice", ""]
        for name, table, text in findings:
            md += [f"### {name}", "", text, "", markdown_table(table), ""]
    md += ["Raw data: `explore.json` (every model, every open-loop run).", ""]
    (out / "explore.md").write_text("\n".join(md))
    encoded = base64.b64encode(figure.read_bytes()).decode()
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p><b>{html.escape(said)}</b></p>",
        *([f'<p class="warning"><b>{html.escape(warning)}</b></p>'] if warning else []),
        f"<p>{html.escape(method)}</p>",
        f'<img alt="Pareto front" src="data:image/png;base64,{encoded}">',
    ]
    for name, table in tables.items():
        parts += [f"<h2>{html.escape(name)}</h2>", html_table(table)]
    if findings:
        parts.append("<h2>Findings per design choice</h2>")
        for name, table, text in findings:
            parts += [f"<h3>{html.escape(name)}</h3><p>{html.escape(text)}</p>", html_table(table)]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%}.warning{color:#a40000}"
    )
    page = out / "explore.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    return ExploreReport(
        out / "explore.md", page, out / "explore.json", ranked, found, summary, said, warning
    )
