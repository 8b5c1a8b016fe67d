"""The explore report's Pareto figure: which speed each panel shows, and labels that never
overlap, drawn with matplotlib for real."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib
import pytest
from matplotlib.text import Annotation, Text

from loadtests.explore_results import ModelMeasurement
from loadtests.pareto_plot import error_pct, labels, panels, pareto_figure, place_labels
from loadtests.results import Percentiles

matplotlib.use("Agg")


def measured(
    name: str, accuracy: float, p50: float, c32: float, rate: float, missed: float | None
) -> ModelMeasurement:
    """A model as explore measures it, with only the figures the plot reads set."""
    variant, _, runtime = name.partition("@")
    latency = Percentiles(p50, p50, p50, p50, p50)
    return ModelMeasurement(
        model=name, variant=variant, runtime=runtime, version=1, family="kernels",
        description="", parameters=10_000, macs=100_000, test_accuracy=accuracy,
        epoch_seconds=1.0, c1_latency_ms=latency, c1_rps=1000 / p50, c32_latency_ms=latency,
        c32_rps=c32, errors=0, max_rate=rate, first_missed=missed, rate_points=[],
        alone_b1_ms=0.01, alone_b32_ms=0.1, measured_at="2026-12-01T00:00:00+00:00",
    )  # fmt: skip


# Eight models of near-equal accuracy and speed, and one far from them that sets the axes'
# range: the eight labels would all land on each other.
CROWD = [
    measured(f"small-k{k}-{k}@litert", 0.985 - k / 10_000, 0.30 + k / 1000, 8000 + k, 3000, None)
    for k in range(8)
] + [measured("small-stride5@onnx", 0.6, 1.2, 9000, 3000, None)]


def test_a_rate_search_that_topped_out_for_most_models_gives_way_to_throughput() -> None:
    """Every model met the top rate: the second panel shows c=32 throughput, and says why."""
    second = panels(CROWD, "p99 <= 20 ms")[1]
    assert "32 clients" in second.label and "9 of 9 models met every rate" in second.note
    assert [second.speed(m) for m in CROWD] == [m.c32_rps for m in CROWD]


def test_a_rate_search_that_separated_the_models_is_shown() -> None:
    separated = [
        measured(m.model, m.test_accuracy, 0.3, 8000, 1000 + i, 2000 + i)
        for i, m in enumerate(CROWD)
    ]
    second = panels(separated, "p99 <= 20 ms")[1]
    assert "within p99 <= 20 ms" in second.label and not second.note
    assert [second.speed(m) for m in separated] == [m.max_rate for m in separated]


def test_crowded_labels_do_not_overlap() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    speed = panels(CROWD, "p99 <= 20 ms")[0]
    ax.scatter([speed.speed(m) for m in CROWD], [error_pct(m) for m in CROWD])
    place_labels(ax, fig, labels(CROWD, speed))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = []
    for label in ax.texts:  # the text's own box, without the line back to its point
        assert isinstance(label, Annotation) and label.get_window_extent(renderer).width > 1
        boxes.append(Text.get_window_extent(label, renderer))
    assert len(boxes) == len(CROWD)
    clashes = [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]
    plt.close(fig)
    assert not clashes, f"{len(clashes)} pairs of labels overlap"


def test_tied_models_share_one_label() -> None:
    tied = [measured(f"small-k3-3@{rt}", 0.98, 0.3, 8000, 3000, None) for rt in ("onnx", "litert")]
    [(_, _, text)] = labels(tied, panels(tied, "p99 <= 20 ms")[0])
    assert text == "small-k3-3@onnx, @litert"


@pytest.mark.slow
def test_the_figure_is_written(tmp_path: Path) -> None:
    path = pareto_figure(CROWD, "p99 <= 20 ms", tmp_path / "pareto.png")
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("accuracy", [1.0, 0.0])
@pytest.mark.slow
def test_perfect_and_useless_models_still_plot(tmp_path: Path, accuracy: float) -> None:
    """A test error of 0 on a log axis, or of 100 %."""
    models = [*CROWD, measured("x@onnx", accuracy, 0.5, 5000, 3000, None)]
    assert pareto_figure(models, "p99 <= 20 ms", tmp_path / "pareto.png").is_file()


def test_the_report_table_ranks_on_the_figure_panels() -> None:
    """The table's fronts are the figure's: with the rate search topped out, its second rank is
    on throughput at 32 clients, where the crowd trades accuracy for speed (all nine on the
    front), not on the tied rate (where the most accurate would dominate the other eight)."""
    from loadtests.explore_report import rank, ranked_table

    p50, speed = panels(CROWD, "p99 <= 20 ms")
    ranked = rank(CROWD, p50, speed)
    assert [r.rank_speed for r in ranked] == [1] * len(CROWD)
    header, rows = ranked_table(ranked, speed)
    assert header[:2] == ["rank (p50)", "rank (c=32)"]
    assert {row[1] for row in rows} == {"1"}
    # on p50 the crowd does not trade: k0 is the fastest (0.300 ms) and the most accurate
    assert [r.rank_p50 for r in ranked] == list(range(1, 10))
    assert ranked[0].m.model == "small-k0-0@litert"


def test_family_findings_pass_over_a_model_that_failed() -> None:
    """A model whose every request failed has a NaN p50: never "fastest", never the slowest's
    figure (once it was both, printed as nan)."""
    import math

    from loadtests.explore_report import family_findings

    models = [  # the failed one first: min() and max() keep a NaN they start with
        measured("small-k5-5@onnx", 0.98, math.nan, 0, 0, None),
        measured("small-k3-3@onnx", 0.98, 0.30, 8000, 3000, None),
        measured("small-k7-7@onnx", 0.98, 0.50, 8000, 3000, None),
    ]
    (_, _, text), *_ = family_findings(models)
    assert "fastest served (median p50 over runtimes) small-k3-3 at 0.300 ms" in text
    assert "against 0.500 ms for the slowest" in text and "nan" not in text


def test_a_model_that_answered_errors_is_named_in_the_report(tmp_path: Path) -> None:
    """Its figures count the successes only: the table shows its errors and their share, and
    the report, its summary and the page warn by name; a clean run carries no warning."""
    from dataclasses import replace

    from loadtests.explore_report import errors_warning, write_explore_report
    from loadtests.explore_results import QUICK, ExploreRecord
    from loadtests.openloop_results import Slo
    from loadtests.results import Machine

    clean = [replace(m, requests=4000) for m in CROWD[:3]]
    failing = replace(clean[1], errors=1200, requests=4000)
    assert not errors_warning(clean)
    record = ExploreRecord(
        created_at="2026-12-01T00:00:00+00:00",
        updated_at="2026-12-01T00:00:00+00:00",
        slo=Slo(99, 20),
        budget=QUICK,
        machine=Machine("EPYC", 2, "Linux", "3.11", "2.21.0", "2.x"),
        measurements=[clean[0], failing, clean[2]],
    )
    report = write_explore_report(record, tmp_path, {m.model for m in clean}, "kernels")
    assert report.warning.startswith("Warning: 1 of 3 models answered errors under load")
    assert f"{failing.model} (1,200 (30.0%))" in report.warning
    assert report.summary.endswith("; 1 with errors")
    markdown = report.markdown.read_text()
    assert f"**{report.warning}**" in markdown
    row = next(line for line in markdown.splitlines() if f"| {failing.model} |" in line)
    assert row.rstrip(" |").endswith("1,200 (30.0%)")
    assert 'class="warning"' in report.html.read_text()
