"""metadata.json through ModelMetadata: the same layout as ever, old or broken files refused."""

import json
import math
from pathlib import Path
from typing import Any

import pytest

from modelrepo.layout import ModelRepository, RepositoryError
from modelrepo.metadata import (
    Conversion,
    FailedConversion,
    MetadataError,
    load_metadata,
    parse_metadata,
    save_metadata,
)
from training.seeds import summarize


def written() -> dict[str, Any]:
    """A metadata.json as training writes it (fields in their order)."""
    return {
        "variant": "depthwise",
        "version": 3,
        "family": "seed",
        "description": "d",
        "reference": "issue 2",
        "parameters": 823_828,
        "macs": 1_000_000,
        "test_accuracy": 0.99,
        "test_loss": 0.03,
        "epochs": 2,
        "batch_size": 128,
        "learning_rate": 1.0,
        "rho": 0.95,
        "optimizer": "Adadelta",
        "seed": 1,
        "train_images": 60_000,
        "training_seconds": 80.5,
        "epoch_seconds": [41.0, 39.5],
        "history": {"loss": [0.3, 0.1]},
        "savedmodel_bytes": 3_000_000,
        "signature": {"name": "serving_default", "input": "image", "output": "probabilities"},
        "tensorflow_version": "2.21.0",
        "keras_version": "3.11.0",
        "python_version": "3.11.7",
        "data_source": "/data/mnist.npz",
        "data_sha256": "ab" * 32,
        "created_at": "2026-11-30T09:00:00+00:00",
        "runtimes": {
            "onnx": {
                "artifact": "model.onnx",
                "bytes": 3_100_000,
                "convert_seconds": 2.5,
                "max_abs_diff": 1e-6,
                "test_accuracy": 0.99,
                "batch1_ms": 0.21,
            },
            "litert": {"error": "converter exploded"},
            "openvino": {
                "artifact": "openvino/model.xml",
                "bytes": 10,
                "convert_seconds": 1.0,
                "max_abs_diff": 2e-6,
                "test_accuracy": 0.99,
                "batch1_ms": 0.3,
                "last_conversion_error": "later failure",
            },
        },
    }


def test_round_trip_keeps_the_layout(tmp_path: Path) -> None:
    data = written()
    (tmp_path / "metadata.json").write_text(json.dumps(data, indent=2) + "\n")
    metadata = load_metadata(tmp_path / "metadata.json")
    assert metadata.signature.output == "probabilities" and metadata.seeds is None
    assert isinstance(metadata.runtimes["litert"], FailedConversion)
    onnx = metadata.conversion("onnx")
    assert isinstance(onnx, Conversion) and onnx.batch1_ms == 0.21
    assert metadata.conversion("litert") is None and metadata.conversion("savedmodel") is None
    assert metadata.usable_runtimes() == ["onnx", "openvino"]
    assert metadata.median_epoch_seconds() == 40.25
    assert metadata.to_json() == data and list(metadata.to_json()) == list(data)
    save_metadata(tmp_path / "again.json", metadata)
    assert (tmp_path / "again.json").read_text() == (tmp_path / "metadata.json").read_text()


def test_seed_summary_is_typed_and_written_after_the_runtimes(tmp_path: Path) -> None:
    summary = summarize([1, 2], [0.99, 0.992], [[1.0], [2.0]])
    metadata = parse_metadata(written()).model_copy(update={"seeds": summary})
    save_metadata(tmp_path / "metadata.json", metadata)
    again = load_metadata(tmp_path / "metadata.json")
    assert again.seeds == summary and list(again.to_json())[-2:] == ["runtimes", "seeds"]
    one = summarize([1], [0.99], [[1.0]])  # NaN spread survives the file
    save_metadata(tmp_path / "one.json", metadata.model_copy(update={"seeds": one}))
    loaded = load_metadata(tmp_path / "one.json").seeds
    assert loaded is not None and math.isnan(loaded.std)


def test_files_without_runtimes_or_timings_are_read() -> None:
    """Versions exported before runtimes were converted, or before batch1_ms was timed."""
    data = written()
    del data["runtimes"]
    assert parse_metadata(data).runtimes == {}
    data = written()
    del data["runtimes"]["onnx"]["batch1_ms"]
    metadata = parse_metadata(data)
    assert metadata.runtimes["onnx"] == Conversion(
        artifact="model.onnx",
        bytes=3_100_000,
        convert_seconds=2.5,
        max_abs_diff=1e-6,
        test_accuracy=0.99,
    )
    assert "batch1_ms" not in metadata.to_json()["runtimes"]["onnx"]


def test_a_missing_field_is_refused_naming_file_and_field(tmp_path: Path) -> None:
    data = written()
    del data["test_accuracy"]
    folder = tmp_path / "depthwise" / "1"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps(data))
    with pytest.raises(MetadataError, match=r"depthwise/1/metadata.json .*field test_accuracy"):
        load_metadata(folder / "metadata.json")


def test_wrong_shapes_are_refused() -> None:
    data = written()
    data["epoch_seconds"] = "fast"
    with pytest.raises(MetadataError, match="field epoch_seconds"):
        parse_metadata(data, "m.json")
    data = written()
    data["runtimes"]["onnx"] = {"artifact": "model.onnx"}
    with pytest.raises(MetadataError, match=r"m.json .*field runtimes\.onnx"):
        parse_metadata(data, "m.json")
    with pytest.raises(MetadataError, match="must hold a JSON object"):
        parse_metadata([1, 2], "m.json")


def test_repository_reports_unreadable_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "depthwise" / "1"
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    (folder / "metadata.json").write_text("{not json")
    with pytest.raises(RepositoryError, match=r"metadata\.json is not valid JSON"):
        ModelRepository(tmp_path).get("depthwise").load_metadata()
