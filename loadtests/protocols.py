"""How a load-test request looks in each protocol, and how its answer is read.

Kept free of Locust (which gevent-patches the process on import) so the runner and the tests
can use it. Protocols:

* ``native``: ``POST /predict/<model>``, JSON pixels (``{"image": 28x28}``) or a PNG upload;
* ``tfserving``: TF Serving's ``POST /v1/models/<model>:predict``, ``{"instances": [28x28x1]}``;
* ``kserve-http``: KServe V2 ``POST /v2/models/<model>/infer`` with the binary tensor extension
  both ways (the cheapest way to send 784 floats);
* ``kserve-grpc``: KServe V2 ``ModelInfer`` over gRPC with ``raw_input_contents``.

The tensor protocols shape each digit as the model's metadata says (a
:class:`loadtests.shaping.TensorLayout`: input and output names, shape, datatype); the examples
above are mnist-serve's own tensors. The same digits, in the same order, are sent in every
protocol.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, assert_never

import numpy as np

from loadtests.shaping import TensorLayout
from modelrepo.contract import CLASSES, INPUT_NAME


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


def encode(
    protocol: Protocol,
    mode: str,
    model: str,
    digit: np.ndarray,
    layout: TensorLayout | None = None,
) -> Encoded:
    """The request for one uint8 28x28 ``digit`` to ``model`` in ``protocol``, its tensor shaped
    by ``layout`` (from the model's metadata; default: mnist-serve's own tensors)."""
    layout = layout or TensorLayout.ours(model)
    if protocol == Protocol.NATIVE:
        pixels = (digit / 255.0).astype(np.float32)
        if mode == "png":
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(digit).save(buffer, format="PNG")
            return Encoded(f"/predict/{model}", buffer.getvalue(), {"content-type": "image/png"})
        body = json.dumps({INPUT_NAME: np.round(pixels, 4).tolist()}).encode()
        return Encoded(f"/predict/{model}", body, {"content-type": "application/json"})
    if mode != "json":
        raise ValueError(f"{protocol} sends tensors: --mode png is for the native protocol only")
    tensor = layout.array(digit)
    match protocol:
        case Protocol.TFSERVING:
            values = tensor if tensor.dtype == np.uint8 else np.round(tensor, 4)
            # Row format (one instance: the tensor without its batch dimension) when the
            # signature is batched; columnar ("inputs": the whole tensor) otherwise.
            request: dict[str, object] = (
                {"instances": [values[0].tolist()]}
                if layout.batched
                else {"inputs": values.tolist()}
            )
            if layout.signature:
                request["signature_name"] = layout.signature
            path = f"/v1/models/{model}:predict"
            return Encoded(path, json.dumps(request).encode(), {"content-type": "application/json"})
        case Protocol.KSERVE_GRPC:
            return Encoded(model, tensor.tobytes(), {})
        case Protocol.KSERVE_HTTP:
            raw = tensor.tobytes()
            described = {
                "name": layout.input,
                "shape": list(layout.shape),
                "datatype": layout.datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
            output = {"name": layout.output, "parameters": {"binary_data": True}}
            header = json.dumps({"inputs": [described], "outputs": [output]}).encode()
            headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
            return Encoded(f"/v2/models/{model}/infer", header + raw, headers)
        case _:
            assert_never(protocol)


def decode(
    protocol: Protocol,
    body: bytes,
    header_length: str | None = None,
    layout: TensorLayout | None = None,
) -> np.ndarray:
    """The 10 probabilities of one image from an HTTP answer's body, read as ``layout`` says
    (its output's name and datatype; default: ours); AnswerError if malformed."""
    layout = layout or TensorLayout.ours("")
    try:
        match protocol:
            case Protocol.KSERVE_HTTP:
                split = int(header_length) if header_length else len(body)
                answer = json.loads(body[:split])
                outputs = answer["outputs"]
                named = [o for o in outputs if o.get("name") == layout.output]
                output = (named or outputs)[0]
                if (output.get("parameters") or {}).get("binary_data_size"):
                    row = layout.read(body[split:])
                else:
                    row = np.asarray(output["data"], dtype=np.float32)
            case Protocol.NATIVE:
                answer = json.loads(body)
                row = np.asarray(answer["predictions"][0]["probabilities"], dtype=np.float32)
            case Protocol.TFSERVING:
                answer = json.loads(body)
                found = answer["predictions"][0] if "predictions" in answer else answer["outputs"]
                if isinstance(found, dict):  # several outputs: by name
                    found = found[layout.output]
                row = np.asarray(found, dtype=np.float32)
            case Protocol.KSERVE_GRPC:
                raise AnswerError("kserve-grpc answers are read by decode_grpc, not here")
            case _:
                assert_never(protocol)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise AnswerError(f"malformed {protocol} answer: {err}") from err
    return checked(protocol, row)


def decode_grpc(answer: Any, layout: TensorLayout) -> np.ndarray:
    """The 10 probabilities from a gRPC ``ModelInferResponse``, raw or typed contents."""
    names = [o.name for o in answer.outputs]
    index = names.index(layout.output) if layout.output in names else 0
    if answer.raw_output_contents:
        row = layout.read(answer.raw_output_contents[index])
    elif answer.outputs:
        contents = answer.outputs[index].contents
        row = np.asarray(contents.fp32_contents or contents.fp64_contents, dtype=np.float32)
    else:
        raise AnswerError("kserve-grpc answer holds no output")
    return checked(Protocol.KSERVE_GRPC, row)


def checked(protocol: Protocol, row: np.ndarray) -> np.ndarray:
    """One image's scores, flat; AnswerError unless there are 10."""
    if row.size != CLASSES:
        raise AnswerError(f"{protocol} answer holds {row.size} values, not {CLASSES}")
    return row.reshape(CLASSES)


def error_message(body: bytes | str | None, limit: int = 300) -> str:
    """A server's error answer as one short line: its ``error`` field (V2, TF Serving) or text."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
    try:
        found = json.loads(text)
        if isinstance(found, dict) and isinstance(found.get("error"), str):
            text = found["error"]
    except ValueError:
        pass
    line = " ".join(text.split())
    return line[:limit] + ("..." if len(line) > limit else "")


# The status recorded for a request whose Locust task raised (a fault of the load generator,
# not an answer of the server's): no protocol uses a negative code.
GENERATOR_ERROR = -1


def status_label(protocol: Protocol, code: int) -> str:
    """A failed request's status as the report names it: ``HTTP 400``, ``gRPC UNAVAILABLE``,
    ``no answer`` (HTTP: the connection failed), ``malformed answer`` (a success status whose
    body was not 10 scores) or ``load generator error`` (its task raised)."""
    if code == GENERATOR_ERROR:
        return "load generator error"
    if protocol is Protocol.KSERVE_GRPC:
        if code == 0:
            return "malformed answer"
        import grpc

        names = {c.value[0]: c.name for c in grpc.StatusCode}
        return f"gRPC {names.get(code, code)}"
    if code == 200:
        return "malformed answer"
    return f"HTTP {code}" if code else "no answer"
