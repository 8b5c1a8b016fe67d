"""Turn a load-test results folder into ``report.md`` and a self-contained ``report.html``.

Percentiles are computed from the exact per-request samples (not Locust's rounded statistics),
pooled over the repeats of a step. Speedups pair two models repeat by repeat (they ran back to
back under the same conditions) and carry a 95 % t-interval over the repeats. Two kinds:

* variants: each variant against the first one named (``original``), on the same runtime;
* runtimes: each runtime against the first one named (``savedmodel``), on the same variant.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.claims import Claim, bottom_line, claims, variant_of
from loadtests.runner import PERCENTILES, LoadPlan

CONFIDENCE = 0.95
# A repeat whose throughput is further than this from the median of its level's repeats is
# flagged as drift: the run was noisy there.
DRIFT = 0.2


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval (NaN bounds with a single repeat)."""

    mean: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        """Whether the whole interval lies on one side of ``value``."""
        return not math.isnan(self.low) and (self.low > value or self.high < value)

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.2f}x"
        return f"{self.mean:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and two-sided t-interval of ``values`` (independent repeats)."""
    from scipy import stats

    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if len(data) < 2:
        return Interval(mean, math.nan, math.nan)
    half = float(
        stats.t.ppf((1 + confidence) / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    )
    return Interval(mean, mean - half, mean + half)


def percentiles(latency_ms: np.ndarray) -> dict[str, float]:
    """The report's latency percentiles of a sample."""
    return {f"p{q:g}": float(np.percentile(latency_ms, q)) for q in PERCENTILES}


@dataclass
class Level:
    """One model at one concurrency, all repeats together."""

    model: str
    concurrency: int
    latency: np.ndarray  # successful requests' exact latencies, pooled over repeats, ms
    throughput: list[float]  # per repeat, requests/s
    p50: list[float]  # per repeat
    p99: list[float]  # per repeat
    errors: int
    requests: int
    accuracy: float
    queue_ms: float
    model_ms: float
    generator_busy: float

    @property
    def percentiles(self) -> dict[str, float]:
        """Latency percentiles of the pooled samples."""
        return percentiles(self.latency) if len(self.latency) else {}


def load_levels(out_dir: Path) -> tuple[dict[str, Any], dict[tuple[str, int], Level]]:
    """The results record and, per (model, concurrency), the pooled measurements."""
    record = json.loads((out_dir / "results.json").read_text())
    levels: dict[tuple[str, int], Level] = {}
    for step in sorted(record["steps"], key=lambda s: s["repeat"]):
        with np.load(out_dir / step["samples"]) as data:
            ok = data["ok"].astype(bool)
            latency = data["latency_ms"][ok]
        key = (step.get("target") or step["model"], step["concurrency"])
        level = levels.setdefault(
            key, Level(key[0], key[1], np.empty(0), [], [], [], 0, 0, 0.0, 0.0, 0.0, 0.0)
        )
        level.latency = np.concatenate([level.latency, latency])
        level.throughput.append(step["throughput_rps"])
        level.p50.append(step["latency_ms"]["p50"])
        level.p99.append(step["latency_ms"]["p99"])
        level.errors += step["errors"]
        level.requests += step["requests"]
        n = len(level.throughput)
        # Running means over repeats of the per-step figures.
        level.accuracy += (step["accuracy"] - level.accuracy) / n
        level.queue_ms += (step["server_queue_ms_p50"] - level.queue_ms) / n
        level.model_ms += (step["server_model_ms_p50"] - level.model_ms) / n
        level.generator_busy = max(level.generator_busy, step["generator_busy"])
    return record, levels


@dataclass(frozen=True)
class Speedup:
    """How a candidate model compares with a baseline at one concurrency (>1 = faster)."""

    kind: str  # "variant" (same runtime) or "runtime" (same variant)
    candidate: str
    baseline: str
    concurrency: int
    throughput: Interval
    p50: Interval
    p99: Interval
    p50_diff_ms: float


def comparisons(record_plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, baseline, candidate) pairs of report targets along each axis swept.

    Along each axis (variant, runtime, protocol) with several values, every other value is
    compared with the first one named, the other two axes held fixed.
    """
    plan = LoadPlan.from_record(record_plan)
    axes: dict[str, tuple[str | None, ...]] = {
        "variant": plan.variants,
        "runtime": plan.runtimes or (None,),
        "protocol": plan.protocols,
    }
    pairs = []
    for kind, values in axes.items():
        others = [k for k in axes if k != kind]
        for combo in product(*(axes[k] for k in others)):
            fixed = dict(zip(others, combo, strict=True))
            names = [
                plan.label(str(c["variant"]), c["runtime"], str(c["protocol"]))
                for c in ({**fixed, kind: value} for value in values)
            ]
            pairs += [(kind, names[0], name) for name in names[1:]]
    return pairs


def speedups(record: dict[str, Any], levels: dict[tuple[str, int], Level]) -> list[Speedup]:
    """Per level and compared pair, the candidate against the baseline, repeat by repeat."""
    out = []
    for kind, baseline, candidate in comparisons(record["plan"]):
        for level in record["plan"]["concurrency"]:
            a, b = levels[(baseline, level)], levels[(candidate, level)]
            out.append(
                Speedup(
                    kind,
                    candidate,
                    baseline,
                    level,
                    mean_interval([y / x for x, y in zip(a.throughput, b.throughput, strict=True)]),
                    mean_interval([x / y for x, y in zip(a.p50, b.p50, strict=True)]),
                    mean_interval([x / y for x, y in zip(a.p99, b.p99, strict=True)]),
                    float(np.mean(b.p50) - np.mean(a.p50)),
                )
            )
    return out


def verdict(items: Sequence[Speedup]) -> list[str]:
    """Plain sentences: where the candidate is faster, slower, or not distinguishable."""
    lines = []
    for s in items:
        clients = f"{s.concurrency} client{'s' if s.concurrency > 1 else ''}"
        t = s.throughput
        if t.excludes(1.0):
            word = "more" if t.mean > 1 else "fewer"
            lines.append(
                f"At {clients}, {s.candidate} serves {t.mean:.2f}x the requests/s of {s.baseline} "
                f"({word}; 95% CI {t.low:.2f}-{t.high:.2f}), median latency "
                f"{s.p50_diff_ms:+.2f} ms."
            )
        elif math.isnan(t.low):
            lines.append(
                f"At {clients}, {s.candidate} serves {t.mean:.2f}x the requests/s of {s.baseline} "
                "(one repeat: no interval, so no claim)."
            )
        else:
            lines.append(
                f"At {clients}, {s.candidate} vs {s.baseline}: the difference ({t.mean:.2f}x "
                f"requests/s, median {s.p50_diff_ms:+.2f} ms) is within run-to-run noise "
                f"(95% CI {t.low:.2f}-{t.high:.2f} includes 1)."
            )
    return lines


def plots(
    record: dict[str, Any], levels: dict[tuple[str, int], Level], out_dir: Path
) -> dict[str, Path]:
    """The report's figures as PNG files; returns title -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, conc = models_of(record), record["plan"]["concurrency"]
    folder = out_dir / "plots"
    folder.mkdir(exist_ok=True)
    files: dict[str, Path] = {}

    colours = {v: f"C{i}" for i, v in enumerate(models)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in models:
        for q, style in (("p50", "-o"), ("p99", "--s")):
            ys = [levels[(v, c)].percentiles[q] for c in conc]
            ax.plot(conc, ys, style, color=colours[v], label=f"{v} {q}")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="latency (ms)",
        title="Latency percentiles vs concurrency",
    )
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    files["Latency percentiles vs concurrency"] = _save(fig, folder / "latency.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in models:
        means = [float(np.mean(levels[(v, c)].throughput)) for c in conc]
        errs = [float(np.std(levels[(v, c)].throughput)) for c in conc]
        ax.errorbar(conc, means, yerr=errs, fmt="-o", capsize=3, color=colours[v], label=v)
    ax.set(
        xscale="log",
        xlabel="concurrent clients",
        ylabel="requests/s",
        title="Throughput vs concurrency (mean ± sd over repeats)",
    )
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.legend()
    ax.grid(True, alpha=0.3)
    files["Throughput vs concurrency"] = _save(fig, folder / "throughput.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in models:
        xs = [float(np.mean(levels[(v, c)].throughput)) for c in conc]
        for q, style in (("p50", "-o"), ("p99", "--s")):
            ys = [levels[(v, c)].percentiles[q] for c in conc]
            ax.plot(xs, ys, style, color=colours[v], label=f"{v} {q}")
        for x, c in zip(xs, conc, strict=True):
            ax.annotate(f"c={c}", (x, levels[(v, c)].percentiles["p50"]), fontsize=7)
    ax.set(yscale="log", xlabel="requests/s", ylabel="latency (ms)", title="Latency vs throughput")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    files["Latency vs throughput"] = _save(fig, folder / "latency_vs_throughput.png")

    cols = min(len(conc), 4)
    rows = math.ceil(len(conc) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, c in zip(axes.flat, conc, strict=False):
        for v in models:
            data = np.sort(levels[(v, c)].latency)
            ax.plot(data, np.arange(1, len(data) + 1) / len(data), color=colours[v], label=v)
        ax.set(xscale="log", title=f"{c} clients", xlabel="latency (ms)", ylabel="fraction")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend()
    for ax in list(axes.flat)[len(conc) :]:
        ax.set_visible(False)
    fig.suptitle("Latency CDF at each concurrency")
    files["Latency CDF at each concurrency"] = _save(fig, folder / "cdf.png")

    # The trade-off: what each model costs in latency against what it gives in accuracy.
    figures = {e["name"]: e for e in record["variants"]}
    low = min(conc)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in models:
        entry = figures.get(variant_of(v), {})
        accuracy = entry.get("test_accuracy")
        if not isinstance(accuracy, int | float):
            continue
        p50 = levels[(v, low)].percentiles["p50"]
        macs = entry.get("macs") or 0
        ax.scatter(p50, accuracy * 100, s=40 + macs / 1e5, color=colours[v], alpha=0.7, label=v)
        ax.annotate(f"{v}\n{entry.get('parameters') or 0:,} params, {macs / 1e6:.1f}M MACs",
                    (p50, accuracy * 100), fontsize=7, xytext=(6, 4),
                    textcoords="offset points")  # fmt: skip
    ax.set(
        xlabel=f"p50 latency at {low} client{'s' if low > 1 else ''} (ms)",
        ylabel="test accuracy (%, 10,000 images)",
        title="Trade-off: accuracy vs served latency (marker area ~ multiply-adds)",
    )
    ax.grid(True, alpha=0.3)
    files["Trade-off: accuracy vs served latency"] = _save(fig, folder / "tradeoff.png")
    return files


def models_of(record: dict[str, Any]) -> list[str]:
    """The report's targets (models, with their protocol when several), in the plan's order."""
    plan = LoadPlan.from_record(record["plan"])
    return [plan.label_of(model, protocol) for model, protocol in plan.targets()]


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    for ax in fig.axes:  # log axes: plain numbers at 1-2-5 steps, not 2x10^0
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log":
                continue
            axis.set_major_formatter(ScalarFormatter())
            if "ms" in axis.get_label().get_text():  # latency: label 2 and 5 between decades
                axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                axis.set_minor_formatter(ScalarFormatter())
            else:  # concurrency: only the levels tested, set by the plot
                axis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


Table = tuple[list[str], list[list[str]]]


def drift(levels: dict[tuple[str, int], Level]) -> list[tuple[str, int, float, list[int]]]:
    """Per level with several repeats: (target, level, spread, flagged repeats). The spread is
    max/min - 1 of the repeats' throughput; flagged repeats are over DRIFT off the median."""
    out = []
    for (target, level), lv in levels.items():
        if len(lv.throughput) < 2:
            continue
        median = float(np.median(lv.throughput))
        flagged = [i + 1 for i, t in enumerate(lv.throughput) if abs(t / median - 1) > DRIFT]
        spread = max(lv.throughput) / min(lv.throughput) - 1 if min(lv.throughput) > 0 else 0.0
        out.append((target, level, spread, flagged))
    return out


def noise_line(levels: dict[tuple[str, int], Level]) -> str | None:
    """A verdict line when repeats drifted, with what to change; None for a steady run."""
    noisy = [(t, lv, flagged) for t, lv, _, flagged in drift(levels) if flagged]
    if not noisy:
        return None
    where = "; ".join(f"{t} at {lv} clients (repeat {', '.join(map(str, f))})"
                      for t, lv, f in noisy[:4])  # fmt: skip
    more = f" and {len(noisy) - 4} more" if len(noisy) > 4 else ""
    return (
        f"The run was noisy: {len(noisy)} level(s) had a repeat more than {DRIFT:.0%} off its "
        f"siblings' median ({where}{more}). Treat their intervals with care; use longer steps "
        "(--duration), more repeats (--repeats) or a quieter machine."
    )


def history_table(out_dir: Path, record: dict[str, Any]) -> tuple[str, Table] | None:
    """This run against the previous comparable one in the history, if there is one."""
    from loadtests import history

    path = history.default_path(out_dir.parent)
    before = history.previous_comparable(path, out_dir, record)
    if before is None:
        return None
    try:
        after = history.get(path, str(out_dir))
    except KeyError:
        return None
    rows = [
        [c.target, str(c.level), f"{c.before[0]:,.0f}", f"{c.after[0]:,.0f}",
         f"{c.ratio:.2f}x", "yes" if c.moved else "no (intervals overlap)"]
        for c in history.compare(path, before, after)
    ]  # fmt: skip
    title = (
        f"Against the previous comparable run ({Path(before.folder).name}, {before.created_at}): "
        "throughput, req/s (moved = 95% intervals over repeats do not overlap)"
    )
    return title, (["model", "clients", "then", "now", "now/then", "moved"], rows)


def tables(
    record: dict[str, Any],
    levels: dict[tuple[str, int], Level],
    items: list[Speedup],
    out_dir: Path | None = None,
) -> dict[str, Table]:
    """The report's tables, as (header, rows) in display order."""
    plan = record["plan"]
    models, conc = models_of(record), plan["concurrency"]
    out: dict[str, Table] = {}
    found = claims(record, items)
    if found:
        out["Claims: the seed study's against what was measured"] = (
            ["claim", "reference", "measured", "verdict"],
            [[c.claim, c.reference, c.measured, c.verdict] for c in found],
        )
    titles = {
        "variant": "Speedup of " + ", ".join(plan["variants"][1:]) + f" over "
        f"{plan['variants'][0]}, on each runtime (95% CI over repeats)",
        "runtime": "Runtimes compared on the same variant, against "
        f"{(plan.get('runtimes') or ['-'])[0]} (95% CI over repeats)",
        "protocol": "Protocols compared on the same model, against "
        f"{(plan.get('protocols') or ['native'])[0]} (95% CI over repeats)",
    }
    for kind, title in titles.items():
        rows = [
            [
                str(s.concurrency),
                s.candidate,
                s.baseline,
                str(s.throughput),
                str(s.p50),
                str(s.p99),
                f"{s.p50_diff_ms:+.3f}",
            ]
            for s in items
            if s.kind == kind
        ]
        if rows:
            header = ["clients", "model", "vs", "throughput ratio", "p50 speedup", "p99 speedup",
                      "p50 diff (ms)"]  # fmt: skip
            out[title] = (header, rows)
    header = [
        "clients",
        "model",
        "req/s",
        *[f"p{q:g} ms" for q in PERCENTILES],
        "errors",
        "right on digits sent",
        "test accuracy (10k)",
        "gen. CPU",
    ]
    test_accuracy = {e["name"]: e.get("test_accuracy") for e in record["variants"]}
    rows = []
    for c in conc:
        for v in models:
            lv = levels[(v, c)]
            rows.append(
                [
                    str(c),
                    v,
                    f"{np.mean(lv.throughput):,.0f}",
                    *[f"{lv.percentiles[f'p{q:g}']:.3f}" for q in PERCENTILES],
                    f"{lv.errors}/{lv.requests}",
                    f"{lv.accuracy:.2%}",
                    _percent(test_accuracy.get(variant_of(v))),
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
            p50 = lv.percentiles["p50"]
            rest = p50 - lv.model_ms - lv.queue_ms
            rows.append(
                [
                    str(c),
                    v,
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
    rows = []
    for entry in record["variants"]:
        rows.append(
            [
                entry["name"],
                str(entry["version"]),
                f"{entry.get('parameters') or 0:,}",
                f"{entry.get('macs') or 0:,}",
                f"{(entry.get('test_accuracy') or 0):.2%}",
                f"{(entry.get('savedmodel_bytes') or 0) / 1e6:.2f} MB",
                str(entry.get("epochs")),
                str(entry.get("device")),
            ]
        )
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
        rows,
    )
    tested = {(step["variant"], step["runtime"]) for step in record["steps"]}
    out["Runtimes served (device, model time at warm-up, difference from the SavedModel)"] = (
        ["model", "device", "batch-1 ms", "max abs diff"],
        [
            [
                r["model"],
                str(r.get("device")),
                f"{r['batch1_ms']:.3f}" if r.get("batch1_ms") is not None else "-",
                f"{r['max_abs_diff']:.1e}" if r.get("max_abs_diff") is not None else "-",
            ]
            for entry in record["variants"]
            for r in entry.get("runtimes", [])
            if (entry["name"], r["runtime"]) in tested
        ],
    )
    m = record["machine"]
    out["Drift between repeats (throughput spread = max/min - 1; flagged: over "
        f"{DRIFT:.0%} off the level's median)"] = (
        ["model", "clients", "spread", "flagged repeats"],
        [[t, str(lv), f"{spread:.0%}", ", ".join(map(str, f)) or "-"]
         for t, lv, spread, f in drift(levels)],
    )  # fmt: skip
    previous = history_table(out_dir, record) if out_dir is not None else None
    if previous is not None:
        out[previous[0]] = previous[1]
    out["Machine and settings"] = (
        ["what", "value"],
        [
            ["CPU", f"{m['cpu']} ({m['cores']} cores)"],
            ["platform", m["platform"]],
            ["Python / TensorFlow / Locust", f"{m['python']} / {m['tensorflow']} / {m['locust']}"],
            [
                "target",
                record["target"]
                + (" (started by the load test)" if record.get("started_server") else ""),
            ],
            ["server options", " ".join(record.get("server_args") or []) or "defaults"],
            [
                "load",
                f"closed loop, {', '.join(plan.get('protocols') or ['native'])} protocol(s), "
                f"{plan['mode']} payloads, {plan['duration_s']} s per step after "
                f"{plan['warmup_s']} s warm-up, {plan['repeats']} repeats, alternating order, "
                f"{plan['processes']} Locust process(es)",
            ],
            ["run", f"{record['created_at']} to {record['finished_at']}"],
        ],
    )
    return out


def _percent(value: object) -> str:
    return f"{value:.2%}" if isinstance(value, int | float) else "-"


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


def claims_of(out_dir: Path) -> tuple[str, list[Claim]]:
    """The bottom line and the claims table of a results folder (for the command line)."""
    record, levels = load_levels(out_dir)
    items = speedups(record, levels)
    return bottom_line(record, items), claims(record, items)


def build_report(out_dir: Path) -> tuple[Path, Path, list[str]]:
    """Write report.md, report.html and steps.csv into ``out_dir``; return them and the verdict."""
    record, levels = load_levels(out_dir)
    items = speedups(record, levels)
    lines = verdict(items)
    noisy = noise_line(levels)
    if noisy:
        lines.append(noisy)
    figures = plots(record, levels, out_dir)
    all_tables = tables(record, levels, items, out_dir)
    warnings = sorted({w for step in record["steps"] for w in step["warnings"]})
    title = "mnist-serve load test: " + " vs ".join(record["plan"]["variants"])
    if record["plan"].get("runtimes"):
        title += " on " + ", ".join(record["plan"]["runtimes"])
    protocols = record["plan"].get("protocols") or ["native"]
    if protocols != ["native"]:
        title += " over " + ", ".join(protocols)

    summary = bottom_line(record, items)
    md = [f"# {title}", "", f"**{summary}**" if summary else "", "", "## Verdict", "",
          *[f"- {line}" for line in lines], ""]  # fmt: skip
    if warnings:
        md += ["**Warnings:** " + "; ".join(warnings), ""]
    for name, table in all_tables.items():
        md += [f"## {name}", "", markdown_table(table), ""]
    for name, path in figures.items():
        md += [f"## {name}", "", f"![{name}]({path.relative_to(out_dir)})", ""]
    md += [
        "Raw data: `results.json` (every step), `steps.csv`, `samples/*.npz` (every request).",
        "",
    ]
    report_md = out_dir / "report.md"
    report_md.write_text("\n".join(md))

    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p><b>{html.escape(summary)}</b></p>" if summary else "",
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

    header = [
        "model",
        "runtime",
        "concurrency",
        "repeat",
        "requests",
        "errors",
        "throughput_rps",
        *[f"p{q:g}_ms" for q in PERCENTILES],
        "right_on_digits_sent",
        "server_model_ms_p50",
        "server_queue_ms_p50",
        "generator_busy",
    ]
    with (out_dir / "steps.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for s in record["steps"]:
            writer.writerow(
                [
                    s["model"],
                    s["runtime"],
                    s["concurrency"],
                    s["repeat"],
                    s["requests"],
                    s["errors"],
                    round(s["throughput_rps"], 2),
                    *[round(s["latency_ms"][f"p{q:g}"], 4) for q in PERCENTILES],
                    round(s["accuracy"], 4),
                    round(s["server_model_ms_p50"], 4),
                    round(s["server_queue_ms_p50"], 4),
                    s["generator_busy"],
                ]
            )
    return report_md, report_html, lines
