"""Fast checks of the pieces explore and tune rely on: the tuned file, per-model settings,
the studies table, the report listing, the --tuned comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.studies import store, studies
from loadtests.tuned_compare import Standing, TunedComparison, tuned_lines
from modelrepo.layout import ModelVersion
from modelrepo.tuned import (
    ServingConfig,
    TunedEntry,
    TunedError,
    load_tuned,
    save_tuned,
    tuned_config,
)
from service.loading import model_settings
from service.registry import ServedModel
from service.reports import find_runs
from service.settings import Settings

CONFIG = ServingConfig(max_batch_size=8, max_wait_ms=0.5, intra_op_threads=2, workers=1)


def entry(config: ServingConfig = CONFIG) -> TunedEntry:
    return TunedEntry(config=config, version=3, slo="p99 <= 20 ms", max_rate=1200, p50_ms=0.4,
                      tuned_at="2026-11-30T00:00:00")  # fmt: skip


def stub_tune_io(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """tune without a model repository, MNIST or a tuned file: what it saves is collected in
    the list returned (its trials' ``measure`` is the test's to replace)."""
    from types import SimpleNamespace

    from loadtests import slo, tune

    repository = SimpleNamespace(get=lambda _: SimpleNamespace(version=1))
    monkeypatch.setattr(tune, "ModelRepository", lambda _: repository)
    monkeypatch.setattr(slo, "bodies", lambda *_: [b"{}"])
    saved: list[object] = []

    def save(*args: object) -> str:
        saved.append(args)
        return "tuned.json"

    monkeypatch.setattr(tune, "save_tuned", save)
    return saved


def test_tuned_file_keeps_one_entry_per_runtime(tmp_path: Path) -> None:
    (tmp_path / "depthwise").mkdir()
    save_tuned(tmp_path, "depthwise", "onnx", entry())
    save_tuned(tmp_path, "depthwise", "litert", entry(CONFIG.model_copy(update={"workers": 0})))
    found = load_tuned(tmp_path, "depthwise")
    assert set(found.runtimes) == {"onnx", "litert"}
    assert tuned_config(tmp_path, "depthwise", "onnx") == CONFIG
    assert tuned_config(tmp_path, "depthwise", "savedmodel") is None
    assert tuned_config(tmp_path, "original", "onnx") is None  # no file: none
    (tmp_path / "depthwise" / "tuned.json").write_text('{"runtimes": {"onnx": {"config": 3}}}')
    with pytest.raises(TunedError, match=r"tuned\.json"):
        load_tuned(tmp_path, "depthwise")


def test_model_settings_apply_only_with_tuned(tmp_path: Path) -> None:
    (tmp_path / "depthwise").mkdir()
    save_tuned(tmp_path, "depthwise", "onnx", entry())
    onnx = ServedModel(ModelVersion("depthwise", 1, tmp_path / "depthwise" / "1"), "onnx")
    litert = ServedModel(ModelVersion("depthwise", 1, tmp_path / "depthwise" / "1"), "litert")
    plain = Settings(models_dir=tmp_path)
    assert model_settings(plain, onnx) is plain
    tuned = Settings(models_dir=tmp_path, tuned=True)
    applied = model_settings(tuned, onnx)
    assert (applied.max_batch_size, applied.max_wait_ms, applied.intra_op_threads) == (8, 0.5, 2)
    assert model_settings(tuned, litert) is tuned


def test_a_run_records_the_configuration_each_model_was_answered_with(tmp_path: Path) -> None:
    """By the runtime that answers it: a bare variant is its served default runtime's; a
    model with no tuned configuration, or an unreadable file, records none; no repository
    (a service not started with --tuned) records nothing."""
    from loadtests.described import ServedVariant
    from loadtests.results import LoadPlan
    from loadtests.runner import tuned_in_effect

    for variant in ("depthwise", "original", "broken"):
        (tmp_path / variant).mkdir()
    save_tuned(tmp_path, "depthwise", "onnx", entry())
    save_tuned(tmp_path, "original", "litert", entry())
    (tmp_path / "broken" / "tuned.json").write_text("{")
    served = [ServedVariant("depthwise", runtime="onnx"), ServedVariant("original")]
    bare = LoadPlan(variants=("depthwise", "original", "broken"))
    assert tuned_in_effect(tmp_path, bare, served) == {"depthwise@onnx": CONFIG}
    named = LoadPlan(variants=("original", "depthwise"), runtimes=("litert", "onnx"))
    assert tuned_in_effect(tmp_path, named, served) == {
        "original@litert": CONFIG,
        "depthwise@onnx": CONFIG,
    }
    assert tuned_in_effect(None, named, served) == {}


def test_studies_sit_beside_the_load_tests(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    assert studies(path) == []
    first = store(path, tmp_path / "explore", "explore", "2026-11-30T10:00:00", "front: a")
    second = store(path, tmp_path / "tune-1", "tune", "2026-11-30T11:00:00", "a: batch 8")
    found = studies(path)
    assert [(s.id, s.kind, s.summary) for s in found] == [
        (first, "explore", "front: a"),
        (second, "tune", "a: batch 8"),
    ]


def test_report_listing_finds_explore_and_tune_runs(tmp_path: Path) -> None:
    explore = {"updated_at": "2026-11-30T02", "measurements": [{"model": "a@onnx"}]}
    tune = {"created_at": "2026-11-30T01", "models": [{"model": "b@litert"}]}
    for name, page, data in (
        ("explore", "explore.html", explore),
        ("tune-1", "tune.html", tune),
        ("loadtest-1", "report.html", {"created_at": "2026-11-30T00", "steps": []}),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / page).write_text("<html></html>")
        data_file = {"explore.html": "explore.json", "tune.html": "tune.json"}.get(page)
        (tmp_path / name / (data_file or "results.json")).write_text(json.dumps(data))
    (tmp_path / "nothing").mkdir()
    runs = find_runs(tmp_path)
    assert [(r.name, r.kind, r.models) for r in runs.values()] == [
        ("explore", "explore", ["a@onnx"]),
        ("tune-1", "tune", ["b@litert"]),
        ("loadtest-1", "loadtest", []),
    ]


def test_tuned_comparison_says_whether_the_leader_changed(tmp_path: Path) -> None:
    same = TunedComparison(
        {"a": "x"}, [Standing("throughput at 32 client(s)", ["a", "b"], ["a", "b"])], 3
    )
    assert "The leaders are those at the defaults" in same.verdict() and not same.changed
    moved = TunedComparison(
        {"a": "x"}, [Standing("throughput at 32 client(s)", ["a", "b"], ["b", "a"])], 1, ("a", "b")
    )
    assert moved.verdict().startswith(
        "At their best (--tuned) the answer changes: deploy b, where at the defaults it was a."
    )
    assert "The leader differs" in moved.verdict() and "b at their best" in moved.verdict()
    assert "may be noise" in moved.verdict()  # one repeat
    moved.save(tmp_path)
    assert tuned_lines(tmp_path) == [moved.verdict()]
    assert tuned_lines(tmp_path / "elsewhere") == []


def test_tuning_pools_repeated_trials_at_their_lower_rate() -> None:
    from loadtests.tune_results import DEFAULTS, ModelTuning, Trial

    lucky = DEFAULTS.model_copy(update={"max_batch_size": 8})
    steady = DEFAULTS.model_copy(update={"max_batch_size": 16})
    tuning = ModelTuning("a@onnx", 1)
    tuning.trials = [
        Trial(DEFAULTS, 1000, 0.5, 20, []),
        Trial(lucky, 3000, 0.4, 20, []),
        Trial(steady, 2000, 0.6, 20, []),
        Trial(lucky, 900, 0.6, 20, []),  # confirmed: it was luck
        Trial(steady, 2100, 0.4, 20, []),
    ]
    best = tuning.best
    assert best is not None and best.config == steady and best.runs == 2
    assert (best.max_rate, best.p50_ms) == (2000, 0.5)
    assert tuning.at_defaults is not None and tuning.at_defaults.max_rate == 1000
    tie = ModelTuning("a@onnx", 1)
    tie.trials = [Trial(DEFAULTS, 1000, 0.5, 20, []), Trial(lucky, 1000, 0.4, 20, [])]
    assert tie.best is not None and tie.best.config == lucky  # equal rates: the lower p50


def test_the_best_is_one_that_was_confirmed() -> None:
    """Every configuration measures 100/s lower the second time (a busy machine): the two
    confirmed leaders pool below the runner-up's single reading, which must not win unconfirmed
    (it once was saved for serve --tuned)."""
    from loadtests.tune_results import DEFAULTS, ModelTuning, Trial

    first = DEFAULTS.model_copy(update={"max_batch_size": 64})
    second = DEFAULTS.model_copy(update={"max_batch_size": 16})
    runner_up = DEFAULTS.model_copy(update={"max_batch_size": 8})
    tuning = ModelTuning("a@onnx", 1)
    tuning.trials = [
        Trial(first, 3000, 0.5, 20, []),
        Trial(second, 2990, 0.5, 20, []),
        Trial(runner_up, 2950, 0.5, 20, []),
        Trial(first, 2900, 0.5, 20, []),  # the confirmations, 100/s lower
        Trial(second, 2890, 0.5, 20, []),
    ]
    best = tuning.best
    assert best is not None and best.config == first and best.runs == 2


def test_a_trial_whose_service_fails_is_named_and_the_search_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One configuration's service exits: that trial is recorded as failed, with why, and the
    search (and the saving of its best) goes on; it once ended the whole tune."""
    from loadtests import tune, tune_results
    from loadtests.openloop_results import Slo
    from loadtests.probe import LoadTestError
    from modelrepo.layout import ModelName
    from modelrepo.tuned import ServingConfig

    saved = stub_tune_io(monkeypatch)

    def measure(*args: object) -> tune_results.Trial:
        config = args[2]
        assert isinstance(config, ServingConfig)
        if config.max_batch_size == 8:
            raise LoadTestError("the service exited (log: server.log):\nTraceback ...")
        return tune_results.Trial(config, 1000.0 + config.max_batch_size, 1.0, 0.0, [])

    monkeypatch.setattr(tune, "measure", measure)
    name = ModelName("depthwise", "onnx")
    tuning = tune.tune_model(tmp_path, name, Slo(99, 20), 1e9, tmp_path / "out")
    assert tuning.failed == ["max_batch_size=8: the service exited (log: server.log):"]
    assert tuning.best is not None and tuning.best.config.max_batch_size == 64
    assert len(saved) == 1 and tuning.saved == "tuned.json"


def test_the_defaults_measured_once_still_win_over_a_confirmed_slower_best() -> None:
    """The defaults' confirmation skipped (the budget): they stay eligible, and keeping them
    beats a confirmed configuration that pooled lower."""
    from loadtests.tune_report import verdict
    from loadtests.tune_results import DEFAULTS, ModelTuning, Trial

    other = DEFAULTS.model_copy(update={"max_batch_size": 64})
    tuning = ModelTuning("a@onnx", 1)
    tuning.trials = [
        Trial(DEFAULTS, 2950, 0.5, 20, []),
        Trial(other, 3000, 0.5, 20, []),
        Trial(other, 2900, 0.5, 20, []),
    ]
    assert tuning.best is not None and tuning.best.config == DEFAULTS
    empty = ModelTuning("b@onnx", 1)
    empty.failed = ["defaults: the service exited"]
    assert "every trial's service failed" in verdict(empty)


def test_nothing_is_saved_when_no_configuration_met_the_slo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every trial missed the SLO at the lowest rate: the lowest p50 is not saved as a tuning
    for ``serve --tuned`` (it once was), and the verdict says why."""
    from loadtests import tune, tune_report, tune_results
    from loadtests.openloop_results import RatePoint, Slo
    from loadtests.results import Percentiles
    from modelrepo.layout import ModelName
    from modelrepo.tuned import ServingConfig

    saved = stub_tune_io(monkeypatch)
    slow = Percentiles(50, 60, 70, 80, 90)
    missed = RatePoint("depthwise@onnx", 400.0, 400, 400, 390.0, slow, 1.0, False, 0.1)

    def measure(*args: object) -> tune_results.Trial:
        config = args[2]
        assert isinstance(config, ServingConfig)
        return tune_results.Trial(config, 0.0, 10.0 / config.max_batch_size, 0.0, [missed])

    monkeypatch.setattr(tune, "measure", measure)
    tuning = tune.tune_model(
        tmp_path, ModelName("depthwise", "onnx"), Slo(99, 1), 1e9, tmp_path / "out"
    )
    assert tuning.best is not None and not tuning.best.met_slo
    assert saved == [] and tuning.saved is None
    said = tune_report.verdict(tuning)
    assert "no configuration met the SLO, even at the lowest rate tried (400 req/s)" in said
    assert "nothing saved" in said


def test_a_best_that_missed_the_slo_on_confirmation_is_neither_saved_nor_called_best(
    tmp_path: Path,
) -> None:
    """A configuration met the SLO once and missed it when measured again (pooled at 0): the
    verdict says so (not "none met it"), the table labels no row best, the summary says none
    met the SLO."""
    from loadtests.openloop_results import Slo
    from loadtests.tune_report import verdict, write_tune_report
    from loadtests.tune_results import DEFAULTS, ModelTuning, Trial, TuneRecord

    other = DEFAULTS.model_copy(update={"max_batch_size": 64})
    tuning = ModelTuning("a@onnx", 1)
    tuning.trials = [
        Trial(DEFAULTS, 0, 0.9, 20, []),
        Trial(other, 400, 0.5, 20, []),
        Trial(other, 0, 0.6, 20, []),  # the confirmation
    ]
    assert tuning.best is not None and tuning.chosen is None
    assert "met the SLO once missed it when measured again" in verdict(tuning)
    unconfirmed = ModelTuning("b@onnx", 1)  # the one that met it was never measured again
    unconfirmed.trials = [Trial(DEFAULTS, 0, 0.9, 20, []), Trial(DEFAULTS, 0, 0.8, 20, [])]
    unconfirmed.trials.append(Trial(other, 400, 0.5, 20, []))
    assert "were not measured again to confirm" in verdict(unconfirmed)
    record = TuneRecord("2026-12-02T00:00:00+00:00", Slo(99, 20), 60, 60, [tuning])
    markdown, _, summary = write_tune_report(record, tmp_path)
    assert summary == "tune: a@onnx (none met the SLO)"
    assert "| best |" not in markdown.read_text()


def test_tune_exits_1_when_no_model_got_a_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing saved for any model (here: none met the SLO): the command says so and exits
    1; it exited 0 as if tuned."""
    from typer.testing import CliRunner

    from loadtests import tune
    from loadtests.openloop_results import Slo
    from loadtests.tune_results import DEFAULTS, ModelTuning, Trial, TuneRecord
    from mnist_serve.cli import app

    version = tmp_path / "depthwise" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"x")
    missed = ModelTuning("depthwise@savedmodel", 1, [Trial(DEFAULTS, 0, 1.0, 1, [])])
    record = TuneRecord("2026-12-02T00:00:00+00:00", Slo(99, 1), 60, 60, [missed])
    monkeypatch.setattr(tune, "run_tune", lambda *args: (record, tmp_path / "tune.html", 1))
    result = CliRunner().invoke(app, ["tune", "depthwise", "--models", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "no configuration saved for any model" in result.output


def test_tune_calibrates_the_clients_ceiling_once_and_every_trial_searches_up_to_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without --quick: one calibration for all the models, its ceiling handed to every
    trial's rate search, kept in tune.json and said in the report."""
    from loadtests import client_ceiling, tune, tune_results
    from loadtests.openloop_results import ClientCeiling, ClientRun, Slo
    from modelrepo.layout import ModelName

    stub_tune_io(monkeypatch)
    known = ClientCeiling(5000, [ClientRun(5000, True, 1.0, 0.1)])
    calibrations: list[int] = []
    ceilings: set[float | None] = set()

    def calibrate(slo: Slo, payloads: list[bytes], folder: Path, min_requests: int,
                  on_run: object) -> ClientCeiling:  # fmt: skip
        calibrations.append(min_requests)
        return known

    def measure(*args: object) -> tune_results.Trial:
        ceilings.add(args[-1])  # type: ignore[arg-type]
        return tune_results.Trial(args[2], 1000.0, 1.0, 0.0, [])  # type: ignore[arg-type]

    monkeypatch.setattr(client_ceiling, "calibrate", calibrate)
    monkeypatch.setattr(tune, "measure", measure)
    names = [ModelName("depthwise", "onnx"), ModelName("original", "onnx")]
    record, page, _ = tune.run_tune(tmp_path, names, Slo(99, 20), 1e9, tmp_path / "out")
    assert calibrations == [tune.TUNE_FULL.min_requests] and ceilings == {5000}
    assert record.client == known
    said = "The rate search went no higher than the client's ceiling"
    assert said in (tmp_path / "out" / "tune.md").read_text() and page.name == "tune.html"
    tune.run_tune(tmp_path, names, Slo(99, 20), 1e9, tmp_path / "quick", quick=True)
    assert len(calibrations) == 1 and ceilings == {5000, None}  # --quick: no calibration


def test_an_explore_record_of_another_budget_is_kept_aside_not_overwritten(
    tmp_path: Path,
) -> None:
    """explore.json measured with another SLO or budget (or before the budget calibrated) is
    not resumed: it is kept as explore.json.old, saying so, and a new record starts."""
    from rich.console import Console

    from loadtests import runner
    from loadtests.explore import ExplorePlan, open_record
    from loadtests.explore_results import ExploreRecord
    from loadtests.openloop_results import Slo

    plan = ExplorePlan(out=tmp_path, slo=Slo(99, 20))
    same = open_record(plan, Console())
    same.save(tmp_path)
    assert open_record(plan, Console()) == same  # resumed
    older = ExploreRecord("then", "then", Slo(99, 50), plan.budget, runner.machine())
    older.save(tmp_path)
    console = Console(record=True, width=300)
    fresh = open_record(plan, console)
    assert fresh.slo == Slo(99, 20) and fresh.measurements == []
    old = json.loads((tmp_path / "explore.json.old").read_text())
    assert old["slo"] == {"percentile": 99.0, "limit_ms": 50.0}
    assert "kept as explore.json.old" in console.export_text()
