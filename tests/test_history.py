"""The run history: stored runs, the previous comparable one, and a comparison that says what
moved beyond the repeats' intervals; the `history` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadtests import history
from loadtests.results import LoadPlan, RunRecord
from mnist_serve.cli import app
from tests.helpers import run_record, step_result


def record(created: str, throughputs: dict[int, list[float]], cpu: str = "EPYC") -> RunRecord:
    """A run of depthwise at each level, one step per repeat."""
    steps = [
        step_result("depthwise", level, r, value)
        for level, values in throughputs.items()
        for r, value in enumerate(values)
    ]
    plan = LoadPlan(variants=("depthwise",), concurrency=tuple(sorted(throughputs)))
    return run_record(plan, steps=steps, created=created, cpu=cpu)


def pair(created: str, ratios: list[float]) -> RunRecord:
    """original and depthwise at 8 clients, depthwise ``ratios`` times as fast per repeat."""
    steps = [step_result(m, 8, r, 100 * (ratio if m == "depthwise" else 1))
             for r, ratio in enumerate(ratios) for m in ("original", "depthwise")]  # fmt: skip
    return run_record(LoadPlan(concurrency=(8,)), steps=steps, created=created)


def test_store_compare_and_previous(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    old = record("2026-11-20", {1: [100, 102, 98], 32: [900, 910, 890]})
    new = record("2026-11-24", {1: [101, 99, 100], 32: [1200, 1190, 1210]})
    other_machine = record("2026-11-22", {1: [50, 50, 50], 32: [400, 400, 400]}, cpu="Xeon")
    history.store(db, tmp_path / "a", old)
    history.store(db, tmp_path / "x", other_machine)
    history.store(db, tmp_path / "b", new)
    assert [r.folder for r in history.runs(db)] == [str(tmp_path / n) for n in "axb"]
    previous = history.previous_comparable(db, tmp_path / "b", new)
    assert previous is not None and previous.folder == str(tmp_path / "a")  # not the Xeon run
    changes = {c.level: c for c in history.compare(db, previous, history.get(db, "b"))}
    assert not changes[1].moved and changes[1].ratio == pytest.approx(1.0)
    assert changes[32].moved and changes[32].ratio == pytest.approx(1200 / 900)
    with pytest.raises(KeyError, match="no run"):
        history.get(db, "nope")


def test_history_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "h.sqlite"
    monkeypatch.setenv(history.ENV_VAR, str(db))
    runner = CliRunner()
    assert "no history yet" in runner.invoke(app, ["history"]).output
    history.store(db, tmp_path / "run-a", record("2026-11-20", {8: [500, 510, 490]}))
    history.store(db, tmp_path / "run-b", record("2026-11-24", {8: [700, 690, 710]}))
    listed = runner.invoke(app, ["history"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "run-a" in listed.output and "run-b" in listed.output
    compared = runner.invoke(app, ["history", "compare", "1", "run-b"], env={"COLUMNS": "200"})
    assert compared.exit_code == 0, compared.output
    assert "1.40x" in compared.output and "yes" in compared.output
    missing = runner.invoke(app, ["history", "compare", "1", "9"])
    assert missing.exit_code != 0 and "no run '9'" in missing.output


def test_the_speedup_moved_or_not(tmp_path: Path) -> None:
    """Runs compare on the speedup itself: a steady 1.2x is not a move, 1.2x -> 1.5x is."""
    db = tmp_path / "history.sqlite"
    for name, ratios in (("a", [1.2, 1.21, 1.19]), ("b", [1.2, 1.22, 1.18]),
                         ("c", [1.5, 1.52, 1.49])):  # fmt: skip
        history.store(db, tmp_path / name, pair(f"2026-11-2{len(name)}", ratios))
    a, b, c = (history.get(db, n) for n in "abc")
    pairs = [("original", "depthwise")]
    (steady,) = history.compare_speedups(db, a, b, pairs)
    assert steady.target == "depthwise over original" and steady.level == 8
    assert steady.before.mean == pytest.approx(1.2) and not steady.moved
    (moved,) = history.compare_speedups(db, b, c, pairs)
    assert moved.moved and moved.ratio == pytest.approx(1.503 / 1.2, rel=1e-3)
