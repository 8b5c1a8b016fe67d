"""The command line: help everywhere, clear errors with exit code 2."""

import json
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


def test_tune_help_names_the_values_it_searches() -> None:
    """``tune --help`` lists the search space in prose: every value of ``loadtests.tune.SPACE``
    (its one place) must be there, so the two cannot drift apart."""
    from loadtests.tune import SPACE

    output = runner.invoke(app, ["tune", "--help"], terminal_width=200).output
    text = " ".join(output.replace("│", " ").split())  # rich's box and wrapping undone
    for name, values in [("max batch size", SPACE["max_batch_size"]),
                         ("max wait", SPACE["max_wait_ms"]),
                         ("intra-op threads", SPACE["intra_op_threads"])]:  # fmt: skip
        listed = ", ".join(f"{v:g}" for v in values)
        assert f"{name} ({listed}" in text, (name, listed, text)


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
