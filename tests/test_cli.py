"""The command line: help everywhere, clear errors with exit code 2."""

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_serve.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["train"], ["serve"], ["variants"]])
def test_help_explains_every_command(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


@pytest.mark.parametrize(
    ("command", "first", "last"),
    [
        (["explore"], "Trains what is missing", "explore.json into --out."),
        (["loadtest"], "Closed loop (default)", "in the results folder."),
        (["serve"], "Every option can also come", "wins over the variable."),
    ],
)
def test_help_paragraphs_are_reflowed_to_the_terminal(
    command: list[str], first: str, last: str
) -> None:
    """A command's description is wrapped to the terminal, not to the docstring's source
    lines: on a wide terminal each paragraph is one line (a narrow one used to get every
    source line wrapped again, leaving a stub of a line after each)."""
    output = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "1000"}).output
    line = next(line for line in output.splitlines() if first in line)
    assert last in line, output


def test_tune_help_names_the_values_it_searches() -> None:
    """``tune --help`` lists the search space in prose: every value of
    ``loadtests.tune_results.SPACE`` (its one place) must be there, so the two cannot drift
    apart."""
    from loadtests.tune_results import SPACE

    output = runner.invoke(app, ["tune", "--help"], terminal_width=200).output
    text = " ".join(output.replace("│", " ").split())  # rich's box and wrapping undone
    for name, values in [("max batch size", SPACE["max_batch_size"]),
                         ("max wait", SPACE["max_wait_ms"]),
                         ("intra-op threads", SPACE["intra_op_threads"])]:  # fmt: skip
        listed = ", ".join(f"{v:g}" for v in values)
        assert f"{name} ({listed}" in text, (name, listed, text)


def test_loadtest_and_demo_defaults_are_the_plans_and_read_back() -> None:
    """What ``loadtest`` does when not told is what a ``LoadPlan`` built in code does (but
    the decision: the command line asks for --precision), and each default the command line
    shows parses back to its figure in ``loadtests.defaults``."""
    import typer.main

    from loadtests import defaults
    from loadtests.results import LoadPlan
    from mnist_serve.cli.options import csv, percent, seconds

    command = typer.main.get_command(app)
    shown = {
        name: {p.name: p.default for p in command.commands[name].params}  # type: ignore[attr-defined]
        for name in ("loadtest", "demo")
    }
    plan = LoadPlan()
    cli = shown["loadtest"]
    assert csv(cli["concurrency"], int) == plan.concurrency == defaults.CONCURRENCY
    assert seconds(cli["duration"]) == plan.duration_s == defaults.WINDOW_S
    assert seconds(cli["warmup"], minimum=0) == plan.warmup_s == defaults.WARMUP_S
    assert cli["repeats"] == plan.repeats == defaults.REPEATS
    assert percent(cli["precision"]) == defaults.PRECISION and plan.precision == 0
    assert seconds(cli["budget"]) == defaults.BUDGET_S == 600
    assert csv(cli["rates"], float) == defaults.RATES
    assert cli["min_requests"] == shown["demo"]["min_requests"] == defaults.MIN_REQUESTS
    assert percent(defaults.share(0.025)) == 0.025  # not rounded to a whole percent
    demo = shown["demo"]
    assert csv(demo["concurrency"], int) == defaults.DEMO_CONCURRENCY
    assert seconds(demo["duration"]) == defaults.DEMO_WINDOW_S
    assert seconds(demo["budget"]) == defaults.DEMO_BUDGET_S == 360
    assert csv(demo["rates"], float) == defaults.DEMO_RATES
    assert demo["repeats"] == defaults.REPEATS


def test_unknown_variant_exits_2_listing_known_ones() -> None:
    result = runner.invoke(app, ["train", "resnet50"])
    assert result.exit_code == 2
    assert "unknown variant 'resnet50'" in result.output
    assert "depthwise" in result.output


def test_missing_data_path_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "original", "--data", str(tmp_path / "missing.npz")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_bad_option_value_exits_2() -> None:
    result = runner.invoke(app, ["train", "--epochs", "0"])
    assert result.exit_code == 2
    assert "--epochs" in result.output and "greater than or equal to 1" in result.output, (
        result.output
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--learning-rate", "0"], "must be > 0"),
        (["--learning-rate", "nan"], "must be > 0"),
        (["--seeds", ","], "--seeds names no seed"),
        (["--seed", "-1"], "greater than or equal to 0"),
        (["--seeds", "1,-1"], "--seeds must be between 0 and 4294967295"),
    ],
)
def test_train_refuses_what_training_would_refuse_before_it_starts(
    args: list[str], said: str, tmp_path: Path
) -> None:
    """Each once passed the command line and raised a traceback in training (a bad seed after
    a whole seed's training and export)."""
    result = runner.invoke(app, ["train", *args, "--models", str(tmp_path / "m")])
    assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output
    assert not (tmp_path / "m").exists()


def test_demo_checks_its_load_test_options_before_training(tmp_path: Path) -> None:
    """A bad level once surfaced as a traceback after minutes of training."""
    models = tmp_path / "m"
    result = runner.invoke(app, ["demo", "--models", str(models), "--concurrency", "0"])
    assert result.exit_code == 2 and "concurrency levels must be >= 1" in result.output
    assert not models.exists()


def test_variants_json_lists_the_catalogue() -> None:
    result = runner.invoke(app, ["variants", "--json"])
    assert result.exit_code == 0
    entries = {entry["name"]: entry for entry in json.loads(result.output)}
    assert entries["original"]["parameters"] == 1_199_882
    assert entries["depthwise"]["macs"] == 2_080_964
    assert len(entries) == 17


def test_serve_rejects_an_empty_model_repository(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--models", str(tmp_path)])
    assert result.exit_code == 2
    assert "no exported models" in result.output


def test_log_lines_after_an_in_process_serve_reach_the_current_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # serve configures logging while CliRunner's stderr is in place, then CliRunner closes it:
    # a handler that kept that stream would fail every later line ("--- Logging error ---").
    assert runner.invoke(app, ["serve", "--models", str(tmp_path)]).exit_code == 2
    capsys.readouterr()
    logging.getLogger("httpx").warning("a line after serve")
    err = capsys.readouterr().err
    assert "a line after serve" in err and "Logging error" not in err


def test_serve_rejects_invalid_settings(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--models", str(tmp_path), "--max-batch-size", "0"])
    assert result.exit_code == 2
    assert "max_batch_size" in result.output


def test_serve_reads_environment_when_no_flag_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNIST_SERVE_MODELS_DIR", str(tmp_path / "from-env"))
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "from-env" in result.output  # the variable, not the flag's default, was used
    result = runner.invoke(app, ["serve", "--models", str(tmp_path / "from-flag")])
    assert "from-flag" in result.output


@pytest.mark.slow
def test_serve_on_a_missing_gpu_exits_2(models_dir: Path) -> None:
    # No GPU on this machine (nor in CI): asking for one must stop the start, not half-serve.
    result = runner.invoke(app, ["serve", "--models", str(models_dir), "--device", "gpu"])
    assert result.exit_code == 2
    assert "sees no GPU" in result.output


@pytest.mark.slow
def test_serve_on_a_port_in_use_exits_2_naming_it(models_dir: Path) -> None:
    """Several workers: the supervisor's listen failed with a traceback (and left its run
    folder in /tmp)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--models", str(models_dir), "--port", str(port), "--workers", "2"]
        result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.output


def test_train_exits_1_when_a_conversion_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training done, one conversion failed (recorded in the metadata, the SavedModel
    published): the command says which and exits 1, as ``export`` does; it exited 0."""
    from types import SimpleNamespace

    from mnist_serve.cli import models
    from modelrepo.metadata import FailedConversion

    # What the command reads of a trained variant: its name and its runtimes' entries.
    runtimes = {"onnx": object(), "openvino": FailedConversion(error="boom")}
    done = [SimpleNamespace(metadata=SimpleNamespace(variant="depthwise", runtimes=runtimes))]
    monkeypatch.setattr(models, "train_variants", lambda *args, **kwargs: done)
    result = runner.invoke(app, ["train", "depthwise", "--models", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "1 conversion(s) failed: depthwise@openvino" in result.output
    monkeypatch.setattr(models, "train_variants", lambda *args, **kwargs: done[:0])
    assert runner.invoke(app, ["train", "depthwise", "--models", str(tmp_path)]).exit_code == 0


def test_models_list_against_another_server_is_a_clear_error() -> None:
    """An HTML page, or JSON of another shape, where the repository index was expected: a
    message and exit 1 (a JSONDecodeError or a TypeError traceback before)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = [(404, b"<html>Not Found</html>"), (200, b'{"models": []}'), (200, b"<html>")]

    class Other(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status, body = answers.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = runner.invoke(app, ["models", "list", "--url", url])
        shaped = runner.invoke(app, ["models", "list", "--url", url])
        loaded = runner.invoke(app, ["models", "load", "depthwise", "--url", url])
    finally:
        server.shutdown()
    assert loaded.exit_code == 1 and "not a JSON answer" in loaded.output, loaded.output
    assert page.exit_code == 1 and "not a JSON answer" in page.output, page.output
    assert shaped.exit_code == 1 and "an index of another shape" in shaped.output, shaped.output


def test_explore_and_export_name_unreadable_inputs_without_a_traceback(
    tmp_path: Path, mnist_path: Path
) -> None:
    """explore with an MNIST file that is not one: exit 2, as every --data; export of a
    version whose metadata is missing: that version named, exit 1."""
    bad = tmp_path / "mnist.npz"
    bad.write_text("not an archive")
    result = runner.invoke(
        app, ["explore", "--family", "seed", "--models", str(tmp_path / "m"), "--data", str(bad)]
    )
    assert result.exit_code == 2 and "error:" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    version = tmp_path / "repo" / "original" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"x")
    result = runner.invoke(
        app, ["export", "original", "--models", str(tmp_path / "repo"), "--data", str(mnist_path)]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1 and "original version 1 cannot be read" in result.output


def test_every_command_reads_the_folders_serve_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$MNIST_SERVE_MODELS_DIR and $MNIST_SERVE_RUNS_DIR, which `serve` reads through its
    Settings, are where the other commands look too (they used ./models and ./runs)."""
    monkeypatch.setenv("MNIST_SERVE_MODELS_DIR", str(tmp_path / "models-env"))
    monkeypatch.setenv("MNIST_SERVE_RUNS_DIR", str(tmp_path / "runs-env"))
    monkeypatch.delenv("MNIST_SERVE_HISTORY", raising=False)
    result = runner.invoke(app, ["export", "original"])
    assert result.exit_code == 2 and "models-env" in result.output, result.output
    result = runner.invoke(app, ["history"])
    assert str(tmp_path / "runs-env" / "history.sqlite") in " ".join(result.output.split())
    from mnist_serve.cli.options import default_out

    assert default_out("loadtest").parent == tmp_path / "runs-env"


def test_demo_on_a_missing_gpu_exits_2_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo DEVICE=gpu` without a GPU (none here, nor in CI): said at once; the service
    refused only after the training."""
    monkeypatch.setenv("MNIST_SERVE_DEVICE", "gpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # no GPU, even on a machine with one
    models = tmp_path / "m"
    result = runner.invoke(app, ["demo", "--models", str(models)])
    assert result.exit_code == 2 and "sees no GPU" in result.output, result.output
    assert not models.exists()


def test_explore_refuses_runtimes_none() -> None:
    """'none' meant every runtime to explore (and the SavedModel only to train)."""
    result = runner.invoke(app, ["explore", "--runtimes", "none"])
    assert result.exit_code == 2 and "name runtimes to measure" in result.output, result.output


def test_explore_refuses_a_variant_outside_its_family(tmp_path: Path) -> None:
    """At once, before anything is trained or served."""
    args = ["explore", "--family", "seed", "--variants", "depthwise,small-k3-3"]
    result = runner.invoke(app, [*args, "--models", str(tmp_path / "m")])
    assert result.exit_code == 2 and "not in family 'seed': small-k3-3" in result.output, (
        result.output
    )
    assert not (tmp_path / "m").exists()


def test_loadtest_tuned_calibrates_the_open_loops_ceiling_once_for_both_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--tuned --arrival poisson: the second run searches up to the first run's calibrated
    ceiling, so both runs' rates are judged against the same ceiling."""
    from types import SimpleNamespace

    import loadtests.tuned_compare
    from loadtests.openloop_results import ClientCeiling, ClientRun, OpenLoopRecord, Slo
    from loadtests.results import LoadPlan
    from loadtests.session import Outcome, Sweep
    from mnist_serve.cli import loadtest
    from tests.helpers import run_record

    known = ClientCeiling(4000, [ClientRun(4000, True, 1.0, 0.1)])
    sweeps: list[Sweep] = []

    def run(plan: LoadPlan, out: Path, url: None, models: Path, grpc: None, sweep: Sweep,
            *args: object, **kwargs: object) -> Outcome:  # fmt: skip
        sweeps.append(sweep)
        record = OpenLoopRecord(Slo(99, 20), 1, [100], [], {}, [], ceiling=4000, client=known)
        return Outcome(out, 1, tmp_path / "h.sqlite", None, record, run_record(plan))

    comparison = SimpleNamespace(save=lambda out: None, configs={}, verdict=lambda: "same")
    monkeypatch.setattr(loadtest, "run_load_test", run)
    monkeypatch.setattr(loadtest, "announce_report", lambda out: None)
    monkeypatch.setattr(loadtests.tuned_compare, "compare", lambda *args: comparison)
    monkeypatch.setattr(loadtests.tuned_compare, "answer_in", lambda folder: "")
    sweep = Sweep(rates=(100.0,), slo=Slo(99, 20), seconds=1, min_requests=10)
    loadtest.run_tuned(LoadPlan(), tmp_path, tmp_path, None, sweep, closed=False)
    assert [s.ceiling for s in sweeps] == ["auto", known]
