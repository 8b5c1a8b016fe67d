"""An independent KServe V2 server for the tests: one model, REST and gRPC, Triton-like.

Written apart from the ``service`` package on purpose (nothing of it is imported), so the load
test is tried against a server that shares none of our code and none of our tensor names: its
model takes ``input__0`` ``[-1, 784]`` FP32 (a common Triton shape) and answers ``output__0``
``[-1, 10]`` FP32, a linear layer and softmax over the 784 pixels (weights given, e.g. fitted to
MNIST by least squares, so its answers are real digits). Like Triton it answers V2 metadata,
ready and infer, 400 with ``{"error": ...}`` for a tensor of the wrong name, datatype or shape
(INVALID_ARGUMENT over gRPC), and 400 for paths it does not know. ``refuse`` makes every infer
fail that way (a server the load test cannot get one answer from); ``declared`` makes the
metadata declare another input shape than the one checked (a model no digit fits).

REST: the standard library's threading HTTP server; gRPC: grpcio with the V2 protobufs as the
``tritonclient`` package ships them. Both on 127.0.0.1, in threads, started by :meth:`V2Peer.start`.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?(/ready|/infer)?$")


class PeerError(Exception):
    """A request the model refuses (400 / INVALID_ARGUMENT)."""


@dataclass
class LinearModel:
    """``softmax(x @ weights + bias)`` over flat pixels, with the tensors it declares."""

    weights: np.ndarray  # (784, 10)
    bias: np.ndarray  # (10,)
    name: str = "mnist_linear"
    input: str = "input__0"
    output: str = "output__0"
    shape: list[int] = field(default_factory=lambda: [-1, 784])
    declared: list[int] | None = None  # what the metadata says, if not ``shape``
    refuse: str = ""  # when set, every infer is refused with this message

    def metadata(self) -> dict[str, Any]:
        """V2 model metadata."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "numpy_linear",
            "inputs": [
                {"name": self.input, "datatype": "FP32", "shape": self.declared or self.shape}
            ],
            "outputs": [{"name": self.output, "datatype": "FP32", "shape": [-1, 10]}],
        }

    def check(self, name: str, datatype: str, shape: list[int]) -> int:
        """The batch size of an input tensor, or PeerError in Triton's words."""
        if self.refuse:
            raise PeerError(self.refuse)
        if name != self.input:
            raise PeerError(f"unexpected inference input '{name}' for model '{self.name}'")
        if datatype != "FP32":
            raise PeerError(
                f"inference input '{name}' data-type is '{datatype}', but model "
                f"'{self.name}' expects 'FP32'"
            )
        fits = len(shape) == len(self.shape) and all(
            want == -1 or want == got for want, got in zip(self.shape, shape, strict=True)
        )
        if not fits or shape[0] < 1:
            raise PeerError(
                f"unexpected shape for input '{name}' for model '{self.name}'. Expected "
                f"{self.shape}, got {shape}"
            )
        return shape[0]

    def infer(self, shape: list[int], values: np.ndarray) -> np.ndarray:
        """Probabilities ``(batch, 10)`` for FP32 ``values`` of a checked ``shape``."""
        if values.size != int(np.prod(shape)):
            raise PeerError(f"input holds {values.size} values, shape {shape} needs more")
        logits = values.reshape(shape[0], -1) @ self.weights + self.bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype("<f4")

    def requested_output(self, names: list[str]) -> None:
        """PeerError unless every requested output is the model's."""
        for name in names:
            if name != self.output:
                raise PeerError(f"unexpected inference output '{name}' for model '{self.name}'")


class RestHandler(BaseHTTPRequestHandler):
    """V2 REST: health, metadata, ready, infer (JSON or binary tensors)."""

    protocol_version = "HTTP/1.1"  # keep-alive, like any real server
    model: LinearModel  # set on the subclass made per server

    def setup(self) -> None:
        """No Nagle delay between the headers and the body (40 ms per answer otherwise)."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """One answer with its length."""
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status: int, message: str) -> None:
        """Triton's error body."""
        self.send(status, json.dumps({"error": message}).encode())

    def do_GET(self) -> None:
        """Health, server metadata, model metadata and readiness."""
        if self.path in ("/v2/health/live", "/v2/health/ready"):
            return self.send(200, b"")
        if self.path == "/v2":
            return self.send(200, json.dumps({"name": "v2-peer", "version": "1"}).encode())
        match = MODEL_PATH.match(self.path)
        if not match or match.group(2) == "/infer":
            return self.error(400, "Not Found")
        if match.group(1) != self.model.name:
            return self.error(400, f"Request for unknown model: '{match.group(1)}' is not found")
        if match.group(2) == "/ready":
            return self.send(200, b"")
        return self.send(200, json.dumps(self.model.metadata()).encode())

    def do_POST(self) -> None:
        """Infer."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = MODEL_PATH.match(self.path)
        if not match or match.group(2) != "/infer":
            return self.error(400, "Not Found")
        if match.group(1) != self.model.name:
            return self.error(400, f"Request for unknown model: '{match.group(1)}' is not found")
        try:
            return self.infer(body)
        except PeerError as err:
            return self.error(400, str(err))
        except (ValueError, KeyError, TypeError, IndexError) as err:
            return self.error(400, f"failed to parse the request: {err}")

    def infer(self, body: bytes) -> None:
        """One infer request, JSON or with the binary tensor extension."""
        split = int(self.headers.get(HEADER_LENGTH) or len(body))
        request = json.loads(body[:split])
        (tensor,) = request["inputs"]
        shape = [int(d) for d in tensor["shape"]]
        self.model.check(tensor["name"], tensor["datatype"], shape)
        outputs = request.get("outputs") or []
        self.model.requested_output([o["name"] for o in outputs])
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            values = np.frombuffer(body[split : split + int(size)], dtype="<f4")
        else:
            values = np.asarray(tensor["data"], dtype=np.float32).ravel()
        result = self.model.infer(shape, values)
        binary = any((o.get("parameters") or {}).get("binary_data") for o in outputs)
        described: dict[str, Any] = {
            "name": self.model.output,
            "datatype": "FP32",
            "shape": list(result.shape),
        }
        if not binary:
            described["data"] = result.ravel().tolist()
            answer = {"model_name": self.model.name, "outputs": [described]}
            return self.send(200, json.dumps(answer).encode())
        raw = result.tobytes()
        described["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps({"model_name": self.model.name, "outputs": [described]}).encode()
        extra = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
        return self.send(200, header + raw, extra)


class GrpcPeer(pb_grpc.GRPCInferenceServiceServicer):
    """V2 gRPC: live, ready, model ready, metadata, infer; everything else UNIMPLEMENTED."""

    def __init__(self, model: LinearModel) -> None:
        self.model = model

    def _known(self, name: str, context: Any) -> None:
        if name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}'")

    def ServerLive(self, request: Any, context: Any) -> Any:
        """Live."""
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        """Ready."""
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> Any:
        """The one model is ready."""
        self._known(request.name, context)
        return pb.ModelReadyResponse(ready=True)

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        """The model's tensors."""
        self._known(request.name, context)
        meta = self.model.metadata()

        def tensors(key: str) -> list[Any]:
            return [
                pb.ModelMetadataResponse.TensorMetadata(
                    name=t["name"], datatype=t["datatype"], shape=t["shape"]
                )
                for t in meta[key]
            ]

        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=tensors("inputs"),
            outputs=tensors("outputs"),
        )

    def ModelInfer(self, request: Any, context: Any) -> Any:
        """Probabilities as raw bytes."""
        self._known(request.model_name, context)
        try:
            if len(request.inputs) != 1:
                raise PeerError(f"expected 1 input, got {len(request.inputs)}")
            tensor = request.inputs[0]
            shape = list(tensor.shape)
            self.model.check(tensor.name, tensor.datatype, shape)
            self.model.requested_output([o.name for o in request.outputs])
            if request.raw_input_contents:
                values = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
            else:
                values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
            result = self.model.infer(shape, values)
        except PeerError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        output = pb.ModelInferResponse.InferOutputTensor(
            name=self.model.output, datatype="FP32", shape=list(result.shape)
        )
        return pb.ModelInferResponse(
            model_name=self.model.name,
            model_version="1",
            outputs=[output],
            raw_output_contents=[result.tobytes()],
        )


class V2Peer:
    """The model served over REST and gRPC on free 127.0.0.1 ports, in threads."""

    def __init__(self, model: LinearModel) -> None:
        self.model = model
        handler = type("Handler", (RestHandler,), {"model": model})
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.http.daemon_threads = True
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(GrpcPeer(model), self.grpc)
        self.grpc_port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The REST base URL."""
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    @property
    def grpc_target(self) -> str:
        """The gRPC host:port."""
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> V2Peer:
        """Serve both protocols."""
        self.thread.start()
        self.grpc.start()
        return self

    def stop(self) -> None:
        """Stop both."""
        self.grpc.stop(grace=None)
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(timeout=5)


def fit_linear(images: np.ndarray, labels: np.ndarray, ridge: float = 10.0) -> LinearModel:
    """A linear model fitted to one-hot labels by ridge least squares on pixels in [0, 1]."""
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    x = np.hstack([x, np.ones((len(x), 1))])
    y = np.eye(10)[labels]
    solved = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    # Scaled so the softmax is confident where the fit is: the answers are probabilities.
    solved *= 10.0
    return LinearModel(solved[:-1].astype(np.float32), solved[-1].astype(np.float32))
