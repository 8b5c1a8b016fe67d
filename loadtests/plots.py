"""The report's figures, drawn with matplotlib into PNG files.

Latency percentiles, throughput, latency against throughput and the latency CDF, each against
concurrency, and the trade-off of accuracy against served latency (and, with an open-loop
sweep, against the highest arrival rate within the SLO). Figures are built by functions that
return them (:func:`tradeoff_figure`), and saved by :func:`plots`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loadtests.analysis import Levels
from loadtests.labels import Label
from loadtests.openloop_results import OpenLoopRecord
from loadtests.results import RunRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plots(
    record: RunRecord, levels: Levels, out_dir: Path, openloop: OpenLoopRecord | None = None
) -> dict[str, Path]:
    """The report's figures as PNG files; returns title -> path. An open-loop run alone (no
    closed-loop steps) gets the trade-off's open-loop panel only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, conc = record.plan.targets(), record.plan.concurrency
    folder = out_dir / "plots"
    folder.mkdir(exist_ok=True)
    files: dict[str, Path] = {}
    colours = {v: f"C{i}" for i, v in enumerate(models)}
    if not record.steps:
        if openloop is not None:
            tradeoff = tradeoff_figure(
                record, levels, openloop, {str(m): c for m, c in colours.items()}
            )
            files["Trade-off: accuracy vs capacity"] = _save(tradeoff, folder / "tradeoff.png")
        return files

    def latency(v: Label, c: int, q: str) -> float:
        return float(getattr(levels[(v, c)].percentiles, q))

    # Targets with a latency at some level (a failed step has none: it is not drawn).
    measured = [v for v in models if any(len(levels[(v, c)].latency) for c in conc)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in measured:
        for q, style in (("p50", "-o"), ("p99", "--s")):
            values = [latency(v, c, q) for c in conc]
            ax.plot(conc, values, style, color=colours[v], label=f"{v} {q}")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="latency (ms)",
        title="Latency percentiles vs concurrency",
    )
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.grid(True, which="both", alpha=0.3)
    if measured:
        ax.legend()
        files["Latency percentiles vs concurrency"] = _save(fig, folder / "latency.png")
    else:
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in models:
        means = [float(np.mean(levels[(v, c)].throughput)) for c in conc]
        errs = [float(np.std(levels[(v, c)].throughput)) for c in conc]
        ax.errorbar(conc, means, yerr=errs, fmt="-o", capsize=3, color=colours[v], label=str(v))
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

    if not measured:  # every step failed: no latency to draw
        return files
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in measured:
        xs = [float(np.mean(levels[(v, c)].throughput)) for c in conc]
        for q, style in (("p50", "-o"), ("p99", "--s")):
            values = [latency(v, c, q) for c in conc]
            ax.plot(xs, values, style, color=colours[v], label=f"{v} {q}")
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
        for v in measured:
            data = np.sort(levels[(v, c)].latency)
            ax.plot(data, np.arange(1, len(data) + 1) / len(data), color=colours[v], label=str(v))
        ax.set(xscale="log", title=f"{c} clients", xlabel="latency (ms)", ylabel="fraction")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend()
    for ax in list(axes.flat)[len(conc) :]:
        ax.set_visible(False)
    fig.suptitle("Latency CDF at each concurrency")
    files["Latency CDF at each concurrency"] = _save(fig, folder / "cdf.png")

    tradeoff = tradeoff_figure(record, levels, openloop, {str(m): c for m, c in colours.items()})
    files["Trade-off: accuracy vs served latency"] = _save(tradeoff, folder / "tradeoff.png")
    return files


def tradeoff_figure(
    record: RunRecord,
    levels: Levels,
    openloop: OpenLoopRecord | None,
    colours: dict[str, str] | None = None,
) -> Figure:
    """What each model costs against what it gives: test accuracy against p50 at the lowest
    load and, with an open-loop sweep, against the highest arrival rate within the SLO (a
    second panel). Marker area grows with multiply-adds; the label gives parameters and MACs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = colours or {}
    low = min(record.plan.concurrency)
    closed = bool(record.steps)  # False: an open-loop run alone, its panel only
    panels = int(closed) + (openloop is not None)
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)

    def mark(ax: Any, models: Sequence[tuple[str, str]], model: str, x: float) -> None:
        """``models``: (shown name, variant) of every point of the panel."""
        variant = dict(models)[model]
        served = record.variant(variant)
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
        rank = [m for m, v in models if v == variant].index(model)
        offset = (6, 6 if rank % 2 == 0 else -12)
        ax.annotate(model, (x, y), fontsize=7, xytext=offset, textcoords="offset points")

    def finish(ax: Any, xlabel: str, title: str) -> None:
        ax.set(xlabel=xlabel, ylabel="test accuracy (%, 10,000 images)", title=title)
        ax.margins(x=0.2, y=0.25)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no test accuracy known: nothing to label
            ax.legend(fontsize=7, loc="best")

    if closed:
        ax = axes[0][0]
        targets = [(str(t), t.variant) for t in record.plan.targets()]
        for target in record.plan.targets():
            mark(ax, targets, str(target), levels[(target, low)].percentiles.p50)
        clients = f"{low} client{'s' if low > 1 else ''}"
        finish(ax, f"p50 latency at {clients} (ms)", "Accuracy vs latency at the lowest load")
    if openloop is not None:
        ax = axes[0][panels - 1]
        # The open loop drives the plan's models: their variants are known, not parsed.
        variants = {str(name): name.variant for name in record.plan.model_names()}
        searched = [(m, variants[m]) for m in openloop.models if m in variants]
        for model, _ in searched:
            mark(ax, searched, model, openloop.max_rate[model])
        rate = f"highest Poisson arrival rate within {openloop.slo} (req/s)"
        finish(ax, rate, "Accuracy vs capacity at the latency target")
    fig.suptitle("Trade-off (marker area ~ multiply-adds)")
    return fig


def plain_log_ticks(axis: Any, steps: bool) -> None:
    """A log axis labelled in plain numbers, not 2x10^0; ``steps``: also 2 and 5 between
    decades (else only the major ticks, or the levels the plot set)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_formatter(ScalarFormatter())
    if steps:
        axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(ScalarFormatter())
    else:
        axis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    for ax in fig.axes:  # latency: 1-2-5 steps; concurrency: only the levels tested
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                plain_log_ticks(axis, "ms" in axis.get_label().get_text())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
