"""The load-test report: its maths checked against numpy on a recorded set with known latencies,
the results file, drift between repeats, and the open loop and the previous run joined in.
``write_recorded_set`` (that recorded set) serves test_cost and test_ui too."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from loadtests.analysis import Axis, load_levels, speedups
from loadtests.described import ServedVariant
from loadtests.labels import Label
from loadtests.report import build_report
from loadtests.results import SCHEMA, LoadPlan, ResultsError, RunRecord
from loadtests.stats import mean_interval
from loadtests.windows import summarize
from tests import helpers
from tests.helpers import run_record


def write_recorded_set(
    folder: Path, rng: np.random.Generator
) -> dict[tuple[str, int, int], np.ndarray]:
    """A results folder as the runner writes it, with known latencies."""
    plan = LoadPlan(
        variants=("original", "depthwise"),
        runtimes=("savedmodel", "onnx"),
        concurrency=(1, 8),
        repeats=3,
        duration_s=2,
        warmup_s=0,
    )
    steps, samples = [], {}
    for step in plan.steps():
        # depthwise ~20 % faster than original; onnx ~10 % faster than savedmodel.
        base = (2.0 if step.model.startswith("original") else 1.6) * (
            0.9 if step.model.endswith("onnx") else 1.0
        )
        n = int(rng.integers(800, 1200))
        latency = rng.gamma(8.0, base * step.concurrency**0.5 / 8.0, n)
        samples[(step.model, step.concurrency, step.repeat)] = latency
        data = {
            "latency_ms": latency,
            "ok": np.ones(n),
            "correct": (rng.random(n) < 0.99) * 1.0,
            "queue_ms": rng.random(n) * 0.1,
            "model_ms": np.full(n, base / 2),
            "finished_at": 1000.0 + np.sort(rng.random(n)) * 2.0,
            "window_start": np.asarray(1000.0),
            "generator_cpu_s": np.asarray(0.4),
        }
        path = folder / "samples" / f"{step.key}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **data)  # type: ignore[arg-type]
        runtime = step.model.partition("@")[2]
        steps.append(
            summarize(step, runtime, data, processes=1, path=str(path.relative_to(folder)))
        )
    served = [ServedVariant("original", version=1), ServedVariant("depthwise", version=1)]
    run_record(plan, served, steps, created="2026-11-22T00:00:00+00:00").save(folder)
    return samples


@pytest.mark.slow
def test_a_failed_repeat_leaves_the_levels_figures_to_the_others(tmp_path: Path) -> None:
    """One repeat of a level served nothing: the level's accuracy and server times are the
    means of the repeats that served (they were NaN), and the report prints no "nan"."""
    import re
    from dataclasses import replace

    write_recorded_set(tmp_path, np.random.default_rng(3))
    record = RunRecord.load(tmp_path)
    first = record.steps[0]
    with np.load(tmp_path / first.samples) as data:
        arrays = dict(data)
    arrays["ok"] = np.zeros_like(arrays["ok"])
    np.savez(tmp_path / first.samples, **arrays)
    nan = math.nan
    failed = replace(
        first,
        errors=first.requests,
        accuracy=nan,
        server_queue_ms_p50=nan,
        server_model_ms_p50=nan,
    )
    replace(record, steps=[failed, *record.steps[1:]]).save(tmp_path)
    _, levels = load_levels(tmp_path)
    level = levels[(first.target, first.concurrency)]
    assert level.failed == 1
    assert all(math.isfinite(v) for v in (level.accuracy, level.queue_ms, level.model_ms))
    assert not re.search(r"\bnan\b", build_report(tmp_path).markdown.read_text())


@pytest.mark.slow
def test_report_maths_match_numpy(tmp_path: Path) -> None:
    samples = write_recorded_set(tmp_path, np.random.default_rng(7))
    record, levels = load_levels(tmp_path)
    for (target, level), pooled in levels.items():
        expected = np.concatenate([samples[(str(target.model), level, r)] for r in range(3)])
        assert pooled.percentiles.values() == pytest.approx(
            np.percentile(expected, [50, 90, 95, 99, 99.9])
        )
    items = speedups(record, levels)
    assert {(s.kind, str(s.baseline), str(s.candidate)) for s in items} == {
        (Axis.VARIANT, "original@savedmodel", "depthwise@savedmodel"),
        (Axis.VARIANT, "original@onnx", "depthwise@onnx"),
        (Axis.RUNTIME, "original@savedmodel", "original@onnx"),
        (Axis.RUNTIME, "depthwise@savedmodel", "depthwise@onnx"),
    }
    for s in items:
        at_level = [st for st in record.steps if st.concurrency == s.concurrency]
        steps = {(st.model, st.repeat): st for st in at_level}
        candidate, baseline = str(s.candidate.model), str(s.baseline.model)
        # Paired window by window, averaged in log space: a geometric mean and a t-interval.
        logs = np.log(
            [
                steps[(candidate, r)].throughput_rps / steps[(baseline, r)].throughput_rps
                for r in range(3)
            ]
        )
        half = stats.t.ppf(0.975, 2) * np.std(logs, ddof=1) / math.sqrt(3)
        assert s.throughput.mean == pytest.approx(np.exp(np.mean(logs)))
        assert (s.throughput.low, s.throughput.high) == pytest.approx(
            (np.exp(np.mean(logs) - half), np.exp(np.mean(logs) + half))
        )
        p50_logs = np.log(
            [
                np.percentile(samples[(baseline, s.concurrency, r)], 50)
                / np.percentile(samples[(candidate, s.concurrency, r)], 50)
                for r in range(3)
            ]
        )
        assert s.p50.mean == pytest.approx(np.exp(np.mean(p50_logs)))
        if s.kind is Axis.VARIANT:
            assert s.p50.low > 1.0  # depthwise was made ~20 % faster
    written = build_report(tmp_path)
    report_md, report_html, verdict = written.markdown, written.html, written.verdict
    assert "data:image/png;base64," in report_html.read_text()
    assert report_md.read_text().count("![") == 5
    assert all(
        (tmp_path / "plots" / f).stat().st_size > 10_000
        for f in (
            "latency.png",
            "throughput.png",
            "latency_vs_throughput.png",
            "cdf.png",
            "tradeoff.png",
        )
    )
    # One row per comparison and level (2 variant pairs + 2 runtime pairs, at 2 levels).
    _, rows = written.comparisons
    assert len(rows) == 8 and (tmp_path / "steps.csv").read_text().count("\n") == 25
    header, first = (tmp_path / "steps.csv").read_text().splitlines()[:2]
    assert first.split(",")[header.split(",").index("protocol")] == "native"  # several: apart
    assert {row[-1] for row in rows} <= {"faster", "slower", "equivalent", "inconclusive"}
    text = report_md.read_text()
    assert "## The answer" in text and "## Comparisons" in text
    assert written.answer is not None and str(written.answer.recommended).startswith("depthwise")
    assert not [line for line in verdict if "noisy" not in line]


def test_results_files_are_typed_and_refuse_what_they_cannot_read(tmp_path: Path) -> None:
    """results.json round-trips (NaN included); an older file or a broken one is refused with
    a message naming the problem, not a KeyError."""
    import dataclasses

    plan = LoadPlan(concurrency=(1,), repeats=1)
    steps = [helpers.step_result("original", 1, 0, 0.0, mean_ms=math.nan)]
    record = run_record(plan, steps=steps)
    record.save(tmp_path)
    loaded = RunRecord.load(tmp_path)
    assert math.isnan(loaded.steps[0].mean_ms) and loaded.plan == plan
    assert dataclasses.replace(loaded, steps=[]) == dataclasses.replace(record, steps=[])
    text = json.loads((tmp_path / "results.json").read_text())
    del text["schema"]
    (tmp_path / "results.json").write_text(json.dumps(text))
    with pytest.raises(ResultsError, match="another mnist-serve"):
        RunRecord.load(tmp_path)
    text["schema"] = SCHEMA
    text["plan"]["repeats"] = 0
    del text["machine"]
    (tmp_path / "results.json").write_text(json.dumps(text))
    problems = r"plan: Value error, .*repeats >= 1.*; machine: Field required"
    with pytest.raises(ResultsError, match=problems):
        RunRecord.load(tmp_path)
    with pytest.raises(ResultsError, match="cannot read"):
        RunRecord.load(tmp_path / "nowhere")


@pytest.mark.slow
def test_report_joins_the_open_loop_and_the_previous_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with openloop.json beside results.json gets the SLO tables, a rate claim and a
    two-panel trade-off; a second comparable run says whether the speedup moved."""
    from loadtests import history
    from loadtests.openloop_results import OpenLoopRecord, RatePoint, Slo
    from loadtests.results import Percentiles

    monkeypatch.setenv(history.ENV_VAR, str(tmp_path / "history.sqlite"))
    first, second = tmp_path / "run-a", tmp_path / "run-b"
    for folder, seed in ((first, 7), (second, 8)):
        write_recorded_set(folder, np.random.default_rng(seed))
        run = RunRecord.load(folder)
        history.store(history.default_path(tmp_path), folder, run.plan, run)
    models = list(LoadPlan(runtimes=("savedmodel", "onnx")).models())
    points = [
        RatePoint(m, rate, 100, 100, rate, Percentiles(1, 2, 3, 4, 5), 4.0, rate <= cap, 0.2)
        for m, cap in zip(models, (400, 800, 400, 800), strict=True)
        for rate in (400, 800, 1600)
        if rate <= 2 * cap
    ]
    best = {m: max(p.rate for p in points if p.model == m and p.met) for m in models}
    OpenLoopRecord(Slo(99, 20), 2, [400, 800, 1600], models, best, points).save(second)
    written = build_report(second)
    text = written.markdown.read_text()
    assert "Open loop: the highest Poisson arrival rate within p99 <= 20 ms" in text
    assert "| depthwise@onnx | 800 | 2.00x | 1.00 | 4.00 | 0.20 |" in text
    rate = next(c for c in written.claims if "arrival rate" in c.claim and "onnx" in c.claim)
    assert rate.verdict == "holds" and "800 vs 400 req/s of original@onnx" in rate.measured
    assert "sustains 2.00x the arrival rate" in written.bottom_line
    assert "Against the previous comparable run 1 (run-a" in text
    assert "Previous comparable run: [run 1 (run-a, " in text and "](../run-a/report.md)" in text
    assert '<a href="../run-a/report.html">run 1 (run-a' in written.html.read_text()
    moved = [line for line in written.verdict if line.startswith("Against run 1")]
    assert len(moved) == 1 and "speedup" in moved[0]
    assert "depthwise@savedmodel over original@savedmodel" in text
    assert "Open loop" not in build_report(first).markdown.read_text()
    from loadtests.analysis import load_openloop
    from loadtests.plots import tradeoff_figure

    for folder, panels in ((second, 2), (first, 1)):  # no open loop in the first: one panel
        record, levels = load_levels(folder)
        figure = tradeoff_figure(record, levels, load_openloop(folder))
        assert len(figure.axes) == panels


def test_single_repeat_has_no_interval() -> None:
    interval = mean_interval([1.3])
    assert interval.mean == 1.3 and math.isnan(interval.low) and not interval.excludes(1.0)


def test_drift_flags_a_repeat_off_its_siblings() -> None:
    """Repeats 100, 102, 130 req/s: the third is over 20 % off the median; the verdict says
    the run was noisy and what to change. Repeats within 20 % are not flagged."""
    from loadtests.analysis import Level, drift, noise_line

    def level(target: Label, throughput: list[float]) -> Level:
        return Level(target, 8, np.empty(0), throughput, [], [], 0, 0, 0.0, 0.0, 0.0, 0.0)

    a, b = Label("a"), Label("b")
    steady = {(a, 8): level(a, [100, 104, 97])}
    assert noise_line(steady) is None and drift(steady)[0].flagged == []
    noisy = {**steady, (b, 8): level(b, [100, 102, 130])}
    assert drift(noisy)[1].flagged == [3] and drift(noisy)[1].spread == pytest.approx(0.3)
    line = noise_line(noisy)
    assert line is not None and "b at 8 clients (repeat 3)" in line and "--repeats" in line
    failed = {**steady, (b, 8): level(b, [0.0, 0.0, 95.0])}  # a target that failed mostly
    assert [d.target for d in drift(failed)] == [a]  # no drift to speak of (it once divided by 0)
    one_failed = {(b, 8): level(b, [100.0, 0.0, 104.0])}  # a spread without bound, not 0 %
    assert math.isinf(drift(one_failed)[0].spread) and drift(one_failed)[0].flagged == [2]


def test_a_lone_window_that_finished_nothing_is_a_stall_not_a_failed_run() -> None:
    """A window in which no request finished and none failed, while the same model's other
    windows at that load served, is a stall (the run does not fail for it); a window of
    failures, or a model none of whose windows served, still fails the run."""
    from tests.helpers import run_record, step_result

    steps = [
        step_result("original", 1, 0, 200.0),
        step_result("original", 1, 1, 0.0, requests=0),  # a stall
        step_result("depthwise", 1, 0, 0.0, requests=0),  # never served at this load
        step_result("depthwise", 32, 0, 0.0, requests=50, errors=50),  # every request failed
        step_result("depthwise", 32, 1, 300.0),
    ]
    record = run_record(LoadPlan(), steps=steps)
    assert len(record.failed_steps) == 3
    assert record.stalled_steps == [steps[1]]
    assert record.broken_steps == [steps[2], steps[3]]
