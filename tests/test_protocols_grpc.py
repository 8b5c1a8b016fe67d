"""KServe V2 / Open Inference Protocol over gRPC against a real server, spoken by the official
client, ``tritonclient.grpc`` (and its raw stub for messages that client would never build).
Every answer must equal ``/predict``'s; malformed tensors are INVALID_ARGUMENT saying what is
wrong; both gRPC implementations listen in every serving process and answer concurrent calls
right; a gRPC port something else holds stops the start.
"""

from __future__ import annotations

import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from loadtests.procs import free_port, serve_command
from modelrepo.contract import (
    CLASSES,
    INPUT_NAME,
    INPUT_SHAPE,
    OUTPUT_NAME,
    PIXELS,
    SIDE,
)
from service.settings import Settings
from tests.helpers import Server, run_server
from tests.protocols_helpers import MODELS, TOLERANCE, native
from tests.protocols_helpers import digits as digits
from tests.protocols_helpers import server as server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", MODELS)
def test_kserve_grpc_client_infers_like_native(
    server: Server, digits: tuple[np.ndarray, np.ndarray], model: str
) -> None:
    import tritonclient.grpc as grpcclient

    assert server.grpc_target is not None
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model)
    images, _ = digits
    tensor = grpcclient.InferInput(INPUT_NAME, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = client.infer(model, [tensor], model_version="1")
    got = result.as_numpy(OUTPUT_NAME)
    assert got is not None and got.shape == (len(images), CLASSES)
    assert np.abs(got - native(server, model, images)).max() < TOLERANCE
    meta = client.get_model_metadata(model)
    assert meta.versions == ["1"] and meta.inputs[0].name == INPUT_NAME
    client.close()


def test_kserve_grpc_errors_carry_codes(server: Server) -> None:
    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    assert server.grpc_target is not None
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    bad = grpcclient.InferInput(INPUT_NAME, [1, PIXELS - 1], "FP32")
    bad.set_data_from_numpy(np.zeros((1, PIXELS - 1), np.float32))
    with pytest.raises(InferenceServerException) as wrong_shape:
        client.infer("depthwise", [bad])
    good = grpcclient.InferInput(INPUT_NAME, [1, PIXELS], "FP32")
    good.set_data_from_numpy(np.zeros((1, PIXELS), np.float32))
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [good])
    assert wrong_shape.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert unknown.value.status() == str(grpc.StatusCode.NOT_FOUND)
    assert client.infer("depthwise", [good]).as_numpy(OUTPUT_NAME).shape == (1, CLASSES)
    client.close()


RAW = bytes(4 * PIXELS)  # one blank digit as little-endian FP32


@pytest.mark.parametrize(
    ("raw", "fp32", "message"),
    [
        ([RAW, RAW], [], "raw_input_contents holds 2 tensors"),
        ([RAW[:-4]], [], "holds 3132 bytes"),
        ([], [0.0] * (PIXELS - 1), "fp32_contents holds 783 values"),
        ([], [], "fp32_contents holds 0 values"),
        ([np.full(PIXELS, np.nan, "<f4").tobytes()], [], "finite"),
    ],
    ids=["two-raw-tensors", "raw-short", "fp32-short", "no-data", "nan"],
)
@pytest.mark.parametrize("shape", [[1, PIXELS], [1, -SIDE, -SIDE]], ids=["shape", "negative"])
def test_kserve_grpc_malformed_tensors_are_invalid_argument(
    server: Server, raw: list[bytes], fp32: list[float], message: str, shape: list[int]
) -> None:
    """Messages the Triton client would never build, sent with the raw stub: each is
    INVALID_ARGUMENT with a message saying what is wrong."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    assert server.grpc_target is not None
    tensor = pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend(fp32)
    request = pb.ModelInferRequest(model_name="depthwise", inputs=[tensor], raw_input_contents=raw)
    with (
        grpc.insecure_channel(server.grpc_target) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    if shape[1] < 0:
        message = "with N >= 1"  # dimensions below 1 are refused before the data is read
    assert message in (refused.value.details() or ""), refused.value.details()


ODD_SHAPES = [[1, 2, 392], [1, PIXELS, 1], [1, 1, SIDE, SIDE], [1, PIXELS] + [1] * 62]


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=["2x392", "784x1", "nchw", "64-dims"])
def test_kserve_shapes_of_784_values_but_not_an_image_are_refused_on_both_transports(
    server: Server, shape: list[int]
) -> None:
    """784 values in a shape the model does not take: 400 over REST and INVALID_ARGUMENT over
    gRPC, naming the shapes it does take (64 dimensions once reached NumPy's limit: INTERNAL)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    expected = f"is not [N, {SIDE}, {SIDE}, 1], [N, {SIDE}, {SIDE}] or [N, {PIXELS}]"
    body = {"inputs": [{"name": INPUT_NAME, "shape": shape, "datatype": "FP32",
                        "data": [0.0] * PIXELS}]}  # fmt: skip
    rest = httpx.post(f"{server.url}/v2/models/depthwise/infer", json=body, timeout=30)
    assert rest.status_code == 400 and expected in rest.json()["error"], rest.text
    assert server.grpc_target is not None
    tensor = pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend([0.0] * PIXELS)
    request = pb.ModelInferRequest(model_name="depthwise", inputs=[tensor])
    with (
        grpc.insecure_channel(server.grpc_target) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert expected in (refused.value.details() or ""), refused.value.details()


def grpc_calls(target: str, images: np.ndarray, clients: int) -> list[list[int]]:
    """Each of ``clients`` clients (a connection each, in threads) classifies ``images`` one
    call at a time over KServe gRPC: the digits each got."""
    import tritonclient.grpc as grpcclient

    def calls(_: int) -> list[int]:
        client = grpcclient.InferenceServerClient(url=target)
        try:
            got = []
            for image in images:
                tensor = grpcclient.InferInput(INPUT_NAME, [1, *INPUT_SHAPE], "FP32")
                tensor.set_data_from_numpy(image[None])
                probabilities = client.infer("depthwise@onnx", [tensor]).as_numpy(OUTPUT_NAME)
                assert probabilities is not None
                got.append(int(probabilities.argmax()))
            return got
        finally:
            client.close()

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(calls, range(clients)))


def grpc_listeners(server: Server) -> list[int]:
    """Per serving process, how many sockets listen on the gRPC port."""
    assert server.grpc_target is not None
    port = int(server.grpc_target.rsplit(":", 1)[1])
    pids = httpx.get(f"{server.url}/engine", timeout=10).json()["pids"]
    return [
        sum(
            1
            for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        )
        for pid in pids
    ]


def test_kserve_grpc_concurrent_calls_on_every_process(
    server: Server, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """The lean gRPC server (the default, service.grpc_http2) listens once in every serving
    process, and concurrent calls over many connections are all answered right."""
    assert Settings.model_fields["grpc_impl"].default == "lean"
    assert grpc_listeners(server) == [1] * len(grpc_listeners(server))
    images, labels = digits
    assert server.grpc_target is not None
    assert grpc_calls(server.grpc_target, images, 16) == [list(labels)] * 16


def test_grpcio_servers_accept_in_parallel(
    models_dir: Path, tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """``--grpc-impl grpcio``: every serving process listens on the gRPC port with
    ``--grpc-servers`` (8) grpc.aio servers, so calls are accepted in parallel
    (service.kserve_grpc.GrpcServers); concurrent calls are answered right, and an error
    carries its code."""
    import grpc
    import tritonclient.grpc as grpcclient

    args = ("--variants", "depthwise", "--runtimes", "onnx", "--grpc-impl", "grpcio")
    with run_server(models_dir, tmp_path / "server.log", *args, grpc=True) as running:
        running.wait_ready()
        assert running.grpc_target is not None
        default = Settings.model_fields["grpc_servers"].default
        listeners = grpc_listeners(running)
        assert listeners == [default] * len(listeners), listeners
        images, labels = digits
        assert grpc_calls(running.grpc_target, images, 8) == [list(labels)] * 8
        client = grpcclient.InferenceServerClient(url=running.grpc_target)
        tensor = grpcclient.InferInput(INPUT_NAME, [1, *INPUT_SHAPE], "FP32")
        tensor.set_data_from_numpy(images[:1])
        with pytest.raises(Exception) as unknown:
            client.infer("nope", [tensor])
        assert unknown.value.status() == str(grpc.StatusCode.NOT_FOUND)  # type: ignore[attr-defined]
        client.close()


def test_grpc_port_taken_is_an_error(models_dir: Path, tmp_path: Path) -> None:
    """The gRPC servers share their port with each other (SO_REUSEPORT), never with another
    program: a port that something else listens on, even with SO_REUSEPORT, stops the start."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        command = serve_command(
            models_dir, free_port(), "--workers", "1", "--grpc-port", str(taken),
            "--variants", "depthwise", "--runtimes", "onnx",
        )  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"gRPC cannot listen on 127.0.0.1:{taken}" in done.stdout + done.stderr
