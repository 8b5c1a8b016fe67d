"""The load-test session without Typer: the service, the loops, the history, in order, reported
through a listener (fakes stand in for Locust, the open-loop generator and the server)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from loadtests import session
from loadtests.decision import Stop
from loadtests.openloop_results import ClientCeiling, ClientRun, OpenLoopRecord, RatePoint, Slo
from loadtests.results import LoadPlan, Percentiles, RunRecord, Step, StepResult
from loadtests.runner import LoadTestError, Target
from loadtests.sequential import Estimate
from tests.helpers import run_record, step_result


class Recorder:
    """A :class:`loadtests.session.Listener` that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def service_starting(self, models: Path) -> None:
        self.events.append(("service", models))

    def closed_loop_started(self, plan: LoadPlan, url: str) -> None:
        self.events.append(("closed", url))

    def step(self, step: Step, index: int, total: int, result: StepResult | None) -> None:
        self.events.append(("step", (index, total, result is not None)))

    def level_checked(self, level: int, estimates: list[Estimate], stop: Stop | None) -> None:
        self.events.append(("checked", (level, stop is not None)))

    def closed_loop_finished(self) -> None:
        self.events.append(("closed done", None))

    def open_loop_started(self, plan: LoadPlan, sweep: session.Sweep) -> None:
        self.events.append(("open", sweep.rates))

    def client_run(self, run: ClientRun) -> None:
        self.events.append(("client", run.rate))

    def client_calibrated(self, ceiling: ClientCeiling) -> None:
        self.events.append(("ceiling", ceiling.rate))

    def rate_point(self, point: RatePoint) -> None:
        self.events.append(("point", (point.model, point.rate)))

    def open_loop_finished(self, record: OpenLoopRecord, data: Path) -> None:
        self.events.append(("open done", data.name))

    def stored(self, run_id: int, path: Path) -> None:
        self.events.append(("stored", run_id))


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A service that starts at once, a closed loop of one step per target, an open loop
    whose every rate meets the SLO."""
    started: list[str] = []

    @contextmanager
    def service(url: str | None, *args: Any, **kwargs: Any) -> Iterator[Target]:
        started.append(url or "here")
        yield Target(url or "http://127.0.0.1:1", None, started_here=url is None)

    def plan_run(
        plan: LoadPlan,
        out: Path,
        target: Target,
        server_args: Any,
        on_step: Any,
        on_check: Any,
        tuned_from: Path | None = None,
    ) -> RunRecord:
        steps = []
        for index, step in enumerate(plan.steps()):
            on_step(step, index, len(plan.steps()), None)
            steps.append(step_result(step.model, step.concurrency, step.repeat, 100.0))
            on_step(step, index, len(plan.steps()), steps[-1])
        record = run_record(plan, steps=steps)
        record.save(out)
        return record

    def measure(url: str, model: str, payloads: Any, rate: float, *args: Any) -> RatePoint:
        return RatePoint(model, rate, 10, 10, rate, Percentiles(1, 1, 1, 1, 1), 1.0, True, 0.1)

    monkeypatch.setattr(session.runner, "target_service", service)
    monkeypatch.setattr(session.runner, "run_plan", plan_run)
    monkeypatch.setattr(session.slo, "measure_rate", measure)
    monkeypatch.setattr(session.slo, "bodies", lambda mnist, model: [b"{}"])
    monkeypatch.setattr(session.slo, "machine", lambda: run_record(LoadPlan()).machine)
    return started


def test_a_session_runs_both_loops_on_one_service_and_stores_the_run(
    tmp_path: Path, fakes: list[str]
) -> None:
    plan = LoadPlan(variants=("original", "depthwise"), concurrency=(1,), repeats=1)
    sweep = session.Sweep.parse("100,200", "p99=20ms", 1, 10, ceiling=0)
    listener = Recorder()
    outcome = session.run_load_test(plan, tmp_path / "run", None, tmp_path, listener, sweep=sweep)
    assert fakes == ["here"]  # one service for both loops
    kinds = [kind for kind, _ in listener.events]
    assert kinds == [
        "service",
        "closed",
        "step",
        "step",
        "step",
        "step",
        "closed done",
        "open",
        *["point"] * 4,
        "open done",
        "stored",
    ]
    assert listener.events[-2] == ("open done", "openloop.json")
    assert outcome.closed == RunRecord.load(tmp_path / "run")
    assert outcome.openloop is not None and outcome.openloop.warmup_s == session.slo.WARMUP_S
    assert outcome.openloop.max_rate == {"original": 200, "depthwise": 200}
    assert outcome.run_id == 1 and outcome.history == tmp_path / "history.sqlite"


def test_a_given_url_starts_no_service_and_a_failure_still_ends_the_progress(
    tmp_path: Path, fakes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: Any) -> RunRecord:
        raise LoadTestError("Locust failed")

    monkeypatch.setattr(session.runner, "run_plan", failing)
    listener = Recorder()
    with pytest.raises(LoadTestError, match="Locust failed"):
        session.run_load_test(LoadPlan(), tmp_path / "run", "http://x:1", tmp_path, listener)
    assert fakes == ["http://x:1"]
    assert [kind for kind, _ in listener.events] == ["closed", "closed done"]


def test_sweep_options_are_checked() -> None:
    assert session.Sweep.parse("100, 200", "p99=20ms", 2, 5).slo == Slo(99, 20)
    bad = [("0,100", "p99=20ms"), ("", "p99=20ms"), ("100", "fast")]
    bad += [("nan", "p99=20ms"), ("inf", "p99=20ms")]  # NaN once passed the check
    for rates, slo in bad:
        with pytest.raises(ValueError):
            session.Sweep.parse(rates, slo, 2, 5)
    for ceiling in (math.nan, math.inf, -1.0, "nan", "fast", ""):  # NaN once passed both
        with pytest.raises(ValueError, match="--ceiling"):
            session.Sweep.parse("100", "p99=20ms", 2, 5, ceiling)
    assert session.Sweep.parse("100", "p99=20ms", 2, 5).ceiling == "auto"  # the default
    assert session.Sweep.parse("100", "p99=20ms", 2, 5, " Auto").ceiling == "auto"
    assert session.Sweep.parse("100", "p99=20ms", 2, 5, "800").ceiling == 800
    assert session.Sweep.parse("100", "p99=20ms", 2, 5, "0").ceiling is None


def test_ceiling_auto_calibrates_the_client_first_and_the_search_stops_there(
    tmp_path: Path, fakes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ceiling auto: the client's ceiling is calibrated before the first rate, the search
    doubles up to it and no further, and openloop.json records how it was found."""
    calls: list[tuple[float, int]] = []

    def calibrate(
        slo: Slo,
        payloads: list[bytes],
        folder: Path,
        min_requests: int,
        on_run: Any,
    ) -> ClientCeiling:
        calls.append((slo.limit_ms, min_requests))
        runs = [ClientRun(1000, True, 1.0, 0.1), ClientRun(1500, False, 30.0, 9.0)]
        for run in runs:
            on_run(run)
        return ClientCeiling(1000, runs)

    monkeypatch.setattr(session.client_ceiling, "calibrate", calibrate)
    sweep = session.Sweep.parse("100,200", "p99=20ms", 1, 10)
    listener = Recorder()
    plan = LoadPlan(variants=("original", "depthwise"), concurrency=(1,), repeats=1)
    outcome = session.run_load_test(plan, tmp_path / "run", None, tmp_path, listener, sweep=sweep)
    assert calls == [(20, 10)]
    kinds = [kind for kind, _ in listener.events]
    assert kinds[kinds.index("open") + 1 : kinds.index("point")] == ["client", "client", "ceiling"]
    record = outcome.openloop
    assert record is not None and record.ceiling == 1000
    assert max(p.rate for p in record.points) == 1000  # 200, 400, 800, then 1000, not 1600
    assert OpenLoopRecord.load(tmp_path / "run").client == ClientCeiling(
        1000, [ClientRun(1000, True, 1.0, 0.1), ClientRun(1500, False, 30.0, 9.0)]
    )


def test_an_open_loop_run_alone_gets_the_same_report(
    tmp_path: Path, fakes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--arrival poisson alone: results.json holds the plan and the models served (no steps),
    so report.md and report.html are built as for any run: claims, the open-loop tables, the
    test accuracy. Every rate met on both models: the search went on upward to the ceiling,
    and the report says the rates did not separate them (no "1.00x" tie)."""
    from loadtests.described import ServedVariant
    from loadtests.report import build_report

    served = [
        ServedVariant("original", parameters=1_199_882, macs=11_992_448, test_accuracy=0.9912),
        ServedVariant("depthwise", parameters=823_828, macs=2_080_964, test_accuracy=0.9904),
    ]
    monkeypatch.setattr(session.runner, "check_target", lambda *args: served)
    monkeypatch.setattr(session.runner, "served_engine", lambda url: None)
    monkeypatch.setattr(session.runner, "machine", lambda: run_record(LoadPlan()).machine)
    sweep = session.Sweep.parse("100,200", "p99=20ms", 1, 10, ceiling=800)
    out = tmp_path / "run"
    outcome = session.run_load_test(
        LoadPlan(), out, None, tmp_path, Recorder(), sweep=sweep, closed=False
    )
    assert outcome.closed is None and RunRecord.load(out).steps == []
    assert outcome.openloop is not None
    assert outcome.openloop.max_rate == {"original": 800, "depthwise": 800}
    assert outcome.openloop.open_ended("depthwise")
    written = build_report(out)
    text = written.markdown.read_text()
    assert (
        written.html.is_file() and "## Claims: the seed study's against what was measured" in text
    )
    assert "| depthwise | >= 800 | not separated |" in text
    assert "both met every rate tried, up to 800 req/s" in text
    assert "stopped at --ceiling 800; --ceiling auto goes up to what the client" in text
    assert "1.00x" not in text
    assert "99.04%" in text  # the test accuracy, from the server
    assert "Client-side latency" not in text and not (out / "steps.csv").exists()
    assert "![Trade-off: accuracy vs capacity](plots/tradeoff.png)" in text
    assert (out / "plots" / "tradeoff.png").stat().st_size > 1000
    claim = next(c for c in written.claims if "arrival rate" in c.claim)
    assert claim.verdict == "not separated"


def test_a_ceiling_calibrated_already_is_reused_and_a_failed_one_stops_at_the_rates(
    tmp_path: Path, fakes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--tuned's second run reuses the first run's ClientCeiling (no second calibration); a
    calibration that cannot run leaves the search at --rates, and the claim says why."""
    from loadtests.rate_claims import not_separated

    calibrate = session.client_ceiling.calibrate

    def must_not_run(*args: Any) -> ClientCeiling:
        raise AssertionError("calibrated twice")

    monkeypatch.setattr(session.client_ceiling, "calibrate", must_not_run)
    plan = LoadPlan(variants=("original", "depthwise"), concurrency=(1,), repeats=1)
    known = ClientCeiling(400, [ClientRun(400, True, 1.0, 0.1)])
    sweep = session.Sweep(rates=(100, 200), slo=Slo(99, 20), seconds=1, min_requests=10)
    again = session.run_sweep(
        plan, dataclasses.replace(sweep, ceiling=known), tmp_path / "a", "u", Recorder()
    )
    assert again.client == known and max(p.rate for p in again.points) == 400

    @contextmanager
    def no_null_server() -> Iterator[str]:
        raise LoadTestError("the null server did not start")
        yield ""

    monkeypatch.setattr(session.client_ceiling, "calibrate", calibrate)  # the real one
    monkeypatch.setattr(session.client_ceiling, "null_server", no_null_server)
    listener = Recorder()
    record = session.run_sweep(plan, sweep, tmp_path / "b", "u", listener)
    assert ("ceiling", 0.0) in listener.events and record.ceiling is None
    assert max(p.rate for p in record.points) == 200  # the top rate given
    assert record.client is not None and "the null server did not start" in record.client.problem
    said = not_separated(record)
    assert "up to 200 req/s, where the search stopped" in said
    assert "the calibration failed (the null server did not start)" in said
