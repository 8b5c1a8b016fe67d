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


@pytest.mark.slow
def test_open_loop_mode_end_to_end(models_dir: Path, mnist_path: Path, tmp_path: Path) -> None:
    """Two rates, a loose SLO: both models meet it, the report and the data are written."""
    result = CliRunner().invoke(
        app,
        ["loadtest", "--arrival", "poisson", "--rates", "20,40", "--duration", "2s",
         "--slo", "p99=2000ms", "--models", str(models_dir), "--data", str(mnist_path),
         "--out", str(tmp_path)],
    )  # fmt: skip
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
        ["demo", "--models", str(models_dir), "--data", str(mnist_path), "--runtimes",
         "savedmodel", "--concurrency", "2", "--duration", "1s", "--repeats", "2",
         "--rates", "25,50", "--slo", "p99=5000ms", "--out", str(out)],
        env={"COLUMNS": "200", "MNIST_SERVE_HISTORY": str(tmp_path / "h.sqlite")},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Bottom line: depthwise@savedmodel serves" in result.output
    assert "The seed study's claims against this run" in result.output
    assert "highest Poisson arrival rate" in result.output  # the open-loop claim, printed
    text = (out / "report.md").read_text()
    assert "## Claims: the seed study's against what was measured" in text
    assert "Open loop: the highest Poisson arrival rate within p99 <= 5000 ms" in text
    assert "started by the load test" in text  # one service served both loops
    assert OpenLoopRecord.load(out).max_rate == {"original@savedmodel": 50,
                                                 "depthwise@savedmodel": 50}  # fmt: skip
