"""How to feed an MNIST digit to a model another server describes: its metadata, read and checked.

The load test does not assume the target's tensors are ours (``image`` ``[-1, 28, 28, 1]``
FP32). Before the first step it reads each model's metadata through the protocol it will speak,
:func:`fetch_layout`: KServe V2 ``GET /v2/models/<name>`` or the gRPC ``ModelMetadata`` call,
or TF Serving's ``GET /v1/models/<name>/metadata`` (its signature). :func:`from_v2` and
:func:`from_tfserving` turn that into a :class:`TensorLayout`: the input's name, the exact shape
to send for one digit (with or without a batch dimension; flat 784, 28x28, 28x28x1 or 1x28x28),
its datatype (FP32, FP64 or FP16 pixels in [0, 1], or UINT8 0-255), and the output of 10 values
to read. Where a digit cannot be fed (several inputs, another size, an integer class output,
a dimension left open) they raise :class:`LayoutError`, naming the mismatch, and the load test
stops before sending anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelrepo.contract import CLASSES, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, PIXELS, SIDE

# V2 datatypes the load test sends pixels as, and reads probabilities from (numpy, little-endian).
DTYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "UINT8": "u1"}
OUTPUT_DTYPES = ("FP32", "FP64", "FP16")
# TF Serving's signature dtypes, as V2 names.
TF_DTYPES = {"DT_FLOAT": "FP32", "DT_DOUBLE": "FP64", "DT_HALF": "FP16", "DT_UINT8": "UINT8"}
TF_SIGNATURE = "serving_default"
# One digit's pixels, the 1s dropped: what an input's non-batch dimensions may hold.
DIGIT_FORMS = ((PIXELS,), (SIDE, SIDE))


class LayoutError(ValueError):
    """A model an MNIST digit cannot be sent to, or metadata that cannot be read."""


@dataclass(frozen=True)
class TensorLayout:
    """How one digit goes to a model and how its answer comes back.

    ``shape`` is the whole tensor sent for one digit (``[1, 784]``, ``[1, 28, 28, 1]``, or
    ``[784]`` for a model without a batch dimension); ``batched`` whether its first dimension is
    the batch. ``signature`` is TF Serving's signature name (empty elsewhere).
    """

    model: str
    input: str
    shape: tuple[int, ...]
    datatype: str
    output: str
    output_datatype: str = "FP32"
    batched: bool = True
    signature: str = ""

    def __post_init__(self) -> None:
        if self.datatype not in DTYPES or self.output_datatype not in OUTPUT_DTYPES:
            raise LayoutError(f"unsupported datatypes {self.datatype} -> {self.output_datatype}")
        if math.prod(self.shape) != PIXELS:
            raise LayoutError(f"shape {list(self.shape)} does not hold one digit's {PIXELS} pixels")

    @classmethod
    def ours(cls, model: str) -> TensorLayout:
        """mnist-serve's own tensors (modelrepo.contract): what its metadata says too."""
        return cls(model, INPUT_NAME, (1, *INPUT_SHAPE), "FP32", OUTPUT_NAME)

    def array(self, digit: np.ndarray) -> np.ndarray:
        """A uint8 28x28 digit as the tensor to send: shaped, typed, scaled (UINT8 stays 0-255)."""
        values = digit if self.datatype == "UINT8" else digit / 255.0
        return np.ascontiguousarray(values.reshape(self.shape).astype(DTYPES[self.datatype]))

    def read(self, raw: bytes) -> np.ndarray:
        """An output's raw little-endian bytes as float32 values."""
        return np.frombuffer(raw, dtype=DTYPES[self.output_datatype]).astype(np.float32)

    def __str__(self) -> str:
        sig = f" (signature {self.signature})" if self.signature else ""
        return (
            f"{self.model}: {self.input} {self.datatype} {list(self.shape)} -> "
            f"{self.output} {self.output_datatype}{sig}"
        )


def _dims(shape: Any, where: str) -> list[int]:
    try:
        return [int(d) for d in shape]
    except (TypeError, ValueError) as err:
        raise LayoutError(f"{where}: shape {shape!r} is not a list of integers") from err


def digit_shape(model: str, name: str, dims: list[int]) -> tuple[tuple[int, ...], bool]:
    """The shape to send one digit in, from an input's declared ``dims``, and whether the first
    dimension is the batch; LayoutError naming the mismatch otherwise."""
    wants = f"model {model} wants input {name} {dims}"
    batched = bool(dims) and dims[0] == -1
    per_image = dims[1:] if batched else dims
    if any(d < 0 for d in per_image):
        raise LayoutError(
            f"{wants}: a dimension other than the batch is left open (-1); an MNIST digit is "
            f"{PIXELS} values (28x28), and the load test will not guess their arrangement"
        )
    if tuple(d for d in per_image if d != 1) not in DIGIT_FORMS:
        raise LayoutError(
            f"{wants}; an MNIST digit is {PIXELS} values (28x28, flat or with one channel)"
        )
    return ((1, *per_image) if batched else tuple(per_image)), batched


def output_size_ok(dims: list[int]) -> bool:
    """Whether an output of declared ``dims`` can be 10 values for one digit (open dims may)."""
    rest = dims[1:] if dims and dims[0] == -1 else dims
    return any(d < 0 for d in rest) or math.prod(rest) == CLASSES


def pick_output(model: str, outputs: list[tuple[str, str, list[int]]]) -> tuple[str, str]:
    """The (name, datatype) of the output holding the 10 class scores."""
    fitting = [o for o in outputs if output_size_ok(o[2])]
    if not fitting:
        declared = ", ".join(f"{n} {d} {s}" for n, d, s in outputs) or "none"
        raise LayoutError(f"model {model} has no output of {CLASSES} values (outputs: {declared})")
    floats = [o for o in fitting if o[1] in OUTPUT_DTYPES]
    if not floats:
        name, datatype, _ = fitting[0]
        raise LayoutError(
            f"model {model}'s output {name} is {datatype}; the load test reads {CLASSES} "
            f"scores as {', '.join(OUTPUT_DTYPES)}"
        )
    if len(floats) > 1:
        names = ", ".join(o[0] for o in floats)
        raise LayoutError(f"model {model} has several outputs of {CLASSES} values ({names})")
    return floats[0][0], floats[0][1]


def layout_of(
    model: str,
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    signature: str = "",
) -> TensorLayout:
    """The layout for tensors given as (name, V2 datatype, dims)."""
    if len(inputs) != 1:
        names = ", ".join(i[0] for i in inputs) or "none"
        raise LayoutError(
            f"model {model} takes {len(inputs)} inputs ({names}); the load test sends one "
            "MNIST digit as one tensor"
        )
    name, datatype, dims = inputs[0]
    if datatype not in DTYPES:
        raise LayoutError(
            f"model {model} wants input {name} as {datatype}; the load test sends a digit as "
            f"{', '.join(DTYPES)}"
        )
    shape, batched = digit_shape(model, name, dims)
    output, output_datatype = pick_output(model, outputs)
    return TensorLayout(model, name, shape, datatype, output, output_datatype, batched, signature)


def from_v2(model: str, metadata: Any) -> TensorLayout:
    """The layout from KServe V2 model metadata (the REST JSON, or the gRPC answer as a dict)."""
    try:
        tensors = {
            key: [
                (str(t["name"]), str(t["datatype"]), _dims(t["shape"], f"model {model} {key}"))
                for t in metadata[key]
            ]
            for key in ("inputs", "outputs")
        }
    except (KeyError, TypeError) as err:
        raise LayoutError(f"model {model}'s V2 metadata has no inputs/outputs: {err!r}") from err
    return layout_of(model, tensors["inputs"], tensors["outputs"])


def _tf_tensors(model: str, tensors: Any) -> list[tuple[str, str, list[int]]]:
    out = []
    for name, info in tensors.items():
        shape = info.get("tensor_shape") or {}
        if shape.get("unknown_rank"):
            raise LayoutError(f"model {model}'s tensor {name} has an unknown rank")
        dims = _dims([d.get("size", -1) for d in shape.get("dim", [])], f"model {model} {name}")
        dtype = str(info.get("dtype"))
        out.append((str(name), TF_DTYPES.get(dtype, dtype), dims))
    return out


def from_tfserving(model: str, metadata: Any) -> TensorLayout:
    """The layout from TF Serving's model metadata (``serving_default``, or the only signature
    with inputs)."""
    try:
        signatures = metadata["metadata"]["signature_def"]["signature_def"]
        usable = {k: v for k, v in signatures.items() if v.get("inputs")}
    except (KeyError, TypeError, AttributeError) as err:
        raise LayoutError(f"model {model}'s TF Serving metadata has no signature_def") from err
    if TF_SIGNATURE in usable:
        name = TF_SIGNATURE
    elif len(usable) == 1:
        (name,) = usable
    else:
        raise LayoutError(
            f"model {model} has no {TF_SIGNATURE} signature and several others "
            f"({', '.join(usable) or 'none'}): the load test cannot tell which to call"
        )
    try:
        inputs = _tf_tensors(model, usable[name]["inputs"])
        outputs = _tf_tensors(model, usable[name].get("outputs") or {})
    except AttributeError as err:
        raise LayoutError(f"model {model}'s signature {name} is malformed: {err}") from err
    return layout_of(model, inputs, outputs, "" if name == TF_SIGNATURE else name)


def fetch_layout(protocol: str, url: str, grpc_url: str | None, model: str) -> TensorLayout:
    """Read ``model``'s metadata through ``protocol`` (tfserving, kserve-http, kserve-grpc) and
    make its layout; LayoutError saying what failed."""
    import httpx

    try:
        if protocol == "kserve-grpc":
            return from_v2(model, _grpc_metadata(grpc_url or "", model))
        path = f"/v1/models/{model}/metadata" if protocol == "tfserving" else f"/v2/models/{model}"
        answer = httpx.get(f"{url}{path}", timeout=10)
        if answer.status_code != 200:
            raise LayoutError(
                f"model {model}'s metadata ({path}) answered HTTP {answer.status_code}: "
                f"{answer.text[:300]}"
            )
        parse = from_tfserving if protocol == "tfserving" else from_v2
        return parse(model, answer.json())
    except LayoutError:
        raise
    except Exception as err:  # unreachable, not JSON, a gRPC error: all say the same
        raise LayoutError(
            f"cannot read model {model}'s metadata over {protocol}: {type(err).__name__}: {err}"
        ) from err


def _grpc_metadata(target: str, model: str) -> dict[str, Any]:
    """The gRPC ModelMetadata answer as the REST JSON's dict."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            answer = stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10)
        except grpc.RpcError as err:
            raise LayoutError(
                f"model {model}'s metadata over gRPC: {err.code().name}: {err.details()}"
            ) from err

    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {"inputs": tensors(answer.inputs), "outputs": tensors(answer.outputs)}
