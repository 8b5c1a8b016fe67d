"""The latency target and the search for the highest rate that meets it; and the open-loop
mode of `mnist-serve loadtest` end to end against a real server."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadtests.openloop import OpenLoopResult, Sample
from loadtests.results import OpenLoopRecord, Percentiles, RatePoint, Slo
from loadtests.slo import find_max_rate
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
    assert best == 200  # all pass: the highest tried (a lower bound)
    best, runs = find_max_rate(lambda r: point(r, capacity=10), [100, 200], bisections=2)
    assert best == 0 and [r.rate for r in runs] == [100, 50, 25]  # none met: 0


def fake_run(slow: int, requests: int = 100) -> OpenLoopResult:
    """A run of ``requests`` answers in 1 ms, ``slow`` of them in 100 ms."""
    samples = [Sample(0.0, 0.0, 0.1 if i < slow else 0.001, 200) for i in range(requests)]
    return OpenLoopResult(50, 2.0, samples)


def test_a_miss_is_run_again_and_judged_on_both_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """One stalled request in 100 misses p99 <= 50 ms; run again clean, the 200 requests pooled
    meet it (one stall is noise). A real limit misses in both runs and stays a miss."""
    from loadtests import slo

    queued: list[OpenLoopResult] = []

    async def fake_open_loop(*args: object, **kwargs: object) -> OpenLoopResult:
        return queued.pop(0)

    monkeypatch.setattr(slo, "run_open_loop", fake_open_loop)
    target = Slo(99, 50)
    queued[:] = [fake_run(slow=1), fake_run(slow=0)]
    point = slo.measure_rate("http://127.0.0.1:1", "m", [b"{}"], 50, 2, target, 100)
    assert point.met and point.runs == 2 and point.requests == 200
    queued[:] = [fake_run(slow=5), fake_run(slow=4)]
    point = slo.measure_rate("http://127.0.0.1:1", "m", [b"{}"], 50, 2, target, 100)
    assert not point.met and point.runs == 2
    queued[:] = [fake_run(slow=0)]
    assert slo.measure_rate("http://127.0.0.1:1", "m", [b"{}"], 50, 2, target, 100).runs == 1
    assert slo.run_seconds(100, 4, 1000) == 10 and slo.run_seconds(800, 4, 1000) == 4


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
            "20,40",
            "--duration",
            "2s",
            "--min-requests",
            "40",
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
    assert record.max_rate == {"original": 40, "depthwise": 40}
    assert all(p.ok == p.requests > 0 and p.met for p in record.points)
    assert record.slo == Slo(99, 2000) and record.models == ["original", "depthwise"]
    assert "max rate under SLO" in (tmp_path / "openloop.md").read_text()
    assert "depthwise: 40 req/s within p99 <= 2000 ms (1.00x original)" in result.output


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
            "25,50",
            "--min-requests",
            "25",
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
        "original@savedmodel": 50,
        "depthwise@savedmodel": 50,
    }
