"""Every runtime end to end: conversion at export, then a real server answering on each one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests.procs import free_port
from modelrepo.contract import INPUT_NAME, PIXELS
from modelrepo.layout import CONVERTED_RUNTIMES, RUNTIME_NAMES, ModelName, ModelRepository
from modelrepo.runtimes import LoadOptions, RuntimeLoadError, load_runtime
from tests.conftest import QuickModels
from tests.helpers import Server, run_server, shared_server_batching
from training.convert import MAX_ABS_DIFF, ConversionError, convert, reference
from training.data import Mnist, to_model_input

BLANK = {INPUT_NAME: [0.0] * PIXELS}  # a request with one blank digit

RUNTIME_PAIRS = [(v, r) for v in ("original", "depthwise") for r in RUNTIME_NAMES]


def test_model_names_parse() -> None:
    assert ModelName.parse("depthwise@onnx") == ModelName("depthwise", "onnx")
    assert ModelName.parse("depthwise") == ModelName("depthwise", None)
    assert str(ModelName("original", "litert")) == "original@litert"
    for bad in ("depthwise@tpu", "Depthwise", "../x@onnx", "a@", "@onnx"):
        with pytest.raises(ValueError, match="not a model name"):
            ModelName.parse(bad)


def test_missing_artifact_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeLoadError, match=r"model\.onnx is missing"):
        load_runtime("onnx", tmp_path / "model.onnx", LoadOptions())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["original", "depthwise"])
def test_export_converts_every_runtime_and_records_the_check(
    trained: QuickModels, name: str
) -> None:
    version = trained.exported[name]
    assert version.runtimes() == list(RUNTIME_NAMES)
    metadata = version.load_metadata()
    for runtime in CONVERTED_RUNTIMES:
        entry = metadata.conversion(runtime)
        assert entry is not None, metadata.runtimes.get(runtime)
        assert 0 <= entry.max_abs_diff <= MAX_ABS_DIFF
        # Every conversion reproduces the SavedModel's test accuracy within 0.01 points.
        assert abs(entry.test_accuracy - metadata.test_accuracy) <= 0.0001
        assert entry.batch1_ms is not None and entry.batch1_ms > 0 and entry.bytes > 100_000


@pytest.mark.slow
def test_a_conversion_that_disagrees_is_an_error_and_leaves_nothing(
    trained: QuickModels, mnist: Mnist, tmp_path: Path
) -> None:
    """Checked against wrong answers, the conversion must refuse and remove its artifact."""
    source = trained.exported["depthwise"]
    target = tmp_path / "depthwise" / "1"
    shutil.copytree(source.path, target, ignore=shutil.ignore_patterns("model.tflite"))
    version = ModelRepository(tmp_path).get("depthwise")
    check = reference(version, to_model_input(mnist.x_test[:256]), mnist.y_test[:256])
    wrong = type(check)(check.images, check.labels, np.roll(check.probabilities, 1, axis=1))
    with pytest.raises(ConversionError, match="litert: answers differ"):
        convert(version, "litert", wrong)
    assert not (target / "model.tflite").exists()
    assert not list(target.glob("*.staging"))
    # Answers of another shape (a comparison that raises, not one that disagrees): an error
    # of this runtime too, not an exception that once discarded the whole trained model.
    shaped = type(check)(check.images, check.labels, check.probabilities[:, :9])
    with pytest.raises(ConversionError, match="litert: the converted model does not run"):
        convert(version, "litert", shaped)
    assert not (target / "model.tflite").exists()
    assert not list(target.glob("*.staging"))


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "runtime"), RUNTIME_PAIRS)
def test_every_runtime_answers_like_the_keras_model(
    server: Server, trained: QuickModels, mnist: Mnist, variant: str, runtime: str
) -> None:
    pixels = to_model_input(mnist.x_test[:8])
    expected = np.asarray(trained.results[variant].model(pixels, training=False))
    for url in (
        f"{server.url}/predict/{variant}?runtime={runtime}",
        f"{server.url}/predict/{variant}@{runtime}",
    ):
        response = httpx.post(url, json={"images": pixels[..., 0].tolist()}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["variant"], body["runtime"]) == (variant, runtime)
        assert body["model"] == f"{variant}@{runtime}"
        got = np.array([p["probabilities"] for p in body["predictions"]])
        assert np.abs(got - expected).max() < MAX_ABS_DIFF
        assert [p["digit"] for p in body["predictions"]] == expected.argmax(axis=1).tolist()


@pytest.mark.slow
def test_variants_list_every_runtime_with_device_and_state(server: Server) -> None:
    entries = {e["name"]: e for e in httpx.get(f"{server.url}/variants").json()}
    assert set(entries) == {"original", "depthwise"}
    for entry in entries.values():
        assert entry["runtime"] == "savedmodel" and entry["ready"]
        runtimes = {r["runtime"]: r for r in entry["runtimes"]}
        assert list(runtimes) == list(RUNTIME_NAMES)
        for name, info in runtimes.items():
            assert info["state"] == "ready" and info["device"] and info["batch1_ms"] > 0
            assert info["batching"] == shared_server_batching()
            assert info["model"] == f"{entry['name']}@{name}"
            assert info["cpu_only"] == (name in ("litert", "openvino"))
        assert runtimes["onnx"]["device"] == "CPUExecutionProvider"
        assert "data_source" not in entry["metadata"]  # no machine paths for clients


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/predict/depthwise?runtime=tensorrt", 404, "unknown_model"),
        ("/predict/depthwise@tensorrt", 404, "unknown_model"),
        ("/predict/depthwise@onnx?runtime=litert", 400, "bad_request"),
        ("/predict/nope@onnx", 404, "unknown_model"),
    ],
)
def test_bad_runtime_names_get_clear_4xx(server: Server, path: str, status: int, code: str) -> None:
    response = httpx.post(f"{server.url}{path}", json=BLANK, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["detail"]


@pytest.mark.slow
def test_runtimes_setting_picks_what_loads_and_the_default(
    models_dir: Path, tmp_path: Path
) -> None:
    args = ("--runtimes", "onnx,litert", "--default-runtime", "litert")
    with run_server(models_dir, tmp_path / "log", *args) as server:
        server.wait_ready()
        entry = httpx.get(f"{server.url}/variants/depthwise").json()
        plain = httpx.post(f"{server.url}/predict/depthwise", json=BLANK)
        absent = httpx.post(f"{server.url}/predict/depthwise@savedmodel", json=BLANK)
    assert [r["runtime"] for r in entry["runtimes"]] == ["onnx", "litert"]
    assert entry["runtime"] == "litert" and plain.json()["runtime"] == "litert"
    assert absent.status_code == 404


@pytest.mark.slow
def test_a_corrupt_artifact_fails_alone(trained: QuickModels, tmp_path: Path) -> None:
    """A broken model.onnx: that model is 'failed' with a reason; everything else serves."""
    for name, version in trained.exported.items():
        shutil.copytree(version.path, tmp_path / name / "1")
    (tmp_path / "depthwise" / "1" / "model.onnx").write_bytes(b"not an onnx graph")
    with run_server(tmp_path, tmp_path / "log") as server:
        server.wait_ready()
        ready = httpx.get(f"{server.url}/readyz")
        broken = httpx.post(f"{server.url}/predict/depthwise@onnx", json=BLANK)
        fine = httpx.post(f"{server.url}/predict/depthwise@litert", json=BLANK)
        entry = httpx.get(f"{server.url}/variants/depthwise").json()
    assert ready.status_code == 200 and "depthwise@onnx" in ready.json()["failed"]
    assert broken.status_code == 503 and broken.json()["error"] == "model_not_loaded"
    assert "failed to load" in broken.json()["detail"]
    assert fine.status_code == 200
    onnx = next(r for r in entry["runtimes"] if r["runtime"] == "onnx")
    assert onnx["state"] == "failed" and onnx["reason"] and str(tmp_path) not in onnx["reason"]


@pytest.mark.slow
def test_export_again_keeps_a_checked_artifact_when_reconversion_fails(
    trained: QuickModels, mnist: Mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mnist-serve export` that fails for one runtime: that runtime's earlier artifact stays,
    and so does its record, with the new error beside it; the others are redone."""
    from training import convert
    from training.export import export_runtimes

    shutil.copytree(trained.exported["depthwise"].path, tmp_path / "depthwise" / "1")
    version = ModelRepository(tmp_path).get("depthwise")
    before = version.load_metadata().conversion("litert")

    def broken(savedmodel: Path, target: Path) -> None:
        raise RuntimeError("converter exploded")

    monkeypatch.setitem(convert.CONVERTERS, "litert", broken)
    done = export_runtimes(version, mnist, ["litert", "onnx"])
    after = version.load_metadata()
    assert "converter exploded" in str(done["litert"]["error"])
    kept, redone = after.conversion("litert"), after.conversion("onnx")
    assert before is not None and kept is not None and redone is not None
    assert kept.max_abs_diff == before.max_abs_diff
    assert kept.last_conversion_error and "converter exploded" in kept.last_conversion_error
    assert version.artifact("litert").is_file()


@pytest.mark.slow
def test_a_corrupt_savedmodel_variant_leaves_the_other_serving(
    trained: QuickModels, tmp_path: Path
) -> None:
    """depthwise's saved_model.pb is garbage: original serves 200, depthwise is 503 'failed
    to load' (not 'still loading'), /readyz is ready and names it; no paths in the reason.
    With --strict-models the same repository stops the server instead."""
    for name, version in trained.exported.items():
        shutil.copytree(version.path, tmp_path / name / "1")
    (tmp_path / "depthwise" / "1" / "saved_model.pb").write_bytes(b"not a graph")
    started = time.perf_counter()
    with run_server(tmp_path, tmp_path / "log", "--runtimes", "savedmodel") as server:
        server.wait_ready()
        ready_s = time.perf_counter() - started
        ready = httpx.get(f"{server.url}/readyz").json()
        fine = httpx.post(f"{server.url}/predict/original", json=BLANK)
        broken = httpx.post(f"{server.url}/predict/depthwise", json=BLANK)
    assert fine.status_code == 200 and ready_s < 120
    assert broken.status_code == 503 and broken.json()["error"] == "model_not_loaded"
    assert "depthwise@savedmodel" in ready["failed"]
    assert str(tmp_path) not in str(ready) and "/" not in ready["failed"]["depthwise@savedmodel"]
    strict = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_serve.cli",
            "serve",
            "--models",
            str(tmp_path),
            "--runtimes",
            "savedmodel",
            "--strict-models",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert strict.returncode != 0 and "failed to load" in strict.stderr + strict.stdout
