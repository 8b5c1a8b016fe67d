"""Export a trained model into the model repository as a SavedModel plus ``metadata.json``.

The serving signature is named and stable: ``serving_default`` takes ``image`` (float32
[None, 28, 28, 1], pixels / 255) and returns ``probabilities`` (float32 [None, 10]). Keras 3
would otherwise name the input after an internal tensor (``keras_tensor_9``), which clients
(TF Serving's REST API, for one) would have to hard-code.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from mnist_serve.repository import (
    INPUT_NAME,
    METADATA_FILE,
    OUTPUT_NAME,
    SIGNATURE,
    ModelRepository,
    ModelVersion,
)
from training.catalog import count_macs
from training.data import Mnist
from training.train import TrainResult


def export_model(result: TrainResult, data: Mnist, repository: ModelRepository) -> ModelVersion:
    """Write ``result`` as the next version of its variant and return where it went."""
    model = result.model
    repository.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{result.variant.name}-", dir=repository.root))
    try:
        _write_savedmodel(model, staging)
        version = repository.next_version(result.variant.name)
        metadata = build_metadata(result, data, version, savedmodel_bytes=_folder_bytes(staging))
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        return repository.publish(result.variant.name, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_savedmodel(model: keras.Model, path: Path) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda image: {OUTPUT_NAME: model(image, training=False)},
        input_signature=[
            keras.InputSpec(shape=(None, 28, 28, 1), dtype="float32", name=INPUT_NAME)
        ],
    )
    # TensorFlow still prints tracing notes to stdout on some paths despite verbose=False.
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(str(path), verbose=False)


def build_metadata(
    result: TrainResult, data: Mnist, version: int, savedmodel_bytes: int
) -> dict[str, Any]:
    """Every figure a reader of the repository needs, as written to ``metadata.json``."""
    config = result.config
    return {
        "variant": result.variant.name,
        "version": version,
        "family": result.variant.family,
        "description": result.variant.description,
        "reference": result.variant.reference,
        "parameters": int(result.model.count_params()),
        "macs": count_macs(result.model),
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "rho": config.rho,
        "optimizer": "Adadelta",
        "seed": config.seed,
        "train_images": result.train_images,
        "training_seconds": round(result.train_seconds, 3),
        "epoch_seconds": [round(s, 3) for s in result.epoch_seconds],
        "history": result.history,
        "savedmodel_bytes": savedmodel_bytes,
        "signature": {"name": SIGNATURE, "input": INPUT_NAME, "output": OUTPUT_NAME},
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "data_source": data.source,
        "data_sha256": data.checksum,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
