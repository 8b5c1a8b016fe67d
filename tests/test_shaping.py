"""How the load test shapes a digit for a server that is not mnist-serve
(``loadtests.shaping``): the tensor's shape and datatype from the model's V2 or TF Serving
metadata, the output of ten values picked, a model no digit fits refused naming why. Against a
real such server: test_anyserver.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loadtests.protocols import Protocol, decode, encode
from loadtests.shaping import LayoutError, TensorLayout, from_tfserving, from_v2
from modelrepo.contract import PIXELS, SIDE

DIGIT = (np.arange(PIXELS).reshape(SIDE, SIDE) % 256).astype(np.uint8)


def v2(shape: list[int], datatype: str = "FP32", outputs: list[dict] | None = None) -> dict:
    """V2 model metadata with one input of ``shape``."""
    return {
        "name": "m",
        "inputs": [{"name": "input__0", "datatype": datatype, "shape": shape}],
        "outputs": outputs or [{"name": "output__0", "datatype": "FP32", "shape": [-1, 10]}],
    }


@pytest.mark.parametrize(
    ("declared", "sent", "batched"),
    [
        ([-1, 784], (1, 784), True),  # Triton's common flat input
        ([-1, 28, 28, 1], (1, 28, 28, 1), True),  # ours, Keras
        ([-1, 1, 28, 28], (1, 1, 28, 28), True),  # NCHW, PyTorch / ONNX
        ([-1, 28, 28], (1, 28, 28), True),
        ([784], (784,), False),  # Triton max_batch_size 0: no batch dimension
        ([28, 28], (28, 28), False),
        ([1, 784], (1, 784), False),  # a fixed batch of one
    ],
)
def test_metadata_shapes_the_tensor(declared: list[int], sent: tuple, batched: bool) -> None:
    layout = from_v2("m", v2(declared))
    assert (layout.input, layout.output, layout.datatype) == ("input__0", "output__0", "FP32")
    assert layout.shape == sent and layout.batched is batched
    tensor = layout.array(DIGIT)
    assert tensor.shape == sent and tensor.dtype == np.float32
    assert tensor.ravel() == pytest.approx(DIGIT.ravel() / 255.0)  # row-major pixels throughout


@pytest.mark.parametrize(
    ("datatype", "dtype", "scale"),
    [("UINT8", np.uint8, 1.0), ("FP64", np.float64, 255.0), ("FP16", np.float16, 255.0)],
)
def test_metadata_datatype_types_the_tensor(datatype: str, dtype: type, scale: float) -> None:
    layout = from_v2("m", v2([-1, 784], datatype))
    tensor = layout.array(DIGIT)
    assert tensor.dtype == dtype
    assert tensor.ravel().astype(float) == pytest.approx(DIGIT.ravel() / scale, abs=1e-3)
    request = encode(Protocol.KSERVE_HTTP, "json", "m", DIGIT, layout)
    header = json.loads(request.body[: int(request.headers["Inference-Header-Content-Length"])])
    assert header["inputs"][0]["datatype"] == datatype
    assert request.body.endswith(tensor.tobytes())


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        (
            v2([-1, 3, 32, 32]),
            r"model m wants input input__0 \[-1, 3, 32, 32\]; an MNIST digit is 784",
        ),
        (v2([-1, -1]), "left open"),
        (v2([-1, 784], "INT64"), "wants input input__0 as INT64"),
        (
            {
                **v2([-1, 784]),
                "inputs": [{"name": a, "datatype": "FP32", "shape": [-1, 784]} for a in "ab"],
            },
            "takes 2 inputs",
        ),
        (
            v2([-1, 784], outputs=[{"name": "o", "datatype": "FP32", "shape": [-1, 1000]}]),
            "no output of 10",
        ),
        (
            v2([-1, 784], outputs=[{"name": "o", "datatype": "INT64", "shape": [-1, 10]}]),
            "is INT64",
        ),
        ({"name": "m"}, "no inputs/outputs"),
    ],
)
def test_metadata_no_digit_fits_is_refused(metadata: dict, says: str) -> None:
    with pytest.raises(LayoutError, match=says):
        from_v2("m", metadata)


def test_the_output_of_ten_values_is_picked_by_shape() -> None:
    outputs = [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 128]},
    ]
    layout = from_v2("m", v2([-1, 784], outputs=outputs))
    assert layout.output == "logits"
    # An answer holding both outputs is read by name, in the layout's datatype.
    row = np.linspace(0, 1, 10)
    header = json.dumps(
        {
            "outputs": [
                {"name": "embedding", "data": [0.0] * 128},
                {"name": "logits", "data": row.tolist()},
            ]
        }
    ).encode()
    assert decode(Protocol.KSERVE_HTTP, header, None, layout) == pytest.approx(row)
    fp64 = TensorLayout("m", "x", (1, 784), "FP32", "y", "FP64")
    binary = json.dumps({"outputs": [{"name": "y", "parameters": {"binary_data_size": 80}}]})
    body = binary.encode() + row.astype("<f8").tobytes()
    assert decode(Protocol.KSERVE_HTTP, body, str(len(binary)), fp64) == pytest.approx(row)


def tf_metadata(signatures: dict) -> dict:
    """TF Serving's metadata answer; a signature with an empty shape has no inputs (the
    ``__saved_model_init_op`` a SavedModel carries)."""

    def tensor(dims: list[int], dtype: str = "DT_FLOAT") -> dict:
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d)} for d in dims]}}

    return {
        "metadata": {
            "signature_def": {
                "signature_def": {
                    name: {
                        "inputs": {"pixels": tensor(shape)} if shape else {},
                        "outputs": {"scores": tensor([-1, 10]), "ids": tensor([-1], "DT_INT64")},
                    }
                    for name, shape in signatures.items()
                }
            }
        }
    }


def test_tfserving_signature_shapes_the_instances() -> None:
    layout = from_tfserving("m", tf_metadata({"serving_default": [-1, 784]}))
    assert (layout.input, layout.output, layout.shape, layout.signature) == (
        "pixels",
        "scores",
        (1, 784),
        "",
    )
    body = json.loads(encode(Protocol.TFSERVING, "json", "m", DIGIT, layout).body)
    assert np.asarray(body["instances"]).shape == (1, 784) and "signature_name" not in body
    # A model with one other signature, no batch dimension: columnar "inputs", named signature.
    other = from_tfserving("m", tf_metadata({"classify": [28, 28], "__saved_model_init_op": []}))
    assert other.signature == "classify" and not other.batched
    body = json.loads(encode(Protocol.TFSERVING, "json", "m", DIGIT, other).body)
    assert np.asarray(body["inputs"]).shape == (28, 28) and body["signature_name"] == "classify"
    # Several outputs come back by name.
    answer = {"predictions": [{"scores": list(range(10)), "ids": 3}]}
    assert decode(Protocol.TFSERVING, json.dumps(answer).encode(), None, layout)[9] == 9
    with pytest.raises(LayoutError, match="cannot tell which"):
        from_tfserving("m", tf_metadata({"a": [-1, 784], "b": [-1, 784]}))
    with pytest.raises(LayoutError, match="wants input pixels"):
        from_tfserving("m", tf_metadata({"serving_default": [-1, 224, 224, 3]}))


def test_our_own_metadata_gives_our_tensors() -> None:
    """mnist-serve's V2 metadata shapes the digit exactly as before the shaping existed."""
    ours = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    }
    assert from_v2("depthwise", ours) == TensorLayout.ours("depthwise")
