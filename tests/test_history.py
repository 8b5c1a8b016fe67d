"""The run history: stored runs, the previous comparable one, and a comparison that says what
moved beyond the repeats' intervals; the `history` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadtests import changes, comparable, history
from loadtests.labels import Label
from loadtests.openloop_results import OpenLoopRecord, RatePoint, Slo
from loadtests.results import LoadPlan, Machine, Percentiles, RunRecord
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
    steps = [
        step_result(m, 8, r, 100 * (ratio if m == "depthwise" else 1))
        for r, ratio in enumerate(ratios)
        for m in ("original", "depthwise")
    ]
    return run_record(LoadPlan(concurrency=(8,)), steps=steps, created=created)


def test_store_compare_and_previous(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    old = record("2026-11-20", {1: [100, 102, 98], 32: [900, 910, 890]})
    new = record("2026-11-24", {1: [101, 99, 100], 32: [1200, 1190, 1210]})
    other_machine = record("2026-11-22", {1: [50, 50, 50], 32: [400, 400, 400]}, cpu="Xeon")
    history.store(db, tmp_path / "a", old.plan, old)
    history.store(db, tmp_path / "x", other_machine.plan, other_machine)
    history.store(db, tmp_path / "b", new.plan, new)
    assert [r.folder for r in history.runs(db)] == [str(tmp_path / n) for n in "axb"]
    previous = history.previous_comparable(db, tmp_path / "b", new)
    assert previous is not None and previous.folder == str(tmp_path / "a")  # not the Xeon run
    moved = {c.level: c for c in changes.compare(db, previous, history.get(db, "b"))}
    assert not moved[1].moved and moved[1].ratio == pytest.approx(1.0)
    assert moved[32].moved and moved[32].ratio == pytest.approx(1200 / 900)
    with pytest.raises(KeyError, match="no run"):
        history.get(db, "nope")


def searched(capacity: float) -> OpenLoopRecord:
    """An open-loop search of depthwise that met p99 <= 20 ms up to ``capacity``."""
    points = [
        RatePoint(
            "depthwise", rate, 10, 10, rate, Percentiles(1, 2, 3, 4, 5), 4.0, rate <= capacity, 0.1
        )
        for rate in (200.0, 400, 800, 1600)
        if rate <= 2 * capacity
    ]
    return OpenLoopRecord(
        Slo(99, 20),
        2,
        [200, 400, 800, 1600],
        ["depthwise"],
        {"depthwise": capacity},
        points,
        "2026-11-24",
        Machine("EPYC", 2, "Linux", "3.11", "2.21.0", "2.x"),
    )


def test_history_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "h.sqlite"
    monkeypatch.setenv(history.ENV_VAR, str(db))
    runner = CliRunner()
    assert "no history yet" in runner.invoke(app, ["history"]).output
    for name, created, values, capacity in (
        ("run-a", "2026-11-20", [500.0, 510, 490], 400),
        ("run-b", "2026-11-24", [700.0, 690, 710], 800),
    ):
        run = record(created, {8: values})
        history.store(db, tmp_path / name, run.plan, run, searched(capacity))
    only_open = searched(800)
    history.store(db, tmp_path / "run-c", run.plan, None, only_open)  # open loop alone
    listed = runner.invoke(app, ["history"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "run-a" in listed.output and "run-c" in listed.output
    assert "depthwise 400/s (p99 <= 20 ms)" in listed.output
    compared = runner.invoke(app, ["history", "compare", "1", "run-b"], env={"COLUMNS": "200"})
    assert compared.exit_code == 0, compared.output
    assert "1.40x" in compared.output and "yes" in compared.output
    assert "Open loop, highest rate within the SLO" in compared.output
    assert "p99 latency: run 1 -> run 2" in compared.output and "2.00 ms" in compared.output
    assert "2.00x" in compared.output  # 400 -> 800 req/s, brackets [400, 800) and [800, inf)
    found = changes.compare_rates(db, history.get(db, "2"), history.get(db, "3"))
    assert [(c.ratio, c.moved) for c in found] == [(1.0, False)]
    previous = history.previous_comparable(db, tmp_path / "run-d", run)
    assert previous is not None and previous.folder.endswith("run-b")  # run-c: no closed loop
    missing = runner.invoke(app, ["history", "compare", "1", "9"])
    assert missing.exit_code != 0 and "no run '9'" in missing.output


def test_the_speedup_moved_or_not(tmp_path: Path) -> None:
    """Runs compare on the speedup itself: a steady 1.2x is not a move, 1.2x -> 1.5x is."""
    db = tmp_path / "history.sqlite"
    for name, ratios in (
        ("a", [1.2, 1.21, 1.19]),
        ("b", [1.2, 1.22, 1.18]),
        ("c", [1.5, 1.52, 1.49]),
    ):
        run = pair(f"2026-11-2{len(name)}", ratios)
        history.store(db, tmp_path / name, run.plan, run)
    a, b, c = (history.get(db, n) for n in "abc")
    pairs = [(Label("original"), Label("depthwise"))]
    (steady,) = changes.compare_speedups(db, a, b, pairs)
    assert (steady.baseline, steady.target, steady.level) == (*pairs[0], 8)
    assert steady.name == "depthwise over original"
    # The geometric mean of the paired ratios (1.2, 1.22, 1.18).
    assert steady.before.mean == pytest.approx(1.2, rel=1e-3) and not steady.moved
    (moved,) = changes.compare_speedups(db, b, c, pairs)
    assert moved.moved and moved.ratio == pytest.approx(1.503 / 1.2, rel=1e-3)


def test_an_older_history_is_migrated_without_parsing_its_labels(tmp_path: Path) -> None:
    """A file from before the steps had their target's parts in columns: each step gets them
    from the label its run's plan makes with the same display text; others are dropped."""
    import sqlite3
    from dataclasses import asdict

    db = tmp_path / "old.sqlite"
    run = pair("2026-11-20", [1.2, 1.2])
    with sqlite3.connect(db) as old:
        old.executescript(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY, folder TEXT NOT NULL, created_at TEXT "
            "NOT NULL, comparable TEXT NOT NULL, plan TEXT NOT NULL, machine TEXT NOT NULL);"
            "CREATE TABLE steps (run_id INTEGER NOT NULL, target TEXT NOT NULL, level INTEGER "
            "NOT NULL, repeat INTEGER NOT NULL, throughput_rps REAL NOT NULL, p50_ms REAL NOT "
            "NULL, p99_ms REAL NOT NULL, errors INTEGER NOT NULL, requests INTEGER NOT NULL);"
        )
        old.execute(
            "INSERT INTO runs VALUES (1, 'runs/a', '2026-11-20', ?, ?, ?)",
            (
                comparable.comparable_key(run.plan, run.machine),
                json.dumps(asdict(run.plan)),
                json.dumps(asdict(run.machine)),
            ),
        )
        rows = [("original", 100.0), ("depthwise", 120.0), ("resnet", 1.0)]
        old.executemany("INSERT INTO steps VALUES (1, ?, 8, 0, ?, 1, 2, 0, 100)", rows)
    (stored,) = history.runs(db)
    assert history.throughputs(db, stored) == {
        (Label("original"), 8): [100.0],
        (Label("depthwise"), 8): [120.0],
    }  # "resnet" is no target of the run's plan: dropped
    history.store(db, tmp_path / "b", run.plan, run)  # the migrated file takes new runs
    assert len(history.runs(db)) == 2


def test_runs_against_differently_started_services_do_not_compare(tmp_path: Path) -> None:
    """A run against ``serve --tuned`` (or any other options) is never the run before a run
    against the defaults, nor the reverse; a defaults run's key is the one stored before the
    options counted, so older runs still compare."""
    from dataclasses import replace

    from loadtests import gate

    db = tmp_path / "history.sqlite"
    plain = record("2026-11-20", {1: [100, 102, 98]})
    tuned = replace(record("2026-11-21", {1: [150, 151, 149]}), server_args=["--tuned"])
    again = record("2026-11-22", {1: [101, 99, 100]})
    for name, run in (("plain", plain), ("tuned", tuned), ("again", again)):
        history.store(db, tmp_path / name, run.plan, run)
    assert comparable.comparable_key(plain.plan, plain.machine) == json.dumps(
        {
            "concurrency": [1],
            "cpu": "EPYC",
            "mode": "json",
            "protocols": ["native"],
            "runtimes": [],
            "variants": ["depthwise"],
        },
        sort_keys=True,
    )  # as stored before the server's options were part of it
    found = history.previous_comparable(db, tmp_path / "again", again)
    assert found is not None and Path(found.folder).name == "plain"
    assert history.previous_comparable(db, tmp_path / "tuned", tuned) is None
    before, _ = gate.pick_runs(db, "again", None)
    assert Path(before.folder).name == "plain"
    with pytest.raises(gate.NothingToCompare):
        gate.pick_runs(db, "tuned", None)
    # An open-loop-only run takes the options it is given.
    searched_tuned = history.store(
        db, tmp_path / "open", plain.plan, None, searched(900), server_args=("--tuned",)
    )
    assert history.get(db, str(searched_tuned)).comparable == history.get(db, "tuned").comparable


def test_tuned_runs_compare_only_at_the_same_tuned_configurations(tmp_path: Path) -> None:
    """Two runs against ``serve --tuned`` compare when their models ran the same tuned
    configurations; a model tuned again in between makes the later run incomparable, not a
    regression of the code; the key found from a record not yet stored holds them too."""
    from dataclasses import replace

    from loadtests import gate
    from modelrepo.tuned import ServingConfig

    db = tmp_path / "history.sqlite"
    small = ServingConfig(max_batch_size=4, max_wait_ms=2, intra_op_threads=1, workers=1)
    large = small.model_copy(update={"max_batch_size": 32})

    def tuned_run(created: str, config: ServingConfig) -> RunRecord:
        run = record(created, {1: [100, 101, 99]})
        return replace(run, server_args=["--tuned"], tuned={"depthwise@savedmodel": config})

    first, same, retuned = (
        tuned_run("2026-11-20", small),
        tuned_run("2026-11-21", small),
        (tuned_run("2026-11-22", large)),
    )
    for name, run in (("first", first), ("same", same), ("retuned", retuned)):
        history.store(db, tmp_path / name, run.plan, run)
    assert json.loads(history.get(db, "first").comparable)["tuned"] == {
        "depthwise@savedmodel": small.model_dump()
    }
    before, _ = gate.pick_runs(db, "same", None)
    assert Path(before.folder).name == "first"
    with pytest.raises(gate.NothingToCompare, match="same tuned configurations"):
        gate.pick_runs(db, "retuned", None)
    later = tuned_run("2026-11-23", small)  # not stored: its key comes from the record
    found = history.previous_comparable(db, tmp_path / "later", later)
    assert found is not None and Path(found.folder).name == "same"


def test_a_tuned_run_stored_before_the_options_counted_is_rekeyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version 2 history (keys without the service's options): a run whose results.json
    names options gets them in its key, and stops matching the runs at the defaults, found
    from another working directory (folders are stored as given, e.g. ``runs/x``) and from a
    results file of an older schema; a run whose folder is gone keeps its key."""
    import json
    import sqlite3
    from dataclasses import replace

    root = tmp_path / "project"
    db = root / "runs" / "history.sqlite"
    monkeypatch.chdir(tmp_path)
    plain = record("2026-11-20", {1: [100, 102, 98]})
    tuned = replace(record("2026-11-21", {1: [150, 151, 149]}), server_args=["--tuned"])
    older = replace(record("2026-11-21", {1: [150, 151, 149]}), server_args=["--tuned"])
    gone = replace(record("2026-11-22", {1: [150, 151, 149]}), server_args=["--tuned"])
    runs = (("plain", plain), ("tuned", tuned), ("older", older), ("gone", gone))
    for name, run in runs:
        run.save(root / "runs" / name)
        history.store(db, Path("runs") / name, run.plan, run)  # relative, from the project
    (root / "runs" / "gone" / "results.json").unlink()
    written = root / "runs" / "older" / "results.json"
    written.write_text(json.dumps({**json.loads(written.read_text()), "schema": 1}))
    old_key = comparable.comparable_key(plain.plan, plain.machine)
    with sqlite3.connect(db) as before:  # as a version 2 file stored them
        before.execute("UPDATE runs SET comparable = ?", (old_key,))
        before.execute("PRAGMA user_version = 2")
    keys = {Path(r.folder).name: r.comparable for r in history.runs(db)}  # from tmp_path
    assert keys["plain"] == keys["gone"] == old_key
    tuned_key = comparable.comparable_key(tuned.plan, tuned.machine, ["--tuned"])
    assert keys["tuned"] == keys["older"] == tuned_key
    monkeypatch.chdir(root)
    assert history.previous_comparable(db, Path("runs/tuned"), tuned) is None


def test_runs_against_a_url_compare_by_the_engine_the_service_reported(tmp_path: Path) -> None:
    """A ``--url`` run's options are unknown: it compares with ``--url`` runs against a service
    reporting the same engine, workers and in-flight limit, never with a run that started its
    own service or with one against another engine (or a server that is not mnist-serve)."""
    from dataclasses import replace

    from loadtests.described import ServedBatching, ServedEngine, ServedRuntime, ServedVariant

    db = tmp_path / "history.sqlite"
    hybrid = ServedEngine("hybrid", 2, 128)
    started = record("2026-11-20", {1: [100, 102, 98]})
    runs = {
        "started": started,
        "url": replace(started, started_server=False, engine=hybrid),
        "url-again": replace(started, started_server=False, engine=hybrid),
        "one-worker": replace(started, started_server=False, engine=ServedEngine("single", 1, 128)),
        "peer": replace(started, started_server=False, engine=None),
        "peer-again": replace(started, started_server=False, engine=None),
    }
    for name, run in runs.items():
        history.store(db, tmp_path / name, run.plan, run)
    keys = {Path(r.folder).name: r.comparable for r in history.runs(db)}
    assert keys["started"] == comparable.comparable_key(started.plan, started.machine)
    assert keys["url"] == keys["url-again"] != keys["started"]
    assert json.loads(keys["url"])["elsewhere"] == {
        "engine": "hybrid",
        "workers": 2,
        "max_in_flight": 128,
    }
    assert keys["one-worker"] not in (keys["url"], keys["started"])
    assert keys["peer"] == keys["peer-again"] not in (keys["url"], keys["started"])
    found = history.previous_comparable(db, tmp_path / "url-again", runs["url-again"])
    assert found is not None and Path(found.folder).name == "url"
    assert history.previous_comparable(db, tmp_path / "one-worker", runs["one-worker"]) is None

    # The same engine batching otherwise (``/variants``: the bare variant's default runtime's)
    # is another line of comparison; batching alike, the runs compare.
    def batched(size: int) -> RunRecord:
        served = [ServedRuntime("litert", "depthwise@litert", "ready", batching=ServedBatching(
            size, 0.25, True, 1, False))]  # fmt: skip
        variant = ServedVariant("depthwise", runtime="litert", runtimes=served)
        return replace(runs["url"], variants=[variant])

    for name, run in {
        "batch-32": batched(32),
        "batch-8": batched(8),
        "batch-8-again": batched(8),
    }.items():
        history.store(db, tmp_path / name, run.plan, run)
    keys = {Path(r.folder).name: r.comparable for r in history.runs(db)}
    assert json.loads(keys["batch-8"])["elsewhere"]["batching"] == {
        "depthwise": {"max_batch_size": 8, "max_wait_ms": 0.25, "merges": True,
                      "intra_op_threads": 1, "tuned": False}}  # fmt: skip
    assert keys["batch-8"] == keys["batch-8-again"] != keys["batch-32"]
    assert keys["batch-32"] != keys["url"]  # nothing said of its batching: not the same
    # An open-loop-only run takes how the service said it served from its record.
    alone = history.store(
        db,
        tmp_path / "open",
        started.plan,
        None,
        searched(900),
        elsewhere=comparable.served_elsewhere(runs["url"]),
    )
    assert history.get(db, str(alone)).comparable == keys["url"]


def test_a_folder_name_that_several_runs_share_is_refused_and_their_history_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``loadtest --tuned`` leaves an ``OUT/defaults``, stored in the history beside
    ``OUT``: "defaults" alone names none of them (an id or a path does), and the report of
    one finds that history and its run before."""
    from loadtests.analysis import against_previous

    monkeypatch.delenv(history.ENV_VAR, raising=False)
    runs = tmp_path / "runs"
    db = history.default_path(runs)
    first = record("2026-11-20", {1: [100, 102, 98]})
    second = record("2026-11-21", {1: [101, 99, 100]})
    for name, run in (("tuned-1", first), ("tuned-2", second)):
        history.store(db, runs / name / "defaults", run.plan, run)
    with pytest.raises(KeyError, match="names several folders"):
        history.get(db, "defaults")
    assert history.get(db, str(runs / "tuned-1" / "defaults")).id == 1
    # The same folder spelled otherwise: relative to here, or to the directory above runs/
    # (where a run started from a relative --out was stored from).
    monkeypatch.chdir(tmp_path)
    assert history.get(db, "runs/tuned-2/defaults").id == 2
    assert history.get(db, "./runs/tuned-1/../tuned-2/defaults").id == 2
    third = record("2026-11-22", {1: [100, 100, 100]})
    history.store(db, Path("runs/tuned-3/defaults"), third.plan, third)  # stored relative
    monkeypatch.chdir(runs)  # from elsewhere, read from the directory above runs/
    assert history.get(db, str(runs / "tuned-3" / "defaults")).id == 3
    assert history.get(db, "tuned-3/defaults").id == 3  # and from here
    with pytest.raises(KeyError, match="no run"):
        history.get(db, "elsewhere/defaults")
    monkeypatch.chdir(tmp_path)
    assert history.locate(runs / "tuned-2" / "defaults") == db
    assert history.locate(runs / "loadtest-9") == db  # no such run yet: beside it
    compared = against_previous(runs / "tuned-2" / "defaults", second)
    assert compared is not None and compared.before.id == 1 and compared.after.id == 2
