"""The explore report's figure: test error against served speed, with each Pareto front marked.

Two panels, one per speed measure:

- served p50 at one client (lower is better);
- the highest Poisson rate within the SLO (higher is better). When the rate search reached its
  top rate for most models, the rate cannot tell them apart (the generator's ceiling, not the
  models'), and the panel shows closed-loop throughput at 32 clients instead, saying so.

The vertical axis is the test error on a log scale, so that models at 98-99 % accuracy are
not pressed together by one at 60 %. Front points are coloured by runtime and labelled; labels
that would overlap are moved up, with a thin line back to their point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.explore_results import ModelMeasurement
from loadtests.pareto import pareto_ranks
from loadtests.plots import plain_log_ticks

FONT_PT = 7.0
LINE_PT = FONT_PT * 1.35  # a label's height, with some air
CHAR_PT = FONT_PT * 0.6  # a character's width, about (DejaVu Sans)
LEADER_PT = 8.0  # labels moved further than this from their point get a line to it


@dataclass(frozen=True)
class Panel:
    """One speed measure: how to read it off a model, which way is better, its axis label."""

    speed: Callable[[ModelMeasurement], float]
    higher_is_better: bool
    label: str
    short: str  # the report table's rank column: "rank (<short>)"
    log: bool = False
    note: str = ""

    def ranks(self, models: Sequence[ModelMeasurement]) -> list[int]:
        """Each model's Pareto rank on test accuracy and this speed (1 = on the front)."""
        sign = 1 if self.higher_is_better else -1
        return pareto_ranks([(m.test_accuracy, sign * self.speed(m)) for m in models])


def error_pct(m: ModelMeasurement) -> float:
    """Test error in percent (the vertical axis; 0.01 at least, for the log scale)."""
    return max((1 - m.test_accuracy) * 100, 0.01)


def censored(models: Sequence[ModelMeasurement]) -> int:
    """How many models no miss bounded: they met every rate the search tried, or missed only
    where the client could not keep up (their rate is a lower bound, or tells nothing)."""
    return sum(1 for m in models if m.first_missed is None)


def plotted(models: Sequence[ModelMeasurement]) -> list[ModelMeasurement]:
    """The models the figure can place: those with a test accuracy."""
    return [m for m in models if not math.isnan(m.test_accuracy)]


def panels(models: Sequence[ModelMeasurement], slo: str) -> list[Panel]:
    """The two panels: p50 at one client, and the rate within the SLO (or c=32 throughput),
    chosen on the models the figure places (so the report's table ranks on the same ones)."""
    models = plotted(models)
    p50 = Panel(
        lambda m: m.c1_latency_ms.p50,
        False,
        "served p50 at one client (ms, lower is better)",
        "p50",
        log=True,
    )
    top = censored(models)
    if top * 2 <= len(models):
        label = f"highest Poisson rate within {slo} (req/s, higher is better)"
        return [p50, Panel(lambda m: m.max_rate, True, label, "rate")]
    highest = max(m.max_rate for m in models)
    note = (
        f"{top} of {len(models)} models met every rate tried, or missed only where the client "
        f"could not keep up (up to {highest:,.0f} req/s): the "
        "rate search cannot separate them, so this panel shows throughput at 32 clients"
    )
    c32 = Panel(
        lambda m: m.c32_rps, True, "req/s at 32 clients (higher is better)", "c=32", note=note
    )
    return [p50, c32]


def pareto_figure(models: Sequence[ModelMeasurement], slo: str, path: Path) -> Path:
    """Write the figure (PNG) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = plotted(models)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    most = max((m.parameters for m in shown), default=1) or 1
    runtimes = list(dict.fromkeys(m.runtime for m in shown))
    colours = {rt: f"C{i}" for i, rt in enumerate(runtimes)}
    fronts = []
    for ax, panel in zip(axes, panels(shown, slo), strict=True):
        ranks = panel.ranks(shown)
        front = [m for m, rank in zip(shown, ranks, strict=True) if rank == 1]
        fronts.append((ax, panel, front))
        for m, rank in zip(shown, ranks, strict=True):
            on = rank == 1
            ax.scatter(
                panel.speed(m), error_pct(m), s=20 + 400 * math.sqrt(m.parameters / most),
                alpha=0.85 if on else 0.35, color=colours[m.runtime] if on else "0.7",
                edgecolors="black" if on else "none", zorder=3 if on else 2,
            )  # fmt: skip
        line = sorted(front, key=panel.speed)
        ax.plot([panel.speed(m) for m in line], [error_pct(m) for m in line], "k:", lw=1)
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis, steps=True)
        if panel.log:
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis, steps=True)
        ax.set(xlabel=panel.label, ylabel="test error (%, log scale, lower is better)")
        if panel.note:
            ax.set_title(panel.note, fontsize=8, wrap=True)
        ax.grid(True, alpha=0.3, which="both")
    leading = {m.runtime for _, _, front in fronts for m in front}
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=colours[rt], label=f"{rt} (on the front)")
        for rt in runtimes
        if rt in leading
    ] + [plt.Line2D([], [], marker="o", ls="", color="0.7", label="dominated")]
    axes[1].legend(handles=handles, fontsize=8, title="marker area: parameters")
    fig.suptitle("Pareto front: test error against served speed")
    fig.tight_layout()
    for ax, panel, front in fronts:  # placed once the layout is final
        place_labels(ax, fig, labels(front, panel))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def labels(front: Sequence[ModelMeasurement], panel: Panel) -> list[tuple[float, float, str]]:
    """(x, y, text) per front point; models at the same place (a tie) share one label, written
    ``variant@runtime, @runtime`` when they are one variant."""
    at: dict[tuple[float, float], list[str]] = {}
    for m in front:
        at.setdefault((panel.speed(m), error_pct(m)), []).append(m.model)
    out = []
    for (x, y), names in at.items():
        variants = {n.partition("@")[0] for n in names}
        text = (
            names[0] + "".join(f", @{n.partition('@')[2]}" for n in names[1:])
            if len(variants) == 1
            else ", ".join(names)
        )
        out.append((x, y, text))
    return out


def place_labels(ax: Any, fig: Any, points: Sequence[tuple[float, float, str]]) -> None:
    """Label each (x, y) to its upper right; a label that would overlap one already placed is
    moved up past it (lowest points first), with a thin line back to its point."""
    ax.get_xlim(), ax.get_ylim()  # settles the limits autoscaling left pending
    to_pt = 72.0 / fig.dpi
    placed: list[tuple[float, float, float]] = []  # left, right, bottom, in points
    anchored = []
    for x, y, text in points:
        px, py = ax.transData.transform((x, y))
        if math.isfinite(px) and math.isfinite(py):
            anchored.append((px * to_pt, py * to_pt, x, y, text))
    edge = ax.get_window_extent().x1 * to_pt
    for px, py, x, y, text in sorted(anchored, key=lambda a: a[1]):
        width = CHAR_PT * len(text)
        left, bottom = (px + 4, py + 3) if px + 4 + width < edge else (px - 4 - width, py + 3)
        right = left + width
        for other in sorted(b for lo, hi, b in placed if lo < right and left < hi):
            if abs(other - bottom) < LINE_PT:  # lowest first: one pass moves it past them all
                bottom = other + LINE_PT
        placed.append((left, right, bottom))
        moved = bottom - py > LEADER_PT
        ax.annotate(
            text, (x, y), xytext=(left - px, bottom - py), textcoords="offset points",
            fontsize=FONT_PT, va="bottom",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4"} if moved else None,
        )  # fmt: skip
