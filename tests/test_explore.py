"""explore, tune, serve --tuned and loadtest --tuned end to end, on the strides family trained
small, against real services on 127.0.0.1 (explore's and tune's QUICK budgets)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from loadtests import gate, history
from loadtests.closedloop import run_closed_loop
from loadtests.explore_results import ExploreRecord
from loadtests.results import RunRecord
from loadtests.slo import bodies
from loadtests.studies import studies
from mnist_serve.cli import app
from modelrepo.layout import RUNTIME_NAMES
from modelrepo.tuned import ServingConfig, TunedEntry, load_tuned, save_tuned
from tests.helpers import Server, batching, run_server
from training import catalog

pytestmark = pytest.mark.slow

STRIDES = [v.name for v in catalog.VARIANTS if v.family == "strides"]
EVERY_MODEL = {f"{v}@{r}" for v in STRIDES for r in RUNTIME_NAMES}
# Generous: the explore test checks shapes and the workflow, not this busy machine's speed.
# p90, not p99: LoadGen's early stopping needs 459 queries at a rate to decide a p99 (seconds
# at QUICK's rates, over a minute for the 16 models), a p90 only 44, fewer than QUICK's 60.
SLO = "p90=5000ms"


@dataclass
class Explored:
    """One explore run of the strides family from an empty model repository."""

    models: Path
    runs: Path
    out: Path
    output: str
    env: dict[str, str | None]


def invoke(args: list[str], env: dict[str, str | None]) -> str:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def explored(mnist_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Explored:
    root = tmp_path_factory.mktemp("explore")
    models, runs = root / "models", root / "runs"
    env: dict[str, str | None] = {"MNIST_SERVE_HISTORY": str(runs / "history.sqlite")}
    out = runs / "explore-strides"
    args = ["explore", "--family", "strides", "--quick", "--slo", SLO]
    args += ["--models", str(models), "--out", str(out), "--data", str(mnist_path)]
    return Explored(models, runs, out, invoke(args, env), env)


def test_explore_trains_what_is_missing_and_measures_every_variant_on_every_runtime(
    explored: Explored,
) -> None:
    assert "training the variants not exported yet: " + ", ".join(STRIDES) in explored.output
    record = ExploreRecord.load(explored.out)
    assert {m.model for m in record.measurements} == EVERY_MODEL
    for m in record.measurements:
        assert m.c1_latency_ms.p50 > 0 and m.c1_latency_ms.p99 >= m.c1_latency_ms.p50
        assert m.c32_rps > 0 and m.errors == 0 and m.requests > 0
        assert m.max_rate > 0 and m.rate_points  # p90 <= 5 s: met at the first rate at least
        assert m.alone_b1_ms > 0 and m.alone_b32_ms > 0
        assert m.parameters > 0 and m.macs > 0 and 0 < m.test_accuracy <= 1


def test_explore_report_has_the_front_the_table_and_the_correlations(explored: Explored) -> None:
    text = (explored.out / "explore.md").read_text()
    assert "## Models by Pareto rank" in text
    ranks = re.findall(r"^\| (\d+) \| (\d+) \| (small-stride\d@\w+) \|", text, re.MULTILINE)
    assert {model for _, _, model in ranks} == EVERY_MODEL
    assert [int(r) for r, _, _ in ranks] == sorted(int(r) for r, _, _ in ranks)
    assert any(r == "1" for r, _, _ in ranks)  # a Pareto front
    assert "Do fewer parameters mean faster when served?" in text
    for against in ("parameters", "MACs", "model alone, batch 1"):
        assert re.search(
            rf"^\| {against} \| [+-]\d\.\d\d \[[+-]\d\.\d\d, [+-]\d\.\d\d\] \(n=16\)",
            text,
            re.MULTILINE,
        )
    assert "### strides" in text and "fastest served" in text
    page = (explored.out / "explore.html").read_text()
    assert 'src="data:image/png;base64,' in page and "Pareto" in page
    assert "http" not in page.split("<body>")[1]  # self-contained
    assert "Pareto front (accuracy vs p50 at one client):" in explored.output
    assert [s.kind for s in studies(explored.runs / "history.sqlite")][:1] == ["explore"]


def test_explore_resumes_and_again_re_measures(explored: Explored, mnist_path: Path) -> None:
    before = {m.model: m.measured_at for m in ExploreRecord.load(explored.out).measurements}
    args = ["explore", "--family", "strides", "--quick", "--slo", SLO, "--data", str(mnist_path)]
    args += ["--models", str(explored.models), "--out", str(explored.out)]
    # An export that lacks a runtime (as from before it was converted) is converted, in place.
    version = explored.models / "small-stride4" / "1"
    shutil.rmtree(version / "openvino")
    metadata = json.loads((version / "metadata.json").read_text())
    del metadata["runtimes"]["openvino"]
    (version / "metadata.json").write_text(json.dumps(metadata))
    resumed = invoke(args, explored.env)
    assert "16 models measured before are kept" in resumed and "served:" not in resumed
    assert "training" not in resumed
    assert "converting small-stride4 version 1 to openvino" in resumed
    assert (version / "openvino" / "model.xml").is_file()
    chosen = ["small-stride2", "small-stride3", "small-stride5"]
    again = invoke([*args, "--again", "--runtimes", "onnx", "--variants", ",".join(chosen)],
                   explored.env)  # fmt: skip
    assert "served: 3 models" in again
    after = {m.model: m.measured_at for m in ExploreRecord.load(explored.out).measurements}
    assert after.keys() == before.keys()
    changed = {m for m in after if after[m] != before[m]}
    assert changed == {f"{v}@onnx" for v in chosen}  # re-measured; the others kept as they were
    report = (explored.out / "explore.md").read_text()  # the report: what was asked
    assert "(n=3)" in report and "explore: strides (" + ", ".join(chosen) + ")" in report


def test_explore_cuts_its_ladder_at_the_clients_ceiling_calibrated_once_a_run(
    explored: Explored, mnist_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FULL's calibration on QUICK's budget: the client's ceiling is calibrated once, kept in
    explore.json, and no model's search goes above it (QUICK's ladder is 200, 800: cut at a
    ceiling of 300, every model that meets 200 is searched on up to 300, not to 800); a
    resumed run keeps the ceiling it had and does not calibrate again."""
    from dataclasses import replace

    from loadtests import client_ceiling, explore
    from loadtests.explore_results import QUICK
    from loadtests.openloop_results import ClientCeiling, ClientRun

    calls: list[int] = []

    def calibrate(*args: object) -> ClientCeiling:
        calls.append(1)
        return ClientCeiling(300, [ClientRun(300, True, 1.0, 0.1)])

    monkeypatch.setattr(client_ceiling, "calibrate", calibrate)
    monkeypatch.setattr(explore.ExplorePlan, "budget", property(lambda self: replace(
        QUICK, calibrate=True)))  # fmt: skip
    out = tmp_path / "explore-ceiling"
    args = ["explore", "--family", "strides", "--quick", "--slo", SLO, "--runtimes", "onnx"]
    args += ["--variants", "small-stride4"]  # one model: the ceiling is the run's, not a model's
    args += ["--models", str(explored.models), "--out", str(out), "--data", str(mnist_path)]
    output = invoke(args, explored.env)
    assert "The open loop's ceiling: 300 req/s" in output and calls == [1]
    record = ExploreRecord.load(out)
    assert [m.model for m in record.measurements] == ["small-stride4@onnx"]
    assert record.client == ClientCeiling(300, [ClientRun(300, True, 1.0, 0.1)])
    for measured in record.measurements:
        assert {p.rate for p in measured.rate_points} <= {200, 300}, measured.model
        assert measured.max_rate == 300, measured.model  # p90 <= 5 s: every rate met
    said = "The rate search went no higher than the client's ceiling (its rates cut there"
    assert said in (out / "explore.md").read_text()
    again = invoke([*args, "--again"], explored.env)
    assert calls == [1] and "ceiling (kept from the run resumed): 300 req/s" in again
    assert ExploreRecord.load(out).client == record.client


def test_tune_saves_the_best_configuration_and_says_what_it_skipped(
    explored: Explored, mnist_path: Path
) -> None:
    out = explored.runs / "tune-one"
    output = invoke(
        ["tune", "small-stride5@litert", "--quick", "--budget", "35s", "--slo", SLO,
         "--models", str(explored.models), "--out", str(out), "--data", str(mnist_path)],
        explored.env,
    )  # fmt: skip
    entry = load_tuned(explored.models, "small-stride5").runtimes["litert"]
    assert entry.config.max_batch_size in (1, 8, 16, 32, 64) and entry.max_rate > 0
    assert entry.slo == "p90 <= 5000 ms" and entry.version == 1
    assert "skipped for the budget:" in output and "saved to" in output
    report = (out / "tune.md").read_text()
    assert "Skipped for the budget:" in report and "| best" in report.replace("|  ", "| ")
    assert json.loads((out / "tune.json").read_text())["models"][0]["trials"]
    assert "tune" in [s.kind for s in studies(explored.runs / "history.sqlite")]


@pytest.fixture(scope="module")
def tuned_server(explored: Explored) -> Iterator[Server]:
    """A server started with --tuned, one model tuned to batches of at most 4."""
    config = ServingConfig(max_batch_size=4, max_wait_ms=2, intra_op_threads=1, workers=0)
    entry = TunedEntry(config=config, version=1, slo="p99 <= 20 ms", max_rate=1, p50_ms=1,
                       tuned_at="2026-11-30T00:00:00")  # fmt: skip
    save_tuned(explored.models, "small-stride2", "onnx", entry)
    log = explored.runs / "tuned-server.log"
    args = ("--tuned", "--variants", "small-stride2", "--runs-dir", str(explored.runs))
    with run_server(explored.models, log, *args) as server:
        server.wait_ready()
        yield server


def batch_counts(url: str, runtime: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    labels = f'runtime="{runtime}",variant="small-stride2"'
    pattern = rf'mnist_serve_batch_size_bucket{{le="([^"]+)",{labels}}} (\S+)'
    return {le: float(n) for le, n in re.findall(pattern, text)}


def test_a_server_started_with_tuned_applies_the_saved_batching(
    tuned_server: Server, mnist_path: Path
) -> None:
    payloads = bodies(str(mnist_path), "small-stride2")
    for model in ("small-stride2@onnx", "small-stride2@litert"):
        run_closed_loop(f"{tuned_server.url}/predict/{model}", payloads, 32, 1.0, 0.2)
    tuned, untuned = (
        batch_counts(tuned_server.url, "onnx"),
        batch_counts(tuned_server.url, "litert"),
    )
    assert tuned["+Inf"] > 0 and tuned["4.0"] == tuned["+Inf"]  # never more than 4 images
    assert untuned["4.0"] < untuned["+Inf"]  # not tuned: the service's batch of 32 forms
    log = tuned_server.log.read_text()
    assert "small-stride2@onnx runs with its tuned configuration: batch 4, wait 2 ms" in log
    assert "small-stride2@litert has no tuned configuration" in log
    # One model tuned to a worker per core, one not tuned: no count applies to both, it says.
    said = "the models' tuned worker counts differ (one per core, none): serving with workers=0"
    assert said in log
    (entry,) = httpx.get(f"{tuned_server.url}/variants").json()
    runtimes = {r["runtime"]: r["batching"] for r in entry["runtimes"]}
    assert runtimes["onnx"] == batching(max_batch_size=4, max_wait_ms=2, intra_op_threads=1,
                                        tuned=True)  # fmt: skip
    assert runtimes["litert"] == batching()


def test_the_page_lists_explore_and_tune_reports(tuned_server: Server) -> None:
    listed = {r["name"]: r for r in httpx.get(f"{tuned_server.url}/reports").json()}
    assert listed["explore-strides"]["kind"] == "explore"
    assert listed["explore-strides"]["url"] == "/reports/explore-strides/explore.html"
    assert len(listed["explore-strides"]["models"]) == 16
    assert listed["tune-one"]["kind"] == "tune"
    for run in ("explore-strides", "tune-one"):
        assert httpx.get(f"{tuned_server.url}{listed[run]['url']}").status_code == 200
    assert httpx.get(f"{tuned_server.url}/reports/explore-strides/tune.html").status_code == 404
    assert httpx.get(f"{tuned_server.url}/reports/explore-strides/report.html").status_code == 404


def test_loadtest_tuned_compares_the_models_at_their_best(
    explored: Explored, tuned_server: Server, mnist_path: Path
) -> None:
    """(``tuned_server`` saved small-stride2@onnx's tuned configuration.)"""
    out = explored.runs / "loadtest-tuned"
    output = invoke(
        ["loadtest", "--tuned", "--variants", "small-stride2,small-stride3", "--runtimes", "onnx",
         "--concurrency", "1,4", "--duration", "1s", "--warmup", "0s", "--repeats", "2",
         "--precision", "off",  # fixed windows: the comparison, not the stopping rule, is tested
         "--models", str(explored.models), "--out", str(out), "--data", str(mnist_path)],
        {"MNIST_SERVE_HISTORY": None},  # its default place: beside the run folders
    )  # fmt: skip
    assert (out / "defaults" / "results.json").is_file() and (out / "results.json").is_file()
    # Both runs are in runs/history.sqlite (not the defaults in OUT/history.sqlite), and the
    # tuned service's run is never gated against the defaults'.
    db = explored.runs / "history.sqlite"
    assert not (out / "history.sqlite").exists()
    stored = {Path(r.folder).name: r for r in history.runs(db)}
    defaults, tuned = stored["defaults"], stored["loadtest-tuned"]
    assert defaults.comparable != tuned.comparable
    with pytest.raises(gate.NothingToCompare):
        gate.pick_runs(db, str(tuned.id), None)
    # The tuned run records (and is keyed by) what each model ran with: a model tuned again
    # later makes a new run incomparable with this one.
    ran = {
        "small-stride2@onnx": load_tuned(explored.models, "small-stride2").runtimes["onnx"].config
    }
    assert RunRecord.load(out).tuned == ran and RunRecord.load(out / "defaults").tuned == {}
    assert json.loads(tuned.comparable)["tuned"] == {m: c.model_dump() for m, c in ran.items()}
    assert "small-stride2@onnx: batch 4, wait 2 ms" in output
    assert "small-stride3@onnx: not tuned" in output
    said = (
        r"At their best \(--tuned\) the answer (is the same|changes): deploy (small-stride\d@onnx)"
    )
    verdict = re.search(said, output)
    assert verdict is not None
    report = (out / "report.md").read_text()
    assert "## At their best (--tuned) vs at the defaults" in report
    assert (
        f"At their best (--tuned) the answer {verdict.group(1)}: deploy {verdict.group(2)}"
        in report
    )
    comparison = json.loads((out / "tuned-comparison.json").read_text())
    assert comparison["answers"][1] == verdict.group(2)  # the tuned run's own answer
    assert comparison["answers"][0] in ("small-stride2@onnx", "small-stride3@onnx")
    measures = [s["measure"] for s in comparison["standings"]]
    assert measures == [
        "throughput at 1 client(s)",
        "p50 at 1 client(s)",
        "throughput at 4 client(s)",
    ]
