"""How a load-test request looks in each protocol, and how its answer is read.

Kept free of Locust (which gevent-patches the process on import) so the runner and the tests
can use it. Protocols:

* ``native``: ``POST /predict/<model>``, JSON pixels (``{"image": 28x28}``) or a PNG upload;
* ``tfserving``: TF Serving's ``POST /v1/models/<model>:predict``, ``{"instances": [28x28x1]}``;
* ``kserve-http``: KServe V2 ``POST /v2/models/<model>/infer`` with the binary tensor extension
  both ways (the cheapest way to send 784 floats);
* ``kserve-grpc``: KServe V2 ``ModelInfer`` over gRPC with ``raw_input_contents``.

The same digits, in the same order, are sent in every protocol.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

PROTOCOLS = ("native", "tfserving", "kserve-http", "kserve-grpc")
HTTP_PROTOCOLS = PROTOCOLS[:3]
HEADER_LENGTH = "Inference-Header-Content-Length"


class AnswerError(ValueError):
    """A response that is not a well-formed answer for one image."""


@dataclass(frozen=True)
class Encoded:
    """One request, ready to send: path, body and headers (gRPC uses ``body`` as raw bytes)."""

    path: str
    body: bytes
    headers: dict[str, str]


def encode(protocol: str, mode: str, model: str, digit: np.ndarray) -> Encoded:
    """The request for one uint8 28x28 ``digit`` to ``model`` in ``protocol``."""
    pixels = (digit / 255.0).astype(np.float32)
    if protocol == "native":
        if mode == "png":
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(digit).save(buffer, format="PNG")
            return Encoded(f"/predict/{model}", buffer.getvalue(), {"content-type": "image/png"})
        body = json.dumps({"image": np.round(pixels, 4).tolist()}).encode()
        return Encoded(f"/predict/{model}", body, {"content-type": "application/json"})
    if mode != "json":
        raise ValueError(f"{protocol} sends tensors: --mode png is for the native protocol only")
    if protocol == "tfserving":
        instance = np.round(pixels, 4)[..., np.newaxis].tolist()
        body = json.dumps({"instances": [instance]}).encode()
        return Encoded(f"/v1/models/{model}:predict", body, {"content-type": "application/json"})
    raw = pixels.reshape(1, 28, 28, 1).astype("<f4").tobytes()
    if protocol == "kserve-grpc":
        return Encoded(model, raw, {})
    if protocol == "kserve-http":
        header = json.dumps(
            {
                "inputs": [
                    {"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32",
                     "parameters": {"binary_data_size": len(raw)}}
                ],
                "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
            }
        ).encode()  # fmt: skip
        headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
        return Encoded(f"/v2/models/{model}/infer", header + raw, headers)
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def decode(protocol: str, body: bytes, header_length: str | None = None) -> np.ndarray:
    """The 10 probabilities of one image from an HTTP answer's body; AnswerError if malformed."""
    try:
        if protocol == "kserve-http":
            split = int(header_length) if header_length else len(body)
            answer = json.loads(body[:split])
            output = answer["outputs"][0]
            if (output.get("parameters") or {}).get("binary_data_size"):
                row = np.frombuffer(body[split:], dtype="<f4")
            else:
                row = np.asarray(output["data"], dtype=np.float32)
        else:
            answer = json.loads(body)
            if protocol == "native":
                row = np.asarray(answer["predictions"][0]["probabilities"], dtype=np.float32)
            else:
                row = np.asarray(answer["predictions"][0], dtype=np.float32)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise AnswerError(f"malformed {protocol} answer: {err}") from err
    if row.shape != (10,):
        raise AnswerError(f"{protocol} answer holds {row.size} values, not 10")
    return row
