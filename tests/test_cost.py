"""Cost and energy per inference: the arithmetic, the rate each figure is at, the RAPL meter
(on a fake powercap tree), and the report and the session showing them with their source."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from loadtests import cost, power
from loadtests.cost import Pricing, RateSource, WattsSource
from loadtests.openloop_results import OpenLoopRecord, RatePoint, Slo
from loadtests.results import LoadPlan, Percentiles, RunRecord
from tests.helpers import run_record, step_result
from tests.test_session import fakes as fakes  # the session's fakes (a fixture)


def test_the_arithmetic() -> None:
    # $3.60 an hour at 1,000 inferences/s: 3.6 million an hour, so $1 per million.
    assert cost.usd_per_million(3.6, 1000) == pytest.approx(1.0)
    assert cost.usd_per_million(0.10, 250) == pytest.approx(0.10 / (250 * 3600) * 1e6)
    assert cost.joules_per_inference(50, 1000) == pytest.approx(0.05)  # 50 J/s over 1,000/s


def searched() -> OpenLoopRecord:
    """original met p99 <= 20 ms up to 400/s, depthwise up to 800/s, resnet at no rate."""
    caps = {"original": 400.0, "depthwise": 800.0, "resnet": 0.0}
    points = [
        RatePoint(m, rate, 10, 10, rate, Percentiles(1, 2, 3, 4, 5), 4.0, rate <= cap, 0.1)
        for m, cap in caps.items()
        for rate in (400.0, 800.0, 1600.0)
    ]
    return OpenLoopRecord(Slo(99, 20), 2, [400, 800, 1600], list(caps), caps, points)


def closed_run() -> RunRecord:
    """depthwise peaking at 8 clients (mean 600/s over repeats), lower at 1 and 32."""
    values = {1: [200.0, 210], 8: [590.0, 610], 32: [580.0, 590]}
    steps = [
        step_result("depthwise", level, r, v)
        for level, vs in values.items()
        for r, v in enumerate(vs)
    ]
    plan = LoadPlan(variants=("depthwise",), concurrency=(1, 8, 32), repeats=2)
    return run_record(plan, steps=steps)


def test_cost_at_the_highest_rate_within_the_slo() -> None:
    found = cost.build(Pricing(price_per_hour=0.36, watts=40), closed_run(), searched())
    rows = {m.model: m for m in found.models}
    assert rows["depthwise"].rate_per_s == 800 and rows["depthwise"].rate_source is RateSource.SLO
    assert rows["depthwise"].usd_per_million == pytest.approx(0.125)  # 0.36 / 2.88 M/h
    assert rows["depthwise"].joules_per_inference == pytest.approx(0.05)
    assert rows["original"].usd_per_million == pytest.approx(0.25)
    assert rows["resnet"].usd_per_million is None  # met the SLO at no rate: no cost
    assert found.watts_source is WattsSource.FLAG and found.power_note == "40 W, from --watts"
    line = cost.bottom_line(found)
    assert line.startswith("Cost at each model's highest rate within p99 <= 20 ms:")
    assert "original $0.25, depthwise $0.125 (at $0.36/h, from --price-per-hour)" in line
    assert "depthwise 0.05 J (at 40 W, from --watts)" in line


def test_a_model_that_met_every_rate_tried_has_bounds_not_figures() -> None:
    """Its rate is a lower bound (the search's top), so its cost and energy per inference
    are upper bounds: shown ">=" and "<=" in the table and the bottom line."""
    record = searched()
    record.points = [p for p in record.points if not (p.model == "depthwise" and p.rate > 800)]
    found = cost.build(Pricing(price_per_hour=0.36, watts=40), None, record)
    rows = {m.model: m for m in found.models}
    assert rows["depthwise"].open_ended and not rows["original"].open_ended
    assert not rows["resnet"].open_ended  # met no rate: no bound either
    _, (_, table) = cost.cost_table(found)
    depthwise = next(row for row in table if row[0] == "depthwise")
    assert depthwise[1] == ">= 800" and depthwise[3] == "<= $0.125" and depthwise[4] == "<= 0.05"
    assert "a lower bound" in depthwise[2]
    line = cost.bottom_line(found)
    assert "original $0.25, depthwise <= $0.125" in line and "depthwise <= 0.05 J" in line


def test_without_an_open_loop_the_closed_loop_peak_is_used_and_said() -> None:
    found = cost.build(Pricing(price_per_hour=3.6), closed_run(), None, None, power.NO_RAPL)
    (row,) = found.models
    assert (row.rate_per_s, row.rate_source, row.rate_detail) == (
        600.0,
        RateSource.CLOSED_PEAK,
        "at 8 clients",
    )
    assert row.usd_per_million == pytest.approx(1000 / 600)
    assert row.joules_per_inference is None and found.watts_source is WattsSource.NONE
    assert found.power_note == "no power reading on this machine (no RAPL): give --watts"
    assert "closed-loop peak throughput (no open-loop search)" in cost.bottom_line(found)
    nothing = cost.build(Pricing(), closed_run(), None)
    assert cost.bottom_line(nothing) == "" and nothing.price_note == cost.NO_PRICE


def fake_powercap(root: Path, packages: dict[str, int], wrap: int = 1_000_000) -> None:
    """A powercap tree: package domains with their counters, and a subdomain to be ignored."""
    for index, (name, energy) in enumerate(packages.items()):
        folder = root / f"intel-rapl:{index}"
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
        (folder / "energy_uj").write_text(f"{energy}\n")
        (folder / "max_energy_range_uj").write_text(f"{wrap}\n")
        sub = root / f"intel-rapl:{index}:0"  # core: part of the package, not added again
        sub.mkdir()
        (sub / "energy_uj").write_text("0\n")


def test_the_rapl_meter_adds_up_the_packages_and_survives_a_wrap(tmp_path: Path) -> None:
    fake_powercap(tmp_path, {"package-0": 900_000, "package-1": 100_000})
    meter = power.PowerMeter(tmp_path, interval_s=3600).start()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("950000\n")  # +0.05 J
    meter.sample()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("50000\n")  # wrapped: +0.1 J
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("400000\n")  # +0.3 J
    reading = meter.stop()
    assert reading is not None and reading.domains == ("package-0", "package-1")
    assert reading.joules == pytest.approx(0.45) and reading.watts > 0
    costed = cost.build(Pricing(), None, searched(), reading)
    assert costed.watts_source is WattsSource.RAPL and costed.watts == pytest.approx(reading.watts)
    assert "mean RAPL power of package-0, package-1" in costed.power_note
    with power.PowerMeter(tmp_path / "none") as empty:
        pass
    assert empty.reading is None and empty.problem == power.NO_RAPL


@pytest.mark.slow
def test_the_report_shows_the_cost_and_where_it_comes_from(tmp_path: Path) -> None:
    from loadtests.report import build_report
    from tests.test_loadtests_report import write_recorded_set

    write_recorded_set(tmp_path, np.random.default_rng(7))
    record = RunRecord.load(tmp_path)
    cost.build(Pricing(price_per_hour=0.5), record, None, None, power.NO_RAPL).save(tmp_path)
    written = build_report(tmp_path)
    text = written.markdown.read_text()
    assert (
        "## Cost and energy per inference at each model's best rate (price: $0.5/h, from " in text
    )
    assert "power: no power reading on this machine (no RAPL): give --watts)" in text
    peak = cost.CostRecord.load(tmp_path).models[0]
    expected = f"${0.5 / (peak.rate_per_s * 3600) * 1e6:.4g}"
    source = "closed-loop peak throughput (no open-loop search: no latency bound)"
    assert f"{source} {peak.rate_detail} | {expected} | - |" in text
    assert "Cost at each model's closed-loop peak throughput" in written.bottom_line
    assert "$0.5/h" in written.html.read_text()
    assert not math.isnan(peak.rate_per_s)


def test_a_session_writes_the_cost_and_an_open_loop_report_shows_it(
    tmp_path: Path,
    fakes: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loadtests import session
    from loadtests.described import ServedVariant
    from tests.test_session import Recorder

    monkeypatch.setattr(power, "POWERCAP", tmp_path / "no-powercap")
    served = [ServedVariant("original"), ServedVariant("depthwise")]
    monkeypatch.setattr(session.runner, "check_target", lambda *args: served)
    monkeypatch.setattr(session.runner, "served_engine", lambda url: None)
    monkeypatch.setattr(session.runner, "machine", lambda: run_record(LoadPlan()).machine)
    plan = LoadPlan(variants=("original", "depthwise"), concurrency=(1,), repeats=1)
    sweep = session.Sweep.parse("100,200", "p99=20ms", 1, 10, ceiling=0)
    outcome = session.run_load_test(
        plan,
        tmp_path / "run",
        None,
        tmp_path,
        Recorder(),
        sweep=sweep,
        closed=False,
        pricing=Pricing(price_per_hour=0.72, watts=20),
    )
    assert outcome.cost == cost.CostRecord.load(tmp_path / "run")
    assert [(m.model, m.rate_per_s) for m in outcome.cost.models] == [
        ("original", 200),
        ("depthwise", 200),
    ]
    assert outcome.cost.models[0].usd_per_million == pytest.approx(1.0)  # 0.72/h at 720k/h
    from loadtests.report import build_report

    text = build_report(tmp_path / "run").markdown.read_text()
    line = "Cost at each model's highest rate within p99 <= 20 ms: a million inferences cost"
    # Only the names are known: the training figures read "-", never "0" or "None".
    assert "| original | - | - | - | - | - | - | - |" in text
    # Both met every rate tried (100 and 200/s): their costs are upper bounds.
    assert f"{line} original <= $1, depthwise <= $1 (at $0.72/h, from --price-per-hour)" in text
    assert (
        "| original | >= 200 | highest rate within the SLO (open loop) p99 <= 20 ms (a lower "
        "bound: it met every rate tried, or missed only where the client could not keep up) "
        "| <= $1 | <= 0.1 |" in text
    )


def test_the_flags_are_checked() -> None:
    from mnist_serve.cli import app

    for flag in ("--price-per-hour", "--watts"):
        result = CliRunner().invoke(app, ["loadtest", flag, "0", "--url", "http://127.0.0.1:1"])
        assert result.exit_code == 2 and flag in result.output
        assert flag in CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"}).output
