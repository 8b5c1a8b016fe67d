"""The latency target and the search for the highest rate that meets it; and the open-loop
mode of `mnist-serve loadtest` end to end against a real server."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loadtests.openloop import OpenLoopResult, Sample
from loadtests.openloop_results import LoadGenVerdict, OpenLoopRecord, RatePoint, Slo
from loadtests.results import Percentiles
from loadtests.slo import RateSearch, find_max_rate, under_ceiling
from mnist_serve.cli import app


def test_slo_parses_and_rejects() -> None:
    assert Slo.parse("p99=20ms") == Slo(99, 20) and Slo.parse(" p99.9=5.5ms ") == Slo(99.9, 5.5)
    for bad in ("p99=20", "99=20ms", "p100=20ms", "p99=0ms", "p99<20ms"):
        with pytest.raises(ValueError, match="p99=20ms"):
            Slo.parse(bad)


def test_failures_count_as_infinitely_slow() -> None:
    """Refusing work cannot meet a target: 2 % failed requests break p99 whatever the rest."""
    fast = [Sample(0.0, 0.0, 0.001, 200)] * 98
    result = OpenLoopResult(100, 1.0, fast + [Sample(0.0, 0.0, 0.001, 503)] * 2)
    assert math.isinf(Slo(99, 20).latency_ms(result)) and not Slo(99, 20).met(result)
    assert Slo(95, 20).met(result)


def point(rate: float, capacity: float) -> RatePoint:
    """A fake server that meets the SLO below ``capacity`` requests/s."""
    met = rate <= capacity
    latency = Percentiles(1, 1, 1, 1, 1)
    return RatePoint("m", rate, 100, 100, rate, latency, 1 if met else math.inf, met, 0)


def test_search_bisects_between_the_last_pass_and_the_first_fail() -> None:
    seen: list[float] = []

    def measure(rate: float) -> RatePoint:
        seen.append(rate)
        return point(rate, capacity=530)

    best, runs = find_max_rate(measure, [100, 200, 400, 800, 1600], bisections=4)
    assert seen[:4] == [100, 200, 400, 800]  # stops at the first failure
    assert seen[4:] == [600, 500, 550, 525]  # then halves the gap
    assert best == 525 and len(runs) == 8


def test_search_edges() -> None:
    best, _ = find_max_rate(lambda r: point(r, capacity=10_000), [100, 200])
    assert best == 200  # all pass, no ceiling: the highest tried (a lower bound)
    best, runs = find_max_rate(lambda r: point(r, capacity=10), [100, 200], bisections=2)
    assert best == 0 and [r.rate for r in runs] == [100, 50, 25]  # none met: 0


def test_every_rate_met_goes_on_upward_to_the_ceiling() -> None:
    """No false tie: when every rate given is met, the rate doubles (up to the ceiling) until
    one misses, then bisects as usual; at the ceiling the answer stays a lower bound."""
    best, runs = find_max_rate(lambda r: point(r, capacity=700), [100, 200], 2, ceiling=2000)
    assert [r.rate for r in runs] == [100, 200, 400, 800, 600, 700] and best == 700
    best, runs = find_max_rate(lambda r: point(r, capacity=10_000), [100, 200], ceiling=1000)
    assert [r.rate for r in runs] == [100, 200, 400, 800, 1000] and best == 1000
    search = RateSearch([100, 200], ceiling=None)
    search.record(point(100, 10_000))
    search.record(point(200, 10_000))
    assert search.next_rate() is None and search.extended == []


def test_a_built_in_ladder_is_cut_at_the_clients_ceiling() -> None:
    """Explore's and tune's ladders: no rate above what the client can measure."""
    assert under_ceiling([400, 1200, 3000, 6000], None) == [400, 1200, 3000, 6000]
    assert under_ceiling([400, 1200, 3000, 6000], 5000) == [400, 1200, 3000]
    assert under_ceiling([400, 1200], 300) == [300]  # below every rate: the ceiling alone
    assert under_ceiling([400, 1200], 0) == [400, 1200]  # none found: the ladder as given
    best, runs = find_max_rate(lambda r: point(r, capacity=10_000), under_ceiling([400, 1200,
        3000, 6000], 5000), 2, 5000)  # fmt: skip
    assert best == 5000 and [p.rate for p in runs] == [400, 1200, 3000, 5000]


def verdict(valid: bool, latency_met: bool, queries: int, needs: int | None) -> LoadGenVerdict:
    """A LoadGen verdict as :func:`loadtests.loadgen.read_detail_log` gives it."""
    latency = Percentiles(1, 2, 3, 4, 5)
    return LoadGenVerdict(
        valid,
        latency_met,
        needs is None,
        True,
        True,
        queries,
        0,
        needs,
        50,
        50,
        50,
        latency,
        4.5,
        1.5,
        6,
        "6.0.17",
    )


def test_a_rate_not_valid_is_run_once_more(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """LoadGen's verdict decides a rate. VALID: one run. INVALID: one more run, whose verdict
    stands (a stall passes, a real limit fails twice). Undecided (the p99 met on too few
    requests): one more run with as many requests as LoadGen asks for; asking for over 10x the
    minimum: left undecided, "needs N more requests"."""
    from loadtests import loadgen, slo

    queued: list[LoadGenVerdict] = []
    asked: list[int] = []

    def fake_run(url: str, payloads: object, rate: float, target: Slo, folder: Path, **kw: Any):
        asked.append(kw["min_queries"])
        return loadgen.LoadGenRun(queued.pop(0), 100, 0, 0.1, folder)

    monkeypatch.setattr(slo.loadgen, "run_server_scenario", fake_run)
    target = Slo(99, 50)

    def measure() -> RatePoint:
        asked.clear()
        return slo.measure_rate(
            "http://127.0.0.1:1", "m@onnx", [b"{}"], 50, 2, target, 100, tmp_path
        )

    queued[:] = [verdict(True, True, 100, None)]
    point = measure()
    assert asked == [100] and point.met and point.runs == 1 and point.first is None
    queued[:] = [verdict(False, True, 100, 359), verdict(True, True, 459, None)]
    point = measure()
    assert asked == [100, 459] and point.met and point.runs == 2 and point.verdict == "VALID"
    assert point.loadgen is not None and point.first is not None and point.first.undecided
    assert point.loadgen.summary == "loadgen/m-onnx-50-2/mlperf_log_summary.txt"
    assert point.first.summary == "loadgen/m-onnx-50/mlperf_log_summary.txt"
    queued[:] = [verdict(False, False, 100, 2000), verdict(True, True, 100, None)]
    point = measure()
    assert asked == [100, 100] and point.met and point.runs == 2  # one stall: met
    queued[:] = [verdict(False, False, 100, 2000), verdict(False, False, 100, 2500)]
    point = measure()
    assert not point.met and point.verdict == "INVALID" and not point.undecided
    queued[:] = [verdict(False, True, 100, 1000)]  # 1,100 > 10 x 100: not run again
    point = measure()
    assert asked == [100] and point.runs == 1 and point.undecided
    assert point.verdict == "undecided: needs 1,000 more requests"
    # A stall, then the bound met on too few requests (seen: "needs 1 more"): a third run.
    queued[:] = [verdict(False, False, 100, 2000), verdict(False, True, 100, 1),
                 verdict(True, True, 101, None)]  # fmt: skip
    point = measure()
    assert asked == [100, 100, 101] and point.met and point.runs == 3
    assert point.first is not None and not point.first.undecided  # the INVALID one
    assert (
        point.loadgen is not None
        and point.loadgen.summary == "loadgen/m-onnx-50-3/mlperf_log_summary.txt"
    )
    queued[:] = [verdict(False, False, 100, 2000), verdict(False, True, 100, 1000)]
    point = measure()  # asking for over 10x the minimum: the second run stands
    assert asked == [100, 100] and point.runs == 2 and point.undecided


def test_searches_are_interleaved_in_alternating_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Model A (capacity 300) and B (capacity 900): each round runs every model still
    searching, in alternating order, so drift on the machine does not favour one."""
    from loadtests import slo

    calls: list[tuple[str, float]] = []
    capacity = {"a": 300, "b": 900}

    def fake_measure(
        url: str, model: str, payloads: list[bytes], rate: float, *args: object
    ) -> RatePoint:
        calls.append((model, rate))
        met = rate <= capacity[model]
        return RatePoint(
            model, rate, 100, 100, rate, Percentiles(1, 1, 1, 1, 1), 1 if met else math.inf, met, 0
        )

    monkeypatch.setattr(slo, "measure_rate", fake_measure)
    monkeypatch.setattr(slo, "bodies", lambda mnist, model: [b"{}"])
    record = slo.run_sweep(
        "http://127.0.0.1:1", ["a", "b"], [200, 400, 800, 1600], 1, Slo(99, 20), tmp_path
    )
    assert calls[:6] == [("a", 200), ("b", 200), ("b", 400), ("a", 400), ("a", 300), ("b", 800)]
    assert record.max_rate == {"a": 300, "b": 900}  # 4 halvings each: 200-400, 800-1600
    assert OpenLoopRecord.load(tmp_path) == record


@pytest.mark.slow
def test_open_loop_mode_end_to_end(models_dir: Path, mnist_path: Path, tmp_path: Path) -> None:
    """Two rates, a loose SLO: both models meet it, the report and the data are written."""
    result = CliRunner().invoke(
        app,
        [
            "loadtest",
            "--arrival",
            "poisson",
            "--rates",
            "100,200",
            "--duration",
            "1s",
            "--min-requests",
            "460",
            "--ceiling",
            "0",
            "--slo",
            "p99=2000ms",
            "--models",
            str(models_dir),
            "--data",
            str(mnist_path),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    record = OpenLoopRecord.load(tmp_path)
    assert record.max_rate == {"original": 200, "depthwise": 200}
    assert all(p.ok == p.requests >= 460 and p.verdict == "VALID" for p in record.points)
    assert all(p.cpu_steal is not None for p in record.points)  # read around each run
    assert "| CPU steal |" in (tmp_path / "report.md").read_text()
    assert record.slo == Slo(99, 2000) and record.models == ["original", "depthwise"]
    assert record.generator.startswith("MLPerf LoadGen 6.0.17")
    # One report for every mode: report.md and report.html with the open-loop section, the
    # test accuracy, LoadGen's verdict per rate and its summaries linked.
    text = (tmp_path / "report.md").read_text()
    assert "Open loop: the highest Poisson arrival rate within p99 <= 2000 ms" in text
    assert "max rate under SLO" in text and "| VALID |" in text
    assert "## The variants (training figures)" in text and "test accuracy" in text
    for point in record.points:
        assert point.loadgen is not None
        summary = tmp_path / point.loadgen.summary
        assert "Result is : VALID" in summary.read_text()
        assert f"]({point.loadgen.summary})" in text
    assert (
        'href="loadgen/original-100/mlperf_log_summary.txt"'
        in (tmp_path / "report.html").read_text()
    )
    # Both met every rate tried: a ceiling, not a tie.
    said = "depthwise: >= 200 req/s within p99 <= 2000 ms (vs original: not separated)"
    assert said in result.output
    assert "the rates did not separate the models: give higher --rates" in result.output
    assert "1.00x" not in text


@pytest.mark.slow
def test_demo_prints_the_bottom_line_and_reports_both_loops(
    models_dir: Path, mnist_path: Path, tmp_path: Path
) -> None:
    """The main job end to end on small models: closed loop, then open loop on the same
    service; the bottom line and the claims table printed; one report with both."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--models",
            str(models_dir),
            "--data",
            str(mnist_path),
            "--runtimes",
            "savedmodel",
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--repeats",
            "2",
            "--budget",
            "20s",
            "--rates",
            "100,200",
            "--min-requests",
            "460",
            "--ceiling",
            "0",
            "--slo",
            "p99=5000ms",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200", "MNIST_SERVE_HISTORY": str(tmp_path / "h.sqlite")},
    )
    assert result.exit_code == 0, result.output
    # The one-screen answer: what to deploy, the effect, the comparisons, the other claims.
    assert "Deploy depthwise@savedmodel" in result.output or (
        "Deploy original@savedmodel" in result.output
    )
    assert "Effect:" in result.output and "window pairs" in result.output
    assert "Comparisons: throughput" in result.output
    assert "The seed study's other claims" in result.output
    assert "highest Poisson arrival rate" in result.output  # the open-loop claim, printed
    text = (out / "report.md").read_text()
    assert "## Claims: the seed study's against what was measured" in text
    assert "Open loop: the highest Poisson arrival rate within p99 <= 5000 ms" in text
    assert "started by the load test" in text  # one service served both loops
    assert OpenLoopRecord.load(out).max_rate == {
        "original@savedmodel": 200,
        "depthwise@savedmodel": 200,
    }


def test_unreadable_digits_end_the_open_loop_with_a_load_test_error(tmp_path: Path) -> None:
    """The open loop's digits come from MNIST as the closed loop's do: an unreadable file is a
    LoadTestError naming it (the CLI's "load test failed: ..."), not a traceback."""
    from loadtests.runner import LoadTestError
    from loadtests.slo import bodies

    bad = tmp_path / "bad.npz"
    bad.write_text("not digits")
    with pytest.raises(LoadTestError, match=r"the digits to send cannot be read: .*bad\.npz"):
        bodies(str(bad), "depthwise@onnx")
