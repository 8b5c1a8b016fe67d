"""CPU steal (loadtests/steal.py): read from /proc/stat, told per window, flagged in the
report; and a machine on which the client kept up with no calibration rate, whose misses
bound no model (ClientCeiling.unmeasurable)."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from loadtests import steal
from loadtests.bottom_line import bottom_line
from loadtests.claims import Verdict
from loadtests.openloop_results import ClientCeiling, ClientRun, OpenLoopRecord, Slo
from loadtests.openloop_tables import openloop_summary, openloop_tables
from loadtests.rate_claims import rate_figure, rate_measured, rate_verdict
from loadtests.results import LoadPlan
from tests.helpers import run_record
from tests.test_claims import record as served_record
from tests.test_client_ceiling import lag_run

SLO = Slo(99, 20)
A, B = "original@onnx", "depthwise@onnx"


def proc_stat(path: Path, steal_ticks: int, other_ticks: int) -> None:
    """A /proc/stat whose cpu line has ``steal_ticks`` stolen of ``steal_ticks + other``."""
    idle = other_ticks - 10
    path.write_text(
        f"cpu  4 1 5 {idle} 0 0 0 {steal_ticks} 7 0\ncpu0 2 0 2 1 0 0 0 0 0 0\nintr 1 2\n"
    )


def test_steal_is_read_from_the_cpu_line(tmp_path: Path) -> None:
    """The eighth figure over the first eight (the guest figures are in user and nice)."""
    stat = tmp_path / "stat"
    proc_stat(stat, 30, 100)
    before = steal.read(stat)
    assert before is not None and (before.steal, before.total) == (30, 130)
    proc_stat(stat, 60, 160)  # 30 of the next 90 ticks stolen
    assert steal.share(before, steal.read(stat)) == round(30 / 90, 4)
    assert steal.read(tmp_path / "missing") is None
    (tmp_path / "odd").write_text("intr 1 2\n")
    assert steal.read(tmp_path / "odd") is None
    assert steal.share(None, before) is None and steal.share(before, before) is None
    real = steal.read()  # this machine's, on Linux
    assert real is not None and real.total > 0 and 0 <= real.steal <= real.total


def test_what_is_flagged() -> None:
    assert not steal.noisy(None) and not steal.noisy(steal.NOISY) and steal.noisy(0.31)
    assert steal.percent(0.31) == "31 %" and steal.percent(None) == "-"
    assert steal.note(0.31) == ", CPU steal 31 %" and steal.note(0.01) == ""
    kept = ClientCeiling(1000, [ClientRun(1000, True, 3.0, 0.2, 1, 0.3)])
    assert "(p99 3.00 ms, the calibration's top; CPU steal up to 30 %: re-run when" in kept.summary
    assert "CPU steal 30 %" in kept.runs[0].summary
    assert "steal" not in ClientCeiling(1000, [ClientRun(1000, True, 3.0, 0.2)]).summary


def test_the_sampler_tells_any_stretch_its_own_steal(tmp_path: Path) -> None:
    """From the last reading at or before a stretch's start to the first at or after its end;
    outside what was read, its ends. Where there is nothing to read, no figure."""
    sampler = steal.Sampler(tmp_path / "unused")
    ticks = [(10.0, 0, 100), (10.5, 0, 150), (11.0, 50, 250), (11.5, 50, 300)]
    sampler.samples = [steal.Ticks(at, stolen, total) for at, stolen, total in ticks]
    assert sampler.share(10.0, 10.5) == 0.0
    assert sampler.share(10.5, 11.0) == 0.5
    assert sampler.share(10.6, 10.9) == 0.5  # the readings around it
    assert sampler.share(0, math.inf) == round(50 / 200, 4)
    assert sampler.share(12.0, 13.0) == 0.0  # after the last reading: the last stretch read
    nothing = steal.Sampler(tmp_path / "missing").start()
    nothing.stop()
    assert nothing.share(0, 1) is None and not nothing.samples


def test_the_sampler_reads_until_stopped(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    proc_stat(stat, 0, 100)
    with steal.Sampler(stat, interval_s=0.01) as sampler:
        time.sleep(0.05)
    assert len(sampler.samples) >= 2 and sampler._thread is None  # a last reading at stop


def test_the_warning_counts_the_measurements_over_the_limit() -> None:
    said = steal.warning([0.01, None, 0.2, 0.31], "windows")
    assert said.startswith("in 2 of 4 windows the hypervisor took over 5 % of the CPU")
    assert "(CPU steal, up to 31 %)" in said and steal.ADVICE in said
    assert steal.warning([0.01, None], "runs") == "" and steal.warning([], "runs") == ""


def unmeasurable_record() -> OpenLoopRecord:
    """Two models that would be told apart (1,000-2,000 against 4,000-8,000), on a machine
    where the client kept up with no calibration rate, the hypervisor taking 40 %."""
    runs = [ClientRun(rate, False, 30.0, 4.0, 2, 0.4) for rate in (1000, 500, 250, 125)]
    client = ClientCeiling(0.0, runs)
    points = [lag_run(A, 1000, True, 0.2), lag_run(A, 2000, False, 0.3)]
    points += [lag_run(B, 4000, True, 0.2), lag_run(B, 8000, False, 0.3)]
    return OpenLoopRecord(SLO, 1, [1000], [A, B], {A: 1000, B: 4000}, points, client=client)


def test_a_client_that_kept_up_with_no_rate_leaves_every_miss_unbounding() -> None:
    """If the client missed the SLO against a server that does nothing at every calibration
    rate, no model's miss can be told from the client's: the claim is not separated, says
    why, and the summary does not call the miss a bound. With one calibration rate kept up
    with, the same runs hold."""
    record = unmeasurable_record()
    assert record.client is not None and record.client.unmeasurable
    assert "the hypervisor took up to 40 % of the CPU meanwhile" in record.client.summary
    assert record.bracket(A) == (1000, math.inf)
    assert rate_verdict(record, B, A) is Verdict.NOT_SEPARATED
    assert rate_figure(record, A) == ">= 1,000"
    said = rate_measured(record, B, A)
    assert said.startswith("no miss bounds either model: this machine cannot measure p99")
    assert "a looser --slo" in said
    header, rows = openloop_summary(record)
    assert rows[0][header.index("search stopped at")] == (
        "2,000 req/s: missed, which bounds nothing (the client kept up with no calibration rate)"
    )
    plan = LoadPlan(runtimes=("onnx",))
    data = run_record(plan, served_record(0.99, 0.99).variants)
    line = bottom_line(data, [], record)
    assert f"cannot separate {B} and {A}" in line and "sustains" not in line
    calibrated = ClientCeiling(500.0, [ClientRun(500, True, 3.0, 0.2)])
    kept = replace(record, client=calibrated)
    assert not calibrated.unmeasurable and rate_verdict(kept, B, A) is Verdict.HOLDS
    failed = ClientCeiling(0.0, record.client.runs, problem="the null server died")
    assert not failed.unmeasurable  # it did not finish: the search keeps its rates


def test_the_runs_table_shows_each_runs_steal_and_warns_above_the_limit() -> None:
    record = unmeasurable_record()
    noisy = [p if p.model == A else replace(p, cpu_steal=0.2) for p in record.points]
    record = replace(record, points=noisy)
    title, (header, rows) = list(openloop_tables(record).items())[1]
    assert [row[header.index("CPU steal")] for row in rows] == ["-", "-", "20 %", "20 %"]
    assert "in 2 of 4 runs the hypervisor took over 5 % of the CPU (CPU steal, up to 20 %)" in (
        title
    )
