"""The load-test runner and report: real Locust runs, and report maths checked against numpy."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from loadtests.analysis import Axis, comparisons, load_levels, speedups
from loadtests.labels import Label
from loadtests.procs import free_port
from loadtests.protocols import (
    GENERATOR_ERROR,
    PROTOCOLS,
    AnswerError,
    Protocol,
    decode,
    encode,
)
from loadtests.report import build_report
from loadtests.results import SCHEMA, LoadPlan, ResultsError, RunRecord, ServedVariant, Step
from loadtests.runner import (
    LoadTestError,
    Target,
    parse_duration,
    run_plan,
    target_service,
)
from loadtests.samples import Recorder
from loadtests.stats import mean_interval
from loadtests.windows import summarize
from modelrepo.contract import PIXELS, SIDE
from tests import helpers
from tests.helpers import REPO, Server, run_record


def test_durations_parse() -> None:
    assert [parse_duration(t) for t in ("20s", "20", "2m", "1m30s")] == [20, 20, 120, 90]
    for bad in ("", "0s", "fast", "-3s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("0s", minimum=0) == 0  # a warm-up may be switched off


def test_plan_crosses_variants_with_runtimes() -> None:
    plan = LoadPlan(variants=("a", "b"), runtimes=("savedmodel", "onnx"), concurrency=(1,))
    assert plan.models() == ("a@savedmodel", "b@savedmodel", "a@onnx", "b@onnx")
    assert [s.model for s in plan.steps()][4:8] == [
        "b@onnx",
        "a@onnx",
        "b@savedmodel",
        "a@savedmodel",
    ]
    assert LoadPlan(variants=("a",)).models() == ("a",)  # no runtime named: the server's default


def test_plan_alternates_variant_order_between_repeats() -> None:
    plan = LoadPlan(variants=("a", "b"), concurrency=(1, 8), repeats=3)
    order = [(s.concurrency, s.model) for s in plan.steps()]
    assert order == [
        (1, "a"),
        (1, "b"),
        (1, "b"),
        (1, "a"),
        (1, "a"),
        (1, "b"),
        (8, "a"),
        (8, "b"),
        (8, "b"),
        (8, "a"),
        (8, "a"),
        (8, "b"),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variants": ()},
        {"concurrency": (0,)},
        {"repeats": 0},
        {"mode": "xml"},
        {"runtimes": ("tensorrt",)},
        {"runtimes": ("onnx", "onnx")},
    ],
)
def test_plan_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LoadPlan(**kwargs)  # type: ignore[arg-type]


def test_recorder_discards_the_warmup() -> None:
    recorder = Recorder()
    recorder.start(warmup_s=0.05)
    recorder.add(1.0, True, True, 0.1, 0.5)  # during the warm-up
    time.sleep(0.06)
    recorder.add(1.5, True, False, 0.1, 0.5)
    data = recorder.drain()
    assert data["latency_ms"] == [1.5] and data["correct"] == [0.0]


def test_each_window_keeps_its_own_models_error_message(tmp_path: Path) -> None:
    """Two models failing with the same status in alternating windows: each window's step
    names its own model's message (the first per status of the whole run was copied into
    every window, so a step could show another model's error)."""
    from loadtests.schedule import Schedule, Slot
    from loadtests.windows import cut

    recorder = Recorder()
    recorder.start(warmup_s=0.0)
    time.sleep(0.01)  # requests that started after the (empty) warm-up
    recorder.add(1.0, False, False, 0, 0, status=404, error="no model a", window=0)
    recorder.add(1.0, False, False, 0, 0, status=404, error="no model b", window=1)
    merged = Recorder()  # through a worker's report to the master, as with --processes
    merged.merge(recorder.drain())
    merged.save(str(tmp_path / "samples.npz"))
    with np.load(tmp_path / "samples.npz") as data:
        everything = {key: data[key] for key in data.files}
    (tmp_path / "samples").mkdir()
    schedule = Schedule((Slot("a", "native"), Slot("b", "native")), (0, 1), 1.0, 0.0)
    steps = [Step(Label(name), 1, 0) for name in ("a", "b")]
    first, second = cut(everything, steps, {}, schedule, 1, tmp_path)
    assert [f.message for f in first.failures] == ["no model a"]
    assert [f.message for f in second.failures] == ["no model b"]


def test_a_workers_lost_last_report_is_said_on_the_steps_it_touches(tmp_path: Path) -> None:
    """Locust's master waits 0.5 s for its workers' last reports: one that comes later is
    lost, and its samples with it. The steps whose windows end within the last report interval
    say so (a worker's reports sent once it stopped are its last; the master counts the
    workers it heard last from); the earlier windows were reported before."""
    from loadtests.samples import REPORT_INTERVAL_S
    from loadtests.schedule import TAIL_S, Schedule, Slot
    from loadtests.windows import cut

    def warned(finals: list[bool]) -> list[bool]:
        master = Recorder()
        master.workers_expected = 2
        for worker, final in enumerate(finals):
            recorder = Recorder()
            recorder.start(warmup_s=0.0)
            time.sleep(0.01)
            for window in range(4):
                recorder.add(1.0, True, True, 0, 0, window=window)
            recorder.final = final
            master.merge(recorder.drain(), f"worker-{worker}")
        path = tmp_path / "samples.npz"
        master.save(str(path))
        with np.load(path) as data:
            everything = {key: data[key] for key in data.files}
        (tmp_path / "samples").mkdir(exist_ok=True)
        schedule = Schedule((Slot("a", "native"), Slot("b", "native")), (0, 1, 1, 0), 2.0, 0.0)
        steps = [Step(Label(m), 1, r) for r, m in enumerate("abba")]
        results = cut(everything, steps, {}, schedule, 2, tmp_path)
        said = [r.warnings for r in results]
        assert all(w == [] or w[0].startswith("1 Locust worker(s)' last report") for w in said)
        return [bool(w) for w in said]

    assert warned([True, True]) == [False, False, False, False]
    # The run ends 8 s + TAIL_S after the first window opens: windows ending in its last
    # REPORT_INTERVAL_S (3 s) lost samples, the two before had theirs reported already.
    assert 4 * 2.0 + TAIL_S - REPORT_INTERVAL_S == 5.5
    assert warned([True, False]) == [False, False, True, True]


def test_the_report_interval_is_locusts() -> None:
    """The window of samples a lost last report takes is Locust's worker report interval (read
    in a subprocess: importing Locust patches this process with gevent)."""
    from loadtests.samples import REPORT_INTERVAL_S

    done = subprocess.run(
        [sys.executable, "-c", "import locust.runners as r; print(r.WORKER_REPORT_INTERVAL)"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert float(done.stdout) == REPORT_INTERVAL_S


@pytest.mark.slow
def test_a_service_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    """An empty model folder: the service exits at once; the load test says so, with its log."""
    (tmp_path / "models").mkdir()
    service = target_service(None, None, tmp_path / "models", tmp_path, ("--strict-models",))
    with pytest.raises(LoadTestError, match=r"did not start \(log: .*server\.log\)"), service:
        pass


def test_refused_connection_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LoadTestError, match="cannot reach"):
        run_plan(
            LoadPlan(concurrency=(1,), duration_s=1, repeats=1),
            tmp_path,
            Target(url, None, started_here=False),
        )
    assert time.monotonic() - started < 15


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


@pytest.mark.slow
def test_short_real_run_against_a_real_service(
    server: Server, tmp_path: Path, mnist_path: Path
) -> None:
    plan = LoadPlan(
        runtimes=("savedmodel", "onnx"),
        concurrency=(1, 4),
        duration_s=2,
        warmup_s=1,
        repeats=1,
        mnist=str(mnist_path),
    )
    seen: list[Step] = []

    def on_step(step: Step, index: int, total: int, result: object) -> None:
        if result is not None:
            seen.append(step)

    record = run_plan(plan, tmp_path, Target(server.url, None, False), on_step=on_step)
    assert len(seen) == 8 and len(record.steps) == 8
    assert {(s.variant, s.runtime) for s in record.steps} == {
        (v, r) for v in ("original", "depthwise") for r in ("savedmodel", "onnx")
    }
    for step in record.steps:
        assert step.throughput_rps > 0 and step.errors == 0 and step.requests > 20
        assert step.accuracy > 0.85
        assert step.server_model_ms_p50 > 0
    p50s = [step.latency_ms.p50 for step in record.steps]
    assert any(p != round(p) for p in p50s), "percentiles must keep sub-millisecond precision"
    assert RunRecord.load(tmp_path) == record  # the file round-trips to the same record
    written = build_report(tmp_path)
    assert written.html.stat().st_size > 20_000 and len(written.comparisons[1]) == 8
    assert record.stops and all(stop.reason == "fixed windows" for stop in record.stops)


@pytest.mark.slow
def test_sequential_windows_against_a_real_service(
    server: Server, tmp_path: Path, mnist_path: Path
) -> None:
    """The sequential plan for real: one Locust run drives both models in alternating
    one-second windows (each window its own samples), the stopping rule decides when the
    level ends, and the report opens with the answer."""
    plan = LoadPlan(
        runtimes=("onnx",),
        concurrency=(4,),
        duration_s=1,
        warmup_s=1,
        repeats=2,
        mnist=str(mnist_path),
        precision=0.3,
        budget_s=45,
    )
    checks: list[object] = []
    record = run_plan(
        plan,
        tmp_path,
        Target(server.url, None, False),
        on_check=lambda level, found, stop: checks.append(stop),
    )
    (stop,) = record.stops
    assert stop.reason in ("precision reached", "budget spent") and checks[-1] == stop
    assert stop.pairs >= 8 and len(record.steps) == 2 * stop.pairs  # MIN_PAIRS at least
    order = [s.target.variant for s in record.steps[:4]]
    assert order == ["original", "depthwise", "depthwise", "original"]
    for step in record.steps:
        assert step.requests > 20 and step.errors == 0 and step.window_s == pytest.approx(0.9)
        assert (tmp_path / step.samples).is_file()
    assert len({s.samples for s in record.steps}) == len(record.steps)
    written = build_report(tmp_path)
    assert written.answer is not None and "## The answer" in written.markdown.read_text()
    (row,) = written.comparisons[1]
    assert row[-1] in ("faster", "slower", "equivalent", "inconclusive") and row[-2] == str(
        stop.pairs
    )


@pytest.mark.slow
def test_unreadable_digits_are_named_before_any_locust(server: Server, tmp_path: Path) -> None:
    """Read once by the runner: with --processes, each Locust worker stopping on it left the
    master waiting for them until the run's time limit."""
    bad = tmp_path / "bad.npz"
    bad.write_text("not digits")
    plan = LoadPlan(
        variants=("depthwise",), concurrency=(1,), duration_s=1, repeats=1, processes=2,
        mnist=str(bad),
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(LoadTestError, match="the digits to send cannot be read"):
        run_plan(plan, tmp_path, Target(server.url, None, False))
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_locustfile_runs_on_its_own(server: Server, tmp_path: Path, mnist_path: Path) -> None:
    samples = tmp_path / "samples.npz"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            "--headless",
            "--host",
            server.url,
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "2s",
            "--variant",
            "original",
            "--mode",
            "png",
            "--mnist",
            str(mnist_path),
            "--samples-out",
            str(samples),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(samples) as data:
        assert len(data["latency_ms"]) > 10 and data["ok"].all()


@pytest.mark.slow
def test_distributed_mode_gathers_every_workers_samples(
    server: Server, tmp_path: Path, mnist_path: Path
) -> None:
    plan = LoadPlan(
        variants=("depthwise",),
        concurrency=(4,),
        duration_s=2,
        warmup_s=1,
        repeats=1,
        processes=2,
        mnist=str(mnist_path),
    )
    record = run_plan(plan, tmp_path, Target(server.url, None, False))
    (step,) = record.steps
    assert step.requests > 50 and step.errors == 0
    assert step.generator_cpu_s > 0  # reported by the workers, summed by the master
    assert not [w for w in step.warnings if "last report" in w]  # both reached the master


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_protocol_encodes_the_same_digit(protocol: str) -> None:
    digit = (np.arange(PIXELS).reshape(SIDE, SIDE) % 256).astype(np.uint8)
    request = encode(Protocol(protocol), "json", "depthwise@onnx", digit)
    assert "depthwise@onnx" in request.path
    if protocol in ("kserve-http", "kserve-grpc"):
        raw = request.body[-784 * 4 :]
        assert np.frombuffer(raw, "<f4") == pytest.approx(digit.ravel() / 255.0)
    else:
        data = json.loads(request.body)
        pixels = data["image"] if protocol == "native" else data["instances"][0]
        assert np.asarray(pixels).ravel() == pytest.approx(digit.ravel() / 255.0, abs=1e-4)
    if protocol != "native":
        with pytest.raises(ValueError, match="native protocol only"):
            encode(Protocol(protocol), "png", "depthwise", digit)


def test_answers_decode_in_each_protocol() -> None:
    row = np.linspace(0, 1, 10, dtype=np.float32)
    native = json.dumps({"predictions": [{"probabilities": row.tolist()}]}).encode()
    tfserving = json.dumps({"predictions": [row.tolist()]}).encode()
    header = json.dumps({"outputs": [{"parameters": {"binary_data_size": 40}}]}).encode()
    binary = header + row.tobytes()
    assert decode(Protocol.NATIVE, native) == pytest.approx(row)
    assert decode(Protocol.TFSERVING, tfserving) == pytest.approx(row)
    assert decode(Protocol.KSERVE_HTTP, binary, str(len(header))) == pytest.approx(row)
    with pytest.raises(AnswerError):
        decode(Protocol.TFSERVING, b'{"predictions": [[0.5, 0.5]]}')
    with pytest.raises(AnswerError):
        decode(Protocol.NATIVE, b"<html>")


def test_plan_sweeps_protocols_and_compares_them() -> None:
    native, grpc = Protocol.NATIVE, Protocol.KSERVE_GRPC
    plan = LoadPlan(variants=("depthwise",), protocols=(native, grpc), repeats=1, concurrency=(1,))
    native_label, grpc_label = (
        Label("depthwise", None, native, True),
        Label("depthwise", None, grpc, True),
    )
    assert [s.target for s in plan.steps()] == [native_label, grpc_label]
    assert [str(s.target) for s in plan.steps()] == [
        "depthwise via native",
        "depthwise via kserve-grpc",
    ]
    assert comparisons(plan) == [(Axis.PROTOCOL, native_label, grpc_label)]
    assert str(Label("depthwise", "onnx")) == "depthwise@onnx"  # one protocol: not shown
    with pytest.raises(ValueError, match="protocols"):
        LoadPlan(protocols=("soap",))  # type: ignore[arg-type]  # text from outside is checked
    with pytest.raises(ValueError, match="native protocol only"):
        LoadPlan(protocols=(Protocol.TFSERVING,), mode="png")


@pytest.mark.slow
def test_load_test_speaks_every_protocol(
    models_dir: Path, tmp_path: Path, mnist_path: Path
) -> None:
    """One model over the four protocols against a service the load test starts (gRPC on)."""
    plan = LoadPlan(
        variants=("depthwise",),
        runtimes=("onnx",),
        protocols=PROTOCOLS,
        concurrency=(2,),
        duration_s=2,
        warmup_s=1,
        repeats=1,
        mnist=str(mnist_path),
    )
    with target_service(None, None, models_dir, tmp_path, grpc=True) as target:
        record = run_plan(plan, tmp_path, target)
    assert record.started_server and record.grpc_target == target.grpc_url
    assert [s.protocol for s in record.steps] == list(PROTOCOLS)
    for step in record.steps:
        assert step.errors == 0 and step.requests > 20, step
        assert step.accuracy > 0.85 and step.runtime == "onnx"
    written = build_report(tmp_path)
    # One Locust run drove all four in turn (HTTP and gRPC users); each compared with native.
    assert [row[1] for row in written.comparisons[1]] == [
        f"depthwise@onnx via {p}" for p in PROTOCOLS[1:]
    ]
    assert "## Comparisons" in written.markdown.read_text()


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


@pytest.mark.slow
def test_every_scheduled_target_is_encoded_before_the_clock_starts(
    tmp_path: Path, mnist_path: Path
) -> None:
    """Locust's init (before the run's timer) encodes each slot's payloads, reading MNIST
    once: built on first use (about half a second each, no user sending meanwhile) they ate
    into the first windows. In a subprocess: the Locust file patches gevent and gRPC."""
    from loadtests.schedule import Schedule, Slot

    slots = tuple(Slot(f"{v}@onnx", "native") for v in ("original", "depthwise"))
    Schedule(slots, (0, 1, 1, 0), 1.0, 1.0).save(tmp_path / "schedule.json")
    probe = (
        "import time; from types import SimpleNamespace as N;"
        "import loadtests.locustfile as lf; from loadtests.payloads import mnist_data;"
        f"options = N(schedule={str(tmp_path / 'schedule.json')!r}, mnist={str(mnist_path)!r},"
        " mode='json');"
        "lf.on_init(N(parsed_options=options, runner=None));"
        "print(len(lf.SLOT_PAYLOADS), mnist_data.cache_info().misses)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "1"]  # both targets encoded, MNIST read once


@pytest.mark.slow
def test_unreadable_digits_stop_locust_with_the_cause(tmp_path: Path) -> None:
    """The payloads are built in Locust's init: a bad MNIST file ends the run with exit 1 and
    the cause on stderr (the runner shows both). Built in a task, the error only emptied the
    windows under --exit-code-on-error 0, and the report said "no request finished"."""
    from loadtests.schedule import Schedule, Slot

    Schedule((Slot("depthwise@onnx", "native"),), (0,), 1.0, 0.5).save(tmp_path / "s.json")
    bad = tmp_path / "bad.npz"
    bad.write_text("not digits")
    locust = Path(sys.executable).with_name("locust")
    done = subprocess.run(
        [str(locust), "-f", "loadtests/locustfile.py", "MnistUser", "--headless", "-u", "1",
         "-r", "1", "-t", "2s", "--host", f"http://127.0.0.1:{free_port()}",
         "--schedule", str(tmp_path / "s.json"), "--mnist", str(bad),
         "--exit-code-on-error", "0", "--loglevel", "WARNING", "--only-summary"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 1 and "not a readable .npz file" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_a_task_that_raises_is_a_failed_request_with_its_cause(tmp_path: Path) -> None:
    """Locust logs an exception raised in a task and goes on, and the runner's
    --exit-code-on-error 0 keeps its exit code 0: the windows were empty and the report said
    "no request finished", without the cause. Each is now a failed request of its window
    ("load generator error"), with the exception as its message. A user class that raises,
    loaded beside ours, stands for a fault in a task."""
    raising = tmp_path / "raising.py"
    raising.write_text(
        "from locust import User, constant, task\n"
        "class RaisingUser(User):\n"
        "    wait_time = constant(0.05)\n"
        "    @task\n"
        "    def predict(self):\n"
        "        raise RuntimeError('the digit could not be encoded')\n"
    )
    samples = tmp_path / "samples.npz"
    locust = Path(sys.executable).with_name("locust")
    done = subprocess.run(
        [str(locust), "-f", f"loadtests/locustfile.py,{raising}", "RaisingUser", "--headless",
         "-u", "1", "-r", "1", "-t", "2s", "--host", f"http://127.0.0.1:{free_port()}",
         "--samples-out", str(samples), "--warmup", "0",
         "--exit-code-on-error", "0", "--loglevel", "WARNING", "--only-summary"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(samples) as data:
        everything = {key: data[key] for key in data.files}
    assert len(everything["ok"]) > 5 and not everything["ok"].any()
    assert set(everything["status"]) == {GENERATOR_ERROR}
    assert list(everything["error_message"]) == ["RuntimeError: the digit could not be encoded"]
    step = summarize(Step(Label("a"), 1, 0), "onnx", everything, 1, "s.npz", window_s=2.0)
    assert step.failure_line.endswith(
        "x load generator error: RuntimeError: the digit could not be encoded"
    )
