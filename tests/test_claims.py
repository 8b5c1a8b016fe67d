"""The claims view: each of the seed study's claims against the measured figure, with a verdict
that follows the interval."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from loadtests.analysis import Axis, Speedup
from loadtests.bottom_line import bottom_line
from loadtests.claims import Claim, Kind, Verdict, accuracy_difference, claims
from loadtests.described import ServedVariant
from loadtests.labels import Label
from loadtests.openloop_results import OpenLoopRecord
from loadtests.rate_claims import rate_claims
from loadtests.results import LoadPlan, RunRecord
from loadtests.stats import Interval
from tests.helpers import run_record, step_result
from training.seeds import SeedSummary, summarize


def record(
    acc_original: float, acc_depthwise: float, seeds: tuple[SeedSummary, SeedSummary] | None = None
) -> RunRecord:
    base, cand = seeds or (None, None)
    return run_record(
        LoadPlan(),
        [
            ServedVariant(
                "original",
                parameters=1_199_882,
                macs=11_992_448,
                test_accuracy=acc_original,
                epoch_seconds=[41.0, 40.0, 42.0],
                epochs=12,
                seeds=base,
            ),
            ServedVariant(
                "depthwise",
                parameters=823_828,
                macs=2_080_964,
                test_accuracy=acc_depthwise,
                epoch_seconds=[21.0, 20.0, 22.0],
                epochs=12,
                seeds=cand,
            ),
        ],
    )


def speedup(level: int, low: float, high: float, mean: float | None = None) -> Speedup:
    mean = (low + high) / 2 if mean is None else mean
    same = Interval(1, 1, 1)
    candidate, baseline = Label("depthwise"), Label("original")
    throughput = Interval(mean, low, high)
    return Speedup(Axis.VARIANT, candidate, baseline, level, throughput, same, same, -1)


def by_kind(found: list[Claim]) -> dict[Kind, list[Claim]]:
    out: dict[Kind, list[Claim]] = {}
    for claim in found:
        out.setdefault(claim.kind, []).append(claim)
    return out


def test_verdicts_follow_the_figures_and_intervals() -> None:
    items = [
        speedup(1, 1.2, 1.4),
        speedup(8, 0.9, 1.3),
        speedup(32, 0.5, 0.8),
        speedup(64, math.nan, math.nan, mean=1.1),
    ]
    found = by_kind(claims(record(0.9914, 0.9903), items))
    (parameters,) = found[Kind.PARAMETERS]
    assert parameters.verdict is Verdict.HOLDS
    assert parameters.value == pytest.approx(1_199_882 / 823_828)
    (macs,) = found[Kind.MACS]
    assert macs.verdict is Verdict.HOLDS and macs.value == pytest.approx(11_992_448 / 2_080_964)
    (accuracy,) = found[Kind.ACCURACY]
    assert accuracy.verdict is Verdict.WITHIN_NOISE
    assert accuracy.value == pytest.approx(0.9903 - 0.9914)
    (training,) = found[Kind.TRAINING]
    assert training.verdict is Verdict.ONE_RUN and training.value == pytest.approx(41 / 21)
    inference = {c.level: c for c in found[Kind.THROUGHPUT]}
    assert [inference[c].verdict for c in (1, 8, 32, 64)] == [
        Verdict.HOLDS,
        Verdict.WITHIN_NOISE,
        Verdict.DOES_NOT,
        Verdict.ONE_RUN,
    ]
    assert inference[64].value == 1.1 and inference[1].subject == "depthwise"


def test_a_clear_accuracy_drop_does_not_hold_and_the_bottom_line_says_so() -> None:
    items = [speedup(1, 1.2, 1.4), speedup(32, 1.5, 1.7)]
    (accuracy,) = by_kind(claims(record(0.9862, 0.9798), items))[Kind.ACCURACY]
    assert accuracy.verdict is Verdict.DOES_NOT and accuracy.value == pytest.approx(-0.0064)
    line = bottom_line(record(0.9862, 0.9798), items)
    assert "1.60x the requests/s of original at 32 clients (95% CI 1.50-1.70)" in line
    assert "5.76x fewer multiply-adds" in line and "is less accurate" in line


def test_accuracy_interval_is_the_difference_of_two_proportions() -> None:
    diff, low, high = accuracy_difference(0.99, 0.99)
    assert diff == 0 and low == -high and 0.0027 < high < 0.0029  # 1.96 * sqrt(2 * .0099 / 1e4)


def test_accuracy_over_seeds_is_used_when_both_have_several() -> None:
    """With --seeds metadata, the claim compares means with a t-interval over seeds."""
    base = summarize([1, 2, 3], [0.9914, 0.9908, 0.9911], [[41.0], [40.0], [42.0]])
    cand = summarize([1, 2, 3], [0.9903, 0.9921, 0.9890], [[21.0], [20.0], [22.0]])
    data = record(0.9914, 0.9903, (base, cand))
    (claim,) = by_kind(claims(data, []))[Kind.ACCURACY]
    assert claim.verdict is Verdict.WITHIN_NOISE
    assert claim.value == pytest.approx(cand.mean - base.mean)
    assert "mean of 3 and 3 seeds" in claim.claim  # the seeds' claim, not the single-run one


def test_seed_summary_interval() -> None:
    summary = summarize([1, 2, 3], [0.990, 0.992, 0.994], [[1.0, 3.0], [2.0], [4.0]])
    assert summary.mean == pytest.approx(0.992) and summary.std == pytest.approx(0.002)
    half = 4.302653 * 0.002 / 3**0.5  # t quantile, 2 degrees of freedom
    assert (summary.low, summary.high) == pytest.approx((0.992 - half, 0.992 + half))
    assert summary.epoch_seconds_median == [2.0, 2.0, 4.0]


def test_seeds_are_lifted_from_the_servers_metadata() -> None:
    """/variants carries --seeds figures inside the metadata; the record holds them typed."""

    summary = summarize([1, 2], [0.99, 0.992], [[1.0], [1.0]])
    (served,) = ServedVariant.from_server(
        [
            {
                "name": "depthwise",
                "version": 1,
                "metadata": {"seeds": summary.model_dump()},
                "runtimes": [{"runtime": "onnx", "model": "depthwise@onnx", "state": "ready"}],
                "unknown_field": 1,
            }
        ]
    )
    assert served.seeds == summary and served.runtimes[0].model == "depthwise@onnx"


def test_rate_claims_follow_the_search_brackets() -> None:
    """Open loop: a higher max rate holds only when the two search brackets are apart."""
    from loadtests.openloop_results import OpenLoopRecord, RatePoint, Slo
    from loadtests.results import Percentiles

    def run(model: str, rate: float, met: bool) -> RatePoint:
        latency = Percentiles(1, 2, 3, 4, 5)
        return RatePoint(model, rate, 10, 10, rate, latency, 4 if met else math.inf, met, 0.1)

    points = [
        run("original@onnx", 400, True),
        run("original@onnx", 800, False),
        run("depthwise@onnx", 800, True),
        run("depthwise@onnx", 1600, False),
        run("original@savedmodel", 400, True),
        run("original@savedmodel", 600, False),
        run("depthwise@savedmodel", 500, True),
        run("depthwise@savedmodel", 700, False),
    ]
    openloop = OpenLoopRecord(
        Slo(99, 20),
        2,
        [400, 800, 1600],
        ["original@onnx", "depthwise@onnx", "original@savedmodel", "depthwise@savedmodel"],
        {
            "original@onnx": 400,
            "depthwise@onnx": 800,
            "original@savedmodel": 400,
            "depthwise@savedmodel": 500,
        },
        points,
    )
    plan = LoadPlan(runtimes=("onnx", "savedmodel"))
    data = run_record(plan, record(0.99, 0.99).variants)
    found = {c.subject: c for c in rate_claims(openloop, data.plan)}
    assert found["depthwise@onnx"].verdict is Verdict.HOLDS and found["depthwise@onnx"].value == 2
    assert found["depthwise@savedmodel"].verdict is Verdict.WITHIN_RESOLUTION
    line = bottom_line(data, [], openloop)
    expected = "depthwise@onnx sustains 2.00x the arrival rate of original@onnx within p99 <= 20 ms"
    assert expected in line


def test_a_rate_loadgen_could_not_decide_gives_no_verdict() -> None:
    """depthwise met 400 req/s; at 800 its p99 met the bound but on too few requests for
    LoadGen's early stopping. original met 800. Without that undecided run the claim would
    read "does not"; it says "needs more requests" and how many instead."""
    from loadtests.openloop_results import LoadGenVerdict, OpenLoopRecord, RatePoint, Slo
    from loadtests.results import Percentiles

    latency = Percentiles(1, 2, 3, 4, 5)
    short = LoadGenVerdict(
        False, True, False, True, True, 300, 0, 159, 800, 800, 800, latency, 4, 2, 6, "6.0.17"
    )

    def run(model: str, rate: float, met: bool, verdict: LoadGenVerdict | None = None) -> RatePoint:
        return RatePoint(model, rate, 10, 10, rate, latency, 4, met, 0.1, loadgen=verdict)

    points = [
        run("original", 400, True),
        run("original", 800, True),
        run("original", 1600, False),
        run("depthwise", 400, True),
        run("depthwise", 800, False, short),
    ]
    openloop = OpenLoopRecord(
        Slo(99, 20),
        2,
        [400, 800, 1600],
        ["original", "depthwise"],
        {"original": 800, "depthwise": 400},
        points,
    )
    (claim,) = rate_claims(openloop, record(0.99, 0.99).plan)
    assert claim.verdict is Verdict.NEEDS_MORE
    assert "depthwise at 800 req/s undecided: needs 159 more requests" in claim.measured


def searched(rates: dict[str, tuple[list[float], list[float]]]) -> OpenLoopRecord:
    """An open-loop search: per model, the rates that met the SLO and those that missed it."""
    from loadtests.openloop_results import RatePoint, Slo
    from loadtests.results import Percentiles

    latency = Percentiles(1, 2, 3, 4, 5)
    points = [
        RatePoint(model, rate, 10, 10, rate, latency, 4 if ok else math.inf, ok, 0.1)
        for model, (met, missed) in rates.items()
        for ok, group in ((True, met), (False, missed))
        for rate in group
    ]
    best = {model: max(met, default=0.0) for model, (met, _) in rates.items()}
    return OpenLoopRecord(Slo(99, 20), 2, [400, 800, 1600], list(rates), best, points)


def test_a_rate_ratio_is_a_bound_or_says_why_there_is_none() -> None:
    """Never "nanx": a baseline that met no rate is named, both failing is said, and a ratio
    against a model that met every rate tried is an upper bound ("<="), in the claim and in
    the bottom line alike."""
    plan = LoadPlan(runtimes=("onnx",))
    data = run_record(plan, record(0.99, 0.99).variants)

    def said(rates: dict[str, tuple[list[float], list[float]]]) -> tuple[str, str]:
        openloop = searched(rates)
        (claim,) = rate_claims(openloop, data.plan)
        return claim.measured, bottom_line(data, [], openloop)

    measured, line = said({"original@onnx": ([], [400]), "depthwise@onnx": ([400, 800], [1600])})
    assert "800 vs 0 req/s of original@onnx (baseline met none)" in measured
    assert "depthwise@onnx sustains 800 req/s within p99 <= 20 ms, where original@onnx met" in line
    measured, line = said({"original@onnx": ([], [400]), "depthwise@onnx": ([], [400])})
    assert "(neither met the SLO)" in measured
    assert "neither depthwise@onnx nor original@onnx met p99 <= 20 ms at the lowest" in line
    assert "(400 req/s), depthwise needs 5.76x fewer multiply-adds" in line  # its own subject
    measured, line = said({"original@onnx": ([400, 800], []), "depthwise@onnx": ([], [400])})
    assert "(0.00x)" in measured and "sustains 0.00x the arrival rate" in line  # not "<= 0.00x"
    measured, line = said({"original@onnx": ([400, 800], []), "depthwise@onnx": ([400], [800])})
    assert "400 vs >= 800 req/s of original@onnx (<= 0.50x)" in measured
    assert "sustains <= 0.50x the arrival rate" in line
    measured, line = said({"original@onnx": ([400], [800]), "depthwise@onnx": ([400, 800], [])})
    assert "(>= 2.00x)" in measured and "sustains >= 2.00x the arrival rate" in line
    assert all("nan" not in text for text in (measured, line))


def test_the_open_loop_summary_compares_within_each_runtime() -> None:
    """Each model against the first variant on its own runtime, as the claims do (it once
    set every model against the first model searched, whatever its runtime)."""
    from loadtests.openloop_tables import openloop_summary

    openloop = searched(
        {
            "original@onnx": ([400], [800]),
            "depthwise@onnx": ([400, 800], [1600]),
            "original@savedmodel": ([400, 800], [1600]),
            "depthwise@savedmodel": ([400], [800]),
        }
    )
    header, rows = openloop_summary(openloop)
    ratio = {row[0]: row[header.index("vs the first variant, same runtime")] for row in rows}
    assert ratio == {
        "original@onnx": "baseline",
        "depthwise@onnx": "2.00x",
        "original@savedmodel": "baseline",
        "depthwise@savedmodel": "0.50x",
    }


def test_the_bottom_line_agrees_with_the_seed_claim_and_names_the_other_comparisons() -> None:
    """Over seeds the accuracy claim is within noise: the bottom line does not call the
    candidate more accurate on the exported models' single figures; several comparisons at
    the top load are counted, not hidden; a run without a speed figure names its subject."""
    base = summarize([1, 2, 3], [0.9890, 0.9925, 0.9905], [[41.0], [40.0], [42.0]])
    cand = summarize([1, 2, 3], [0.9925, 0.9895, 0.9910], [[21.0], [20.0], [22.0]])
    data = record(0.9890, 0.9925, (base, cand))
    (claim,) = by_kind(claims(data, []))[Kind.ACCURACY]
    assert claim.verdict is Verdict.WITHIN_NOISE
    line = bottom_line(data, [speedup(32, 1.4, 1.6), speedup(32, 0.1, 0.2), speedup(1, 1, 2)])
    assert f"is as accurate within noise ({cand.mean:.2%} vs {base.mean:.2%})" in line
    assert "1 other comparison(s) at that load, 0.15x-1.50x in all" in line
    assert bottom_line(data, []).startswith("Bottom line: depthwise needs 5.76x fewer")
    failed = replace(data, steps=[step_result("depthwise", 32, 0, 0.0, errors=100)])
    assert bottom_line(failed, []).endswith("(1 step(s) of these two failed: see the report).")


def test_the_console_summary_of_the_open_loop_says_what_the_report_says() -> None:
    """Within each runtime, bounds and "baseline met none" as in the report (the console
    compared every model with the first searched, and printed "nanx")."""
    import io
    from pathlib import Path

    from rich.console import Console

    from mnist_serve.cli import render

    openloop = searched(
        {
            "original@onnx": ([], [400]),
            "depthwise@onnx": ([400, 800], [1600]),
            "original@litert": ([400, 800], []),
            "depthwise@litert": ([400], [800]),
        }
    )
    shown = io.StringIO()
    console, render.console = render.console, Console(file=shown, width=200)
    try:
        render.ConsoleListener().open_loop_finished(openloop, Path("runs/x/openloop.json"))
    finally:
        render.console = console
    text = shown.getvalue()
    assert (
        "depthwise@onnx: 800 req/s within p99 <= 20 ms (vs original@onnx: baseline met none)"
        in text
    )
    assert "depthwise@litert: 400 req/s within p99 <= 20 ms (vs original@litert: <= 0.50x)" in text
    assert "nan" not in text


def test_the_open_loop_runs_table_counts_failures_and_says_how_loadgen_timed_them() -> None:
    """LoadGen needs a latency for every request: a failed one is given just over the bound.
    The runs table counts the failed requests, and its title says why their run's high
    percentiles sit at the bound (with the asyncio generator there is nothing to say)."""
    from loadtests.openloop_results import LoadGenVerdict, RatePoint
    from loadtests.openloop_tables import openloop_tables
    from loadtests.results import Percentiles

    latency = Percentiles(1, 2, 3, 20.1, 20.2)
    verdict = LoadGenVerdict(
        False, False, False, True, True, 1000, 40, None, 800, 800, 760, latency, 20, 5, 21, "6"
    )
    failing = RatePoint(
        "depthwise", 800, 1000, 960, 760, latency, 20.1, False, 0.1, loadgen=verdict
    )
    plain = searched({"depthwise": ([400], [])})
    for openloop, said in ((replace(plain, points=[failing]), True), (plain, False)):
        (title, (header, rows)) = list(openloop_tables(openloop).items())[1]
        assert (
            "a failed one counts as just over the bound (10 s if never answered)" in title
        ) is said
        assert title.endswith(")") and title.count("(") == title.count(")")
        assert rows[0][header.index("failed")] == ("40" if said else "0")


def test_the_bottom_line_says_when_the_client_lagged_where_the_models_missed() -> None:
    """Both models missed only where the client itself was late: the bottom line does not say
    they met every rate tried, but that the client lagged where they missed."""
    from loadtests.openloop_results import RatePoint, Slo
    from loadtests.results import Percentiles

    slo = Slo(99, 20)

    def run(model: str, rate: float, met: bool, lag_ms: float) -> RatePoint:
        latency = Percentiles(1, 2, 3, 4, 5)
        return RatePoint(model, rate, 10, 10, rate, latency, 4 if met else 40, met, lag_ms)

    late = slo.client_lag_limit_ms + 1
    models = ["original@onnx", "depthwise@onnx"]
    points = [run(m, 400, True, 0.1) for m in models] + [run(m, 800, False, late) for m in models]
    openloop = OpenLoopRecord(slo, 2, [400, 800], models, dict.fromkeys(models, 400.0), points)
    data = run_record(LoadPlan(runtimes=("onnx",)), record(0.99, 0.99).variants)
    line = bottom_line(data, [], openloop)
    assert "the client itself lagged" in line and "met every arrival rate" not in line
