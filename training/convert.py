"""Convert an exported SavedModel into the other runtimes' artifacts, and check each one.

* ``onnx``: tf2onnx from the SavedModel's signature (opset 17) -> ``model.onnx``;
* ``litert``: TensorFlow's LiteRT (TFLite) converter on the SavedModel -> ``model.tflite``;
* ``openvino``: ``openvino.convert_model`` on the SavedModel -> ``openvino/model.xml`` + ``.bin``.

A conversion is kept only if, on the real MNIST test digits, the new runtime agrees with the
SavedModel: largest probability difference within :data:`MAX_ABS_DIFF` and test accuracy within
:data:`MAX_ACCURACY_GAP`. Otherwise it is a :class:`ConversionError` naming the runtime and the
cause, and no artifact is left behind. Each artifact is written beside the version under a
temporary name and renamed into place, so a server never loads half a file.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from modelrepo.contract import INPUT_NAME, INPUT_SHAPE, SIGNATURE
from modelrepo.layout import ModelVersion
from modelrepo.metadata import Conversion, FailedConversion
from modelrepo.runtimes import (
    LoadOptions,
    Runtime,
    RuntimeLoadError,
    load_runtime,
    median_call_ms,
)

ONNX_OPSET = 17
# float32 kernels differ in summation order between runtimes: ~1e-6 at most, measured on all
# three. 1e-4 leaves room for other CPUs and still catches any real conversion fault.
MAX_ABS_DIFF = 1e-4
MAX_ACCURACY_GAP = 0.0001  # 0.01 percentage points: one test digit in 10,000
CHECK_BATCH = 128


class ConversionError(Exception):
    """A runtime's artifact could not be made, or disagrees with the SavedModel."""

    def __init__(self, runtime: str, cause: str) -> None:
        super().__init__(f"{runtime}: {cause}")
        self.runtime = runtime
        self.cause = cause


@dataclass(frozen=True)
class Converted:
    """One runtime's artifact, as recorded under ``runtimes`` in ``metadata.json``."""

    runtime: str
    artifact: str  # relative to the version folder
    bytes: int
    convert_seconds: float
    max_abs_diff: float  # against the SavedModel, over the whole test set
    test_accuracy: float
    batch1_ms: float  # median of a short in-process timing, one thread: a first hint of speed

    def record(self) -> Conversion:
        """The metadata entry."""
        return Conversion.model_validate({k: v for k, v in asdict(self).items() if k != "runtime"})


@dataclass(frozen=True)
class Reference:
    """What every conversion is checked against: test digits, labels and SavedModel answers."""

    images: np.ndarray  # float32 (N, 28, 28, 1)
    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def accuracy(self) -> float:
        """The SavedModel's accuracy on these digits."""
        return float((self.probabilities.argmax(axis=1) == self.labels).mean())


def reference(model: ModelVersion, images: np.ndarray, labels: np.ndarray) -> Reference:
    """Run the SavedModel over ``images``: the answers the other runtimes must reproduce."""
    savedmodel = load_runtime("savedmodel", model.artifact("savedmodel"), LoadOptions(threads=0))
    return Reference(images, labels, run_batches(savedmodel, images))


def run_batches(runtime: Runtime, images: np.ndarray) -> np.ndarray:
    """All of ``images`` through ``runtime`` in batches of :data:`CHECK_BATCH`."""
    return np.concatenate(
        [runtime.predict(images[i : i + CHECK_BATCH]) for i in range(0, len(images), CHECK_BATCH)]
    )


def to_onnx(savedmodel: Path, target: Path) -> None:
    """tf2onnx on the SavedModel's serving signature."""
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(str(savedmodel))  # must outlive fn: it owns the variables
    fn = loaded.signatures[SIGNATURE]
    spec = [tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=INPUT_NAME)]
    with contextlib.redirect_stdout(io.StringIO()):
        tf2onnx.convert.from_function(
            tf.function(lambda image: fn(image=image)),
            input_signature=spec,
            opset=ONNX_OPSET,
            output_path=str(target),
        )


def to_litert(savedmodel: Path, target: Path) -> None:
    """TensorFlow's LiteRT converter (float32, no quantization: answers must match)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(savedmodel), signature_keys=[SIGNATURE]
    )
    target.write_bytes(converter.convert())


def to_openvino(savedmodel: Path, target: Path) -> None:
    """OpenVINO's model conversion API; writes ``model.xml`` and ``model.bin``."""
    import openvino as ov

    # save_model halves weights to float16 by default: answers then drift by ~1e-3 and flip
    # near-tied digits. Keep float32, like every other runtime here.
    ov.save_model(ov.convert_model(str(savedmodel)), str(target), compress_to_fp16=False)


CONVERTERS: dict[str, Callable[[Path, Path], None]] = {
    "onnx": to_onnx,
    "litert": to_litert,
    "openvino": to_openvino,
}


def convert(model: ModelVersion, runtime: str, check: Reference) -> Converted:
    """Make, check and publish ``runtime``'s artifact for ``model``; ConversionError if not."""
    final = model.artifact(runtime)
    # What gets renamed into place: the file, or for OpenVINO the folder holding its two files.
    top = model.path / final.relative_to(model.path).parts[0]
    staging = top.with_name(top.name + ".staging")
    staged = staging / final.relative_to(top) if top != final else staging
    _remove(staging)
    staged.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        try:
            CONVERTERS[runtime](model.path, staged)
        except Exception as err:
            raise ConversionError(runtime, f"conversion failed: {_short(err)}") from err
        seconds = time.perf_counter() - started
        diff, accuracy, batch1_ms = _check(runtime, staged, check)
    except BaseException:
        _remove(staging)
        raise
    _remove(top)
    staging.rename(top)
    size = sum(f.stat().st_size for f in top.rglob("*")) if top.is_dir() else top.stat().st_size
    relative = str(final.relative_to(model.path))
    return Converted(runtime, relative, size, round(seconds, 3), diff, accuracy, batch1_ms)


def _check(runtime: str, artifact: Path, check: Reference) -> tuple[float, float, float]:
    """Load ``artifact``, compare it with the SavedModel, time batch 1: diff, accuracy, ms."""
    try:
        loaded = load_runtime(runtime, artifact, LoadOptions(threads=1))
    except RuntimeLoadError as err:
        raise ConversionError(runtime, f"the converted model does not load: {err}") from err
    try:  # a runtime error while running it, or answers of another shape, fail this runtime
        probabilities = run_batches(loaded, check.images)
        diff = float(np.abs(probabilities - check.probabilities).max())
        accuracy = float((probabilities.argmax(axis=1) == check.labels).mean())
        batch1_ms = round(median_call_ms(loaded, check.images[:1]), 4)
    except Exception as err:
        raise ConversionError(runtime, f"the converted model does not run: {_short(err)}") from err
    if not diff <= MAX_ABS_DIFF:  # also catches NaN
        raise ConversionError(
            runtime, f"answers differ from the SavedModel's by up to {diff:.3g} (> {MAX_ABS_DIFF})"
        )
    if abs(accuracy - check.accuracy) > MAX_ACCURACY_GAP:
        raise ConversionError(
            runtime,
            f"test accuracy {accuracy:.4%} differs from the SavedModel's {check.accuracy:.4%}",
        )
    return diff, accuracy, batch1_ms


def convert_all(
    model: ModelVersion,
    runtimes: Sequence[str],
    check: Reference,
    on_done: Callable[[str, Converted | ConversionError], None] | None = None,
) -> dict[str, Conversion | FailedConversion]:
    """Convert ``model`` for each runtime; failures are recorded (and reported), not raised.

    Returns the ``runtimes`` section of ``metadata.json``: per runtime, its figures or its
    ``error``.
    """
    section: dict[str, Conversion | FailedConversion] = {}
    for runtime in runtimes:
        result: Converted | ConversionError
        try:
            result = convert(model, runtime, check)
            section[runtime] = result.record()
        except ConversionError as err:
            result = err
            section[runtime] = FailedConversion(error=err.cause)
        if on_done is not None:
            on_done(runtime, result)
    return section


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _short(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1].strip()[:300]}" if lines else type(err).__name__
