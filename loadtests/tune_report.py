"""``mnist-serve tune``'s report: ``tune.json``, ``tune.md`` and ``tune.html``, a sentence per
model (:func:`verdict`) and its trials, best first."""

from __future__ import annotations

import html
import math
from pathlib import Path

from pydantic import TypeAdapter

from loadtests.rate_claims import WHY_LOWER_BOUND
from loadtests.report import html_table, markdown_table
from loadtests.tables import Table
from loadtests.tune_results import DEFAULTS, ModelTuning, Trial, TuneRecord, grid_size


def trials_table(tuning: ModelTuning) -> Table:
    """A model's trials, best first (labelled so only if it met the SLO)."""
    best = tuning.chosen
    header = ["max batch", "max wait ms", "intra-op threads", "workers", "max rate in SLO",
              "p50 c=1 ms", "runs", "s", ""]  # fmt: skip
    rows = [
        [
            str(t.config.max_batch_size),
            f"{t.config.max_wait_ms:g}",
            str(t.config.intra_op_threads),
            str(t.config.workers or "per core"),
            f"{t.max_rate:,.0f}",
            f"{t.p50_ms:.3f}",
            str(t.runs),
            f"{t.seconds:.0f}",
            "best" if best and t.config == best.config else "defaults" * (t.config == DEFAULTS),
        ]
        for t in sorted(
            tuning.pooled(),
            key=lambda t: (best is not None and t.config == best.config, Trial.key(t)),
            reverse=True,
        )
    ]
    return header, rows


# The rate search's lower bounds, in the load test's reports' words (one place).
LOWER_BOUND = f"a configuration's rate is a lower bound when it {WHY_LOWER_BOUND}"
UNBOUNDED = "the client kept up with no calibration rate, so no miss bounds a rate"


def verdict(tuning: ModelTuning) -> str:
    """One model's outcome in a sentence."""
    best, base = tuning.best, tuning.at_defaults
    if best is None:
        why = "every trial's service failed" if tuning.failed else "no trial fitted in the budget"
        return f"{tuning.model}: {why}; nothing saved."
    if not best.met_slo:
        lowest = min((p.rate for t in tuning.trials for p in t.points), default=math.nan)
        met_once = {t.config for t in tuning.trials if t.met_slo}
        confirmed = {t.config for t in tuning.pooled() if t.runs > 1}
        if met_once & confirmed:
            why = "the configurations that met the SLO once missed it when measured again"
        elif met_once:
            why = "the configurations that met the SLO were not measured again to confirm"
        else:
            why = (
                f"no configuration met the SLO, even at the lowest rate tried ({lowest:,.0f} req/s)"
            )
        return (
            f"{tuning.model}: {why}; the lowest p50 at one client was {best.p50_ms:.3f} ms "
            f"({best.config}); nothing saved (a tuned.json entry saved before is left as it "
            "was). Loosen the SLO or look at the service's log."
        )
    against = f" (defaults: {base.max_rate:,.0f} req/s, p50 {base.p50_ms:.3f} ms)" if base else ""
    leader, close = tuning.contenders()
    tie = (
        f" The rate search did not separate {len(close) + 1} configurations (up to "
        f"{leader.max_rate:,.0f} req/s; {UNBOUNDED if tuning.unmeasurable else LOWER_BOUND}), so "
        "the lowest p50 at one client chose among them."
        if leader is not None and close
        else ""
    )
    return (
        f"{tuning.model}: best {best.config}: {best.max_rate:,.0f} req/s within the SLO, p50 "
        f"{best.p50_ms:.3f} ms at one client{against}; saved to {tuning.saved}.{tie}"
    )


def write_tune_report(record: TuneRecord, out: Path) -> tuple[Path, Path, str]:
    """tune.json, tune.md and tune.html; returns the pages and a one-line summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_bytes(TypeAdapter(TuneRecord).dump_json(record, indent=2) + b"\n")
    title = f"mnist-serve tune: {', '.join(m.model for m in record.models)}"
    intro = (
        f"Coordinate search under {record.slo} within a {record.budget_s:.0f} s budget "
        f"({record.spent_s:.0f} s spent); the full grid holds {grid_size()} configurations."
        + (f" {record.client.search_note}" if record.client else "")
    )
    md = [f"# {title}", "", intro, ""]
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for tuning in record.models:
        said = verdict(tuning)
        skipped = (
            f"Skipped for the budget: {', '.join(tuning.skipped)}."
            if tuning.skipped
            else "Nothing skipped for the budget."
        )
        skipped += f" Not visited by the coordinate search: {tuning.untried} grid configurations."
        if tuning.failed:
            skipped += f" Failed to serve: {'; '.join(tuning.failed)}."
        table = trials_table(tuning)
        md += [f"## {tuning.model}", "", said, "", skipped, "", markdown_table(table), ""]
        parts += [
            f"<h2>{html.escape(tuning.model)}</h2><p><b>{html.escape(said)}</b></p>",
            f"<p>{html.escape(skipped)}</p>",
            html_table(table),
        ]
    (out / "tune.md").write_text("\n".join(md))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f3f3f3}"
    )
    page = out / "tune.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    summary = "tune: " + "; ".join(
        f"{m.model} {m.chosen.config}"
        if m.chosen
        else f"{m.model} ({'none met the SLO' if m.best else 'none'})"
        for m in record.models
    )
    return out / "tune.md", page, summary
