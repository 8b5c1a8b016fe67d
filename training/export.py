"""Export a trained model into the model repository: a SavedModel, the other runtimes'
artifacts converted from it (training/convert.py), and ``metadata.json``.

The serving signature is named and stable: ``serving_default`` takes ``image`` (float32
[None, 28, 28, 1], pixels / 255) and returns ``probabilities`` (float32 [None, 10]). Keras 3
would otherwise name the input after an internal tensor (``keras_tensor_9``), which clients
(TF Serving's REST API, for one) would have to hard-code.
"""

from __future__ import annotations

import contextlib
import io
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import keras
import tensorflow as tf

from modelrepo.contract import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, SIGNATURE
from modelrepo.layout import CONVERTED_RUNTIMES, METADATA_FILE, ModelRepository, ModelVersion
from modelrepo.metadata import (
    Conversion,
    FailedConversion,
    ModelMetadata,
    Signature,
    save_metadata,
)
from training.catalog import count_macs
from training.convert import ConversionError, Converted, convert_all, reference
from training.data import Mnist, to_model_input
from training.train import TrainResult

OnConverted = Callable[[str, Converted | ConversionError], None]


def export_model(
    result: TrainResult,
    data: Mnist,
    repository: ModelRepository,
    runtimes: Sequence[str] = CONVERTED_RUNTIMES,
    on_converted: OnConverted | None = None,
) -> ModelVersion:
    """Write ``result`` (and its ``runtimes``' artifacts) as the next version of its variant.

    A failed conversion is recorded in the metadata and reported through ``on_converted``; the
    SavedModel is published all the same.
    """
    model = result.model
    repository.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{result.variant.name}-", dir=repository.root))
    try:
        _write_savedmodel(model, staging)
        savedmodel_bytes = _folder_bytes(staging)
        version = repository.next_version(result.variant.name)
        staged = ModelVersion(result.variant.name, version, staging)
        check = reference(staged, to_model_input(data.x_test), data.y_test)
        converted = convert_all(staged, runtimes, check, on_converted)
        metadata = build_metadata(result, data, version, savedmodel_bytes, converted)
        save_metadata(staging / METADATA_FILE, metadata)
        return repository.publish(result.variant.name, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_runtimes(
    model: ModelVersion,
    data: Mnist,
    runtimes: Sequence[str],
    on_converted: OnConverted | None = None,
) -> dict[str, dict[str, object]]:
    """Add (or redo) ``runtimes``' artifacts in an already published version, in place.

    Returns the new entries as JSON objects (a figures object, or one with ``error``), which
    are also merged into the version's ``metadata.json``.
    """
    metadata = model.load_metadata()
    check = reference(model, to_model_input(data.x_test), data.y_test)
    converted = convert_all(model, runtimes, check, on_converted)
    recorded = dict(metadata.runtimes)
    for runtime, entry in converted.items():
        previous = recorded.get(runtime)
        if (
            isinstance(entry, FailedConversion)
            and isinstance(previous, Conversion)
            and model.artifact(runtime).is_file()
        ):
            # The earlier, checked artifact is still there and still serves: keep its record.
            recorded[runtime] = previous.model_copy(update={"last_conversion_error": entry.error})
        else:
            recorded[runtime] = entry
    model.save_metadata(metadata.model_copy(update={"runtimes": recorded}))
    return {runtime: entry.model_dump() for runtime, entry in converted.items()}


def _write_savedmodel(model: keras.Model, path: Path) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda image: {OUTPUT_NAME: model(image, training=False)},
        input_signature=[
            keras.InputSpec(shape=(None, *INPUT_SHAPE), dtype="float32", name=INPUT_NAME)
        ],
    )
    # TensorFlow still prints tracing notes to stdout on some paths despite verbose=False.
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(str(path), verbose=False)


def build_metadata(
    result: TrainResult,
    data: Mnist,
    version: int,
    savedmodel_bytes: int,
    runtimes: dict[str, Conversion | FailedConversion],
) -> ModelMetadata:
    """Every figure a reader of the repository needs, as written to ``metadata.json``."""
    config = result.config
    return ModelMetadata(
        variant=result.variant.name,
        version=version,
        family=result.variant.family,
        description=result.variant.description,
        reference=result.variant.reference,
        parameters=int(result.model.count_params()),
        macs=count_macs(result.model),
        test_accuracy=result.test_accuracy,
        test_loss=result.test_loss,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        rho=config.rho,
        optimizer="Adadelta",
        seed=config.seed,
        train_images=result.train_images,
        training_seconds=round(result.train_seconds, 3),
        epoch_seconds=[round(s, 3) for s in result.epoch_seconds],
        history=result.history,
        savedmodel_bytes=savedmodel_bytes,
        signature=Signature(name=SIGNATURE, input=INPUT_NAME, output=OUTPUT_NAME),
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        python_version=platform.python_version(),
        data_source=data.source,
        data_sha256=data.checksum,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        runtimes=runtimes,
    )


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
