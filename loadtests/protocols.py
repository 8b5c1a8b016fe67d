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
from enum import StrEnum
from typing import assert_never

import numpy as np

from modelrepo.contract import CLASSES, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME


class Protocol(StrEnum):
    """A protocol the load test speaks; its value is the command line's name for it."""

    NATIVE = "native"
    TFSERVING = "tfserving"
    KSERVE_HTTP = "kserve-http"
    KSERVE_GRPC = "kserve-grpc"

    @property
    def over_http(self) -> bool:
        """Whether Locust's HTTP user speaks it (kserve-grpc has a user class of its own)."""
        return self is not Protocol.KSERVE_GRPC


PROTOCOLS = tuple(Protocol)
HTTP_PROTOCOLS = tuple(p for p in Protocol if p.over_http)
HEADER_LENGTH = "Inference-Header-Content-Length"


class AnswerError(ValueError):
    """A response that is not a well-formed answer for one image."""


@dataclass(frozen=True)
class Encoded:
    """One request, ready to send: path, body and headers (gRPC uses ``body`` as raw bytes)."""

    path: str
    body: bytes
    headers: dict[str, str]


def encode(protocol: Protocol, mode: str, model: str, digit: np.ndarray) -> Encoded:
    """The request for one uint8 28x28 ``digit`` to ``model`` in ``protocol``."""
    pixels = (digit / 255.0).astype(np.float32)
    if protocol == Protocol.NATIVE:
        if mode == "png":
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(digit).save(buffer, format="PNG")
            return Encoded(f"/predict/{model}", buffer.getvalue(), {"content-type": "image/png"})
        body = json.dumps({INPUT_NAME: np.round(pixels, 4).tolist()}).encode()
        return Encoded(f"/predict/{model}", body, {"content-type": "application/json"})
    if mode != "json":
        raise ValueError(f"{protocol} sends tensors: --mode png is for the native protocol only")
    raw = pixels.reshape(1, *INPUT_SHAPE).astype("<f4").tobytes()
    match protocol:
        case Protocol.TFSERVING:
            instance = np.round(pixels, 4)[..., np.newaxis].tolist()
            body = json.dumps({"instances": [instance]}).encode()
            path = f"/v1/models/{model}:predict"
            return Encoded(path, body, {"content-type": "application/json"})
        case Protocol.KSERVE_GRPC:
            return Encoded(model, raw, {})
        case Protocol.KSERVE_HTTP:
            tensor = {
                "name": INPUT_NAME,
                "shape": [1, *INPUT_SHAPE],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
            output = {"name": OUTPUT_NAME, "parameters": {"binary_data": True}}
            header = json.dumps({"inputs": [tensor], "outputs": [output]}).encode()
            headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
            return Encoded(f"/v2/models/{model}/infer", header + raw, headers)
        case _:
            assert_never(protocol)


def decode(protocol: Protocol, body: bytes, header_length: str | None = None) -> np.ndarray:
    """The 10 probabilities of one image from an HTTP answer's body; AnswerError if malformed."""
    try:
        match protocol:
            case Protocol.KSERVE_HTTP:
                split = int(header_length) if header_length else len(body)
                answer = json.loads(body[:split])
                output = answer["outputs"][0]
                if (output.get("parameters") or {}).get("binary_data_size"):
                    row = np.frombuffer(body[split:], dtype="<f4")
                else:
                    row = np.asarray(output["data"], dtype=np.float32)
            case Protocol.NATIVE:
                answer = json.loads(body)
                row = np.asarray(answer["predictions"][0]["probabilities"], dtype=np.float32)
            case Protocol.TFSERVING:
                row = np.asarray(json.loads(body)["predictions"][0], dtype=np.float32)
            case Protocol.KSERVE_GRPC:
                raise AnswerError("kserve-grpc answers are read by the gRPC client, not here")
            case _:
                assert_never(protocol)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise AnswerError(f"malformed {protocol} answer: {err}") from err
    if row.shape != (CLASSES,):
        raise AnswerError(f"{protocol} answer holds {row.size} values, not {CLASSES}")
    return row
