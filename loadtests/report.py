"""Turn a load-test results folder into ``report.md`` and a self-contained ``report.html``.

Percentiles are computed from the exact per-request samples (not Locust's rounded statistics),
pooled over the repeats of a step. Speedups pair two models repeat by repeat (they ran back to
back under the same conditions) and carry a 95 % t-interval over the repeats. Two kinds:

* variants: each variant against the first one named (``original``), on the same runtime;
* runtimes: each runtime against the first one named (``savedmodel``), on the same variant.

An open-loop sweep written into the same folder (``openloop.json``) joins the report: the
highest arrival rate each model sustains within the SLO, every run of the search, and a claim.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from loadtests import slo
from loadtests.claims import Claim, bottom_line, claims, rate_claims, variant_of
from loadtests.results import OPENLOOP_FILE, LoadPlan, OpenLoopRecord, Percentiles, RunRecord
from loadtests.stats import Interval, ratio_interval

# A repeat whose throughput is further than this from the median of its level's repeats is
# flagged as drift: the run was noisy there.
DRIFT = 0.2


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
    def percentiles(self) -> Percentiles:
        """Latency percentiles of the pooled samples."""
        return Percentiles.of(self.latency)


Levels = dict[tuple[str, int], Level]


def load_levels(out_dir: Path) -> tuple[RunRecord, Levels]:
    """The results record and, per (target, concurrency), the pooled measurements."""
    record = RunRecord.load(out_dir)
    levels: Levels = {}
    for step in sorted(record.steps, key=lambda s: s.repeat):
        with np.load(out_dir / step.samples) as data:
            ok = data["ok"].astype(bool)
            latency = data["latency_ms"][ok]
        key = (step.target or step.model, step.concurrency)
        level = levels.setdefault(
            key, Level(key[0], key[1], np.empty(0), [], [], [], 0, 0, 0.0, 0.0, 0.0, 0.0)
        )
        level.latency = np.concatenate([level.latency, latency])
        level.throughput.append(step.throughput_rps)
        level.p50.append(step.latency_ms.p50)
        level.p99.append(step.latency_ms.p99)
        level.errors += step.errors
        level.requests += step.requests
        n = len(level.throughput)
        # Running means over repeats of the per-step figures.
        level.accuracy += (step.accuracy - level.accuracy) / n
        level.queue_ms += (step.server_queue_ms_p50 - level.queue_ms) / n
        level.model_ms += (step.server_model_ms_p50 - level.model_ms) / n
        level.generator_busy = max(level.generator_busy, step.generator_busy)
    return record, levels


def load_openloop(out_dir: Path) -> OpenLoopRecord | None:
    """The open-loop sweep run into the same folder, if there is one."""
    return OpenLoopRecord.load(out_dir) if (out_dir / OPENLOOP_FILE).is_file() else None


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


def comparisons(plan: LoadPlan) -> list[tuple[str, str, str]]:
    """(kind, baseline, candidate) pairs of report targets along each axis swept.

    Along each axis (variant, runtime, protocol) with several values, every other value is
    compared with the first one named, the other two axes held fixed.
    """
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


def speedups(record: RunRecord, levels: Levels) -> list[Speedup]:
    """Per level and compared pair, the candidate against the baseline, repeat by repeat."""
    out = []
    for kind, baseline, candidate in comparisons(record.plan):
        for level in record.plan.concurrency:
            a, b = levels[(baseline, level)], levels[(candidate, level)]
            out.append(
                Speedup(
                    kind,
                    candidate,
                    baseline,
                    level,
                    ratio_interval(a.throughput, b.throughput),
                    ratio_interval(b.p50, a.p50),  # latency: lower is faster
                    ratio_interval(b.p99, a.p99),
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
    record: RunRecord, levels: Levels, out_dir: Path, openloop: OpenLoopRecord | None = None
) -> dict[str, Path]:
    """The report's figures as PNG files; returns title -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, conc = record.plan.target_labels(), record.plan.concurrency
    folder = out_dir / "plots"
    folder.mkdir(exist_ok=True)
    files: dict[str, Path] = {}

    def latency(v: str, c: int, q: str) -> float:
        return float(getattr(levels[(v, c)].percentiles, q))

    colours = {v: f"C{i}" for i, v in enumerate(models)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in models:
        for q, style in (("p50", "-o"), ("p99", "--s")):
            ax.plot(conc, [latency(v, c, q) for c in conc], style, color=colours[v],
                    label=f"{v} {q}")  # fmt: skip
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
            ax.plot(xs, [latency(v, c, q) for c in conc], style, color=colours[v],
                    label=f"{v} {q}")  # fmt: skip
        for x, c in zip(xs, conc, strict=True):
            ax.annotate(f"c={c}", (x, latency(v, c, "p50")), fontsize=7)
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

    files["Trade-off: accuracy vs served latency"] = tradeoff_plot(
        record, levels, openloop, colours, folder / "tradeoff.png"
    )
    return files


def tradeoff_plot(
    record: RunRecord,
    levels: Levels,
    openloop: OpenLoopRecord | None,
    colours: dict[str, str],
    path: Path,
) -> Path:
    """What each model costs against what it gives: test accuracy against p50 at the lowest
    load and, with an open-loop sweep, against the highest arrival rate within the SLO.
    Marker area grows with multiply-adds; the label gives parameters and MACs."""
    import matplotlib.pyplot as plt

    low = min(record.plan.concurrency)
    panels = 2 if openloop is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)

    def mark(ax: Any, models: Sequence[str], model: str, x: float) -> None:
        served = record.variant(variant_of(model))
        if served is None or served.test_accuracy is None:
            return
        macs, y = served.macs or 0, served.test_accuracy * 100
        ax.scatter(
            x,
            y,
            s=40 + macs / 1e5,
            color=colours.get(model, "C0"),
            alpha=0.7,
            label=f"{model}: {served.parameters or 0:,} params, {macs / 1e6:.1f}M MACs",
        )
        # Models of one variant share an accuracy: alternate their labels above and below.
        rank = [m for m in models if variant_of(m) == served.name].index(model)
        ax.annotate(model, (x, y), fontsize=7, xytext=(6, 6 if rank % 2 == 0 else -12),
                    textcoords="offset points")  # fmt: skip

    def finish(ax: Any, xlabel: str, title: str) -> None:
        ax.set(xlabel=xlabel, ylabel="test accuracy (%, 10,000 images)", title=title)
        ax.margins(x=0.2, y=0.25)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no test accuracy known: nothing to label
            ax.legend(fontsize=7, loc="best")

    ax = axes[0][0]
    for model in record.plan.target_labels():
        mark(ax, record.plan.target_labels(), model, levels[(model, low)].percentiles.p50)
    finish(ax, f"p50 latency at {low} client{'s' if low > 1 else ''} (ms)",
           "Accuracy vs latency at the lowest load")  # fmt: skip
    if openloop is not None:
        ax = axes[0][1]
        for model in openloop.models:
            mark(ax, openloop.models, model, openloop.max_rate[model])
        finish(ax, f"highest Poisson arrival rate within {openloop.slo} (req/s)",
               "Accuracy vs capacity at the latency target")  # fmt: skip
    fig.suptitle("Trade-off (marker area ~ multiply-adds)")
    return _save(fig, path)


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


def drift(levels: Levels) -> list[tuple[str, int, float, list[int]]]:
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


def noise_line(levels: Levels) -> str | None:
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


@dataclass(frozen=True)
class Previous:
    """This run against the previous comparable one in the history."""

    tables: dict[str, Table]
    lines: list[str]  # for the verdict: did the speedup move?
    name: str  # "run 3 (demo-20261124-..., 2026-11-24T...)"
    folder: Path  # where its report is


def against_previous(out_dir: Path, record: RunRecord) -> Previous | None:
    """Throughput and speedups against the previous comparable run, if the history has one."""
    from loadtests import history

    path = history.default_path(out_dir.parent)
    before = history.previous_comparable(path, out_dir, record)
    if before is None:
        return None
    try:
        after = history.get(path, str(out_dir))
    except KeyError:
        return None
    name = f"run {before.id} ({Path(before.folder).name}, {before.created_at})"
    header = ["model", "clients", "then", "now", "now/then", "moved"]

    def moved(change: history.Change) -> str:
        return "yes" if change.moved else "no (intervals overlap)"

    throughput = [
        [c.target, str(c.level), f"{c.before.mean:,.0f}", f"{c.after.mean:,.0f}",
         f"{c.ratio:.2f}x", moved(c)]
        for c in history.compare(path, before, after)
    ]  # fmt: skip
    pairs = [(b, c) for kind, b, c in comparisons(record.plan) if kind == "variant"]
    changes = history.compare_speedups(path, before, after, pairs)
    speedup = [
        [c.target, str(c.level), str(c.before), str(c.after), f"{c.ratio:.2f}x", moved(c)]
        for c in changes
    ]
    shifted = [c for c in changes if c.moved]
    if shifted:
        lines = [
            f"Against {name}, the speedup moved: "
            + "; ".join(f"{c.target} at {c.level} clients {c.before.mean:.2f}x -> "
                        f"{c.after.mean:.2f}x" for c in shifted) + "."
        ]  # fmt: skip
    elif changes:
        lines = [f"Against {name}, the speedup did not move beyond run-to-run noise at any level "
                 "(95% intervals overlap)."]  # fmt: skip
    else:
        lines = []
    note = "moved = 95% intervals over repeats do not overlap"
    return Previous(
        {
            f"Against the previous comparable {name}: speedup ({note})": (header, speedup),
            f"Against the previous comparable {name}: throughput, req/s ({note})": (
                header,
                throughput,
            ),
        },
        lines,
        name,
        Path(before.folder),
    )


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
        f"{openloop.min_requests:,} requests each, after {slo.WARMUP_S:g} s of warm-up)"
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
    models, conc = plan.target_labels(), plan.concurrency
    out: dict[str, Table] = {}
    if found:
        out["Claims: the seed study's against what was measured"] = (
            ["claim", "reference", "measured", "verdict"],
            [[c.claim, c.reference, c.measured, c.verdict] for c in found],
        )
    titles = {
        "variant": "Speedup of " + ", ".join(plan.variants[1:]) + f" over "
        f"{plan.variants[0]}, on each runtime (95% CI over repeats)",
        "runtime": "Runtimes compared on the same variant, against "
        f"{(plan.runtimes or ('-',))[0]} (95% CI over repeats)",
        "protocol": f"Protocols compared on the same model, against {plan.protocols[0]} "
        "(95% CI over repeats)",
    }
    for kind, title in titles.items():
        rows = [
            [str(s.concurrency), s.candidate, s.baseline, str(s.throughput), str(s.p50),
             str(s.p99), f"{s.p50_diff_ms:+.3f}"]
            for s in items
            if s.kind == kind
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
            served = record.variant(variant_of(v))
            rows.append(
                [
                    str(c),
                    v,
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
                [str(c), v, f"{p50:.3f}", f"{lv.model_ms:.3f}", f"{lv.queue_ms:.3f}",
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
        [[t, str(lv), f"{spread:.0%}", ", ".join(map(str, f)) or "-"]
         for t, lv, spread, f in drift(levels)],
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
        lines += [f"Open loop: {c.claim.removeprefix('faster inference: ')}: {c.measured} "
                  f"({c.verdict})."
                  for c in rate_claims(openloop, record.plan.variants[0])]  # fmt: skip
    noisy = noise_line(levels)
    if noisy:
        lines.append(noisy)
    previous = against_previous(out_dir, record)
    if previous is not None:
        lines += previous.lines
    figures = plots(record, levels, out_dir, openloop)
    all_tables = tables(record, levels, items, found, previous, openloop)
    warnings = sorted({w for step in record.steps for w in step.warnings})
    plan = record.plan
    title = "mnist-serve load test: " + " vs ".join(plan.variants)
    if plan.runtimes:
        title += " on " + ", ".join(plan.runtimes)
    if plan.protocols != ("native",):
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
