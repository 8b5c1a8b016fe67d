"""Model runtimes: each loads one artifact of one exported version and runs batches through it.

Four runtimes, named as in :data:`modelrepo.layout.ARTIFACTS`:

* ``savedmodel``: TensorFlow, calling the SavedModel's ``serving_default`` signature directly
  (never ``model.predict``); on the GPU when one is used.
* ``onnx``: ONNX Runtime on ``model.onnx``; CUDA execution provider on a GPU when the installed
  ONNX Runtime has it (the ``onnxruntime-gpu`` package), else the CPU.
* ``litert``: LiteRT (the ``ai-edge-litert`` interpreter, XNNPACK) on ``model.tflite``; CPU only.
* ``openvino``: OpenVINO on ``openvino/model.xml``; CPU only.

Each runtime's package is imported when a model of that runtime loads, so serving only
SavedModels never pays for the others. A runtime object is not thread-safe: one caller at a time
(the service's batcher guarantees it).
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from modelrepo.contract import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, SIGNATURE
from modelrepo.quiet import quiet_stderr

log = logging.getLogger(__name__)


class RuntimeLoadError(Exception):
    """An artifact could not be loaded by its runtime (missing, corrupt, wrong signature)."""


@dataclass(frozen=True)
class LoadOptions:
    """How to load: on the GPU or not, and how many threads one inference may use."""

    gpu: bool = False
    threads: int = 1  # 0 = the runtime's own default (usually one per core)


class Runtime(Protocol):
    """What the service needs of a loaded model."""

    name: ClassVar[str]
    cpu_only: ClassVar[bool]
    device: str  # where it runs, for people: "/CPU:0", "CUDAExecutionProvider", ...

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, 28, 28, 1) in [0, 1] -> float32 (N, 10) probabilities."""
        ...


class SavedModelRuntime:
    """TensorFlow: the SavedModel's ``serving_default`` signature, called directly."""

    name: ClassVar[str] = "savedmodel"
    cpu_only: ClassVar[bool] = False

    def __init__(self, artifact: Path, options: LoadOptions) -> None:
        import tensorflow as tf

        self._tf = tf
        self._tf_device = "/GPU:0" if options.gpu else "/CPU:0"
        self.device = self._tf_device
        if options.gpu:
            gpus = tf.config.list_physical_devices("GPU")
            details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
            self.device = f"/GPU:0 ({details.get('device_name', 'GPU')})"
        try:
            with tf.device(self._tf_device):
                self._loaded = tf.saved_model.load(str(artifact.parent))  # keeps the graph alive
        except Exception as err:
            raise RuntimeLoadError(f"SavedModel does not load: {type(err).__name__}") from err
        fn = self._loaded.signatures.get(SIGNATURE)
        if fn is None:
            raise RuntimeLoadError(f"the SavedModel has no {SIGNATURE!r} signature")
        inputs = fn.structured_input_signature[1]
        if INPUT_NAME not in inputs or OUTPUT_NAME not in fn.structured_outputs:
            raise RuntimeLoadError(
                f"signature takes {sorted(inputs)} and gives {sorted(fn.structured_outputs)}; "
                f"expected {INPUT_NAME!r} -> {OUTPUT_NAME!r}"
            )
        self._fn = fn

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run one batch through the signature."""
        with self._tf.device(self._tf_device):
            outputs = self._fn(**{INPUT_NAME: self._tf.constant(images)})
        return np.asarray(outputs[OUTPUT_NAME])


class OnnxRuntime:
    """ONNX Runtime on ``model.onnx`` (converted with tf2onnx)."""

    name: ClassVar[str] = "onnx"
    cpu_only: ClassVar[bool] = False

    def __init__(self, artifact: Path, options: LoadOptions) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3  # errors only
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        session_options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if options.gpu:
            if "CUDAExecutionProvider" in ort.get_available_providers():
                if hasattr(ort, "preload_dlls"):  # 1.21+: CUDA and cuDNN from the nvidia wheels
                    ort.preload_dlls()
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning(
                    "onnx: this ONNX Runtime has no CUDA provider (install "
                    "onnxruntime-gpu); running on the CPU"
                )
        try:
            self._session = ort.InferenceSession(
                str(artifact), session_options, providers=providers
            )
        except Exception as err:
            raise RuntimeLoadError(f"model.onnx does not load: {_first_line(err)}") from err
        _check_names(
            [i.name for i in self._session.get_inputs()],
            [o.name for o in self._session.get_outputs()],
        )
        self.device = self._session.get_providers()[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run one batch through the ONNX graph."""
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


class LiteRtRuntime:
    """LiteRT (formerly TensorFlow Lite) on ``model.tflite``, with XNNPACK; CPU only."""

    name: ClassVar[str] = "litert"
    cpu_only: ClassVar[bool] = True

    def __init__(self, artifact: Path, options: LoadOptions) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(
                model_path=str(artifact), num_threads=options.threads or None
            )
        except Exception as err:
            raise RuntimeLoadError(f"model.tflite does not load: {_first_line(err)}") from err
        signature = self._interpreter.get_signature_list().get(SIGNATURE, {})
        _check_names(signature.get("inputs", []), signature.get("outputs", []))
        details = self._interpreter.get_signature_runner(SIGNATURE).get_input_details()
        self._input = details[INPUT_NAME]["index"]
        outputs = self._interpreter.get_signature_runner(SIGNATURE).get_output_details()
        self._output = outputs[OUTPUT_NAME]["index"]
        with quiet_stderr():  # the first allocation announces XNNPACK on stderr: not on ours
            self._interpreter.allocate_tensors()
        shapes = {d["index"]: d["shape"] for d in self._interpreter.get_input_details()}
        self._batch = int(shapes[self._input][0])  # the batch size the tensors are allocated for
        self.device = "CPU (XNNPACK)"

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run one batch; tensors are re-allocated only when the batch size changes."""
        if len(images) != self._batch:
            self._interpreter.resize_tensor_input(self._input, [len(images), *INPUT_SHAPE])
            self._interpreter.allocate_tensors()
            self._batch = len(images)
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)  # a copy, safe to hand out


class OpenVinoRuntime:
    """OpenVINO on its IR (``openvino/model.xml`` + ``.bin``); CPU only here."""

    name: ClassVar[str] = "openvino"
    cpu_only: ClassVar[bool] = True

    def __init__(self, artifact: Path, options: LoadOptions) -> None:
        import openvino as ov

        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # no silent bf16/f16 on CPUs that have them
        }
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = options.threads
        try:
            compiled = ov.Core().compile_model(str(artifact), "CPU", config)
        except Exception as err:
            raise RuntimeLoadError(f"the OpenVINO IR does not load: {_first_line(err)}") from err
        _check_names([i.any_name for i in compiled.inputs], [o.any_name for o in compiled.outputs])
        self._request = compiled.create_infer_request()
        self.device = "CPU"

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run one batch (synchronous inference on one request object)."""
        self._request.infer({0: images})
        return self._request.get_output_tensor(0).data.copy()


RUNTIMES: dict[str, type[SavedModelRuntime | OnnxRuntime | LiteRtRuntime | OpenVinoRuntime]] = {
    cls.name: cls for cls in (SavedModelRuntime, OnnxRuntime, LiteRtRuntime, OpenVinoRuntime)
}


def load_runtime(name: str, artifact: Path, options: LoadOptions) -> Runtime:
    """Load ``artifact`` (a version's ``ModelVersion.artifact(name)``) with runtime ``name``.

    RuntimeLoadError when it can't: missing, corrupt, or not the repository's signature.
    """
    if not artifact.is_file():
        raise RuntimeLoadError(f"no {name} artifact ({artifact.name} is missing)")
    return RUNTIMES[name](artifact, options)


def median_call_ms(runtime: Runtime, images: np.ndarray, calls: int = 200, warm: int = 20) -> float:
    """Median milliseconds of one ``runtime.predict(images)``, over ``calls`` after ``warm``."""
    for _ in range(warm):
        runtime.predict(images)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        runtime.predict(images)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _check_names(inputs: list[str], outputs: list[str]) -> None:
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise RuntimeLoadError(
            f"takes {inputs} and gives {outputs}; expected {INPUT_NAME!r} -> {OUTPUT_NAME!r}"
        )


ABSOLUTE_PATH = re.compile(r"/[^\s:'\"()]+")


def _first_line(err: BaseException) -> str:
    """An exception's message for clients: first line, short, file paths cut to their name."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ABSOLUTE_PATH.sub(lambda m: Path(m.group()).name, text)[:200]
