"""The standard protocols against a real server, spoken by real clients.

KServe V2 / Open Inference Protocol: the official clients, ``tritonclient.http`` (JSON and the
binary tensor extension) and ``tritonclient.grpc``. TF Serving's REST API: plain HTTP requests
shaped like its documented examples. Every answer must equal ``/predict``'s.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    SIGNATURE,
)
from service.server import uvicorn_config
from service.settings import Settings
from tests.helpers import Server, run_server
from training.data import Mnist, to_model_input

pytestmark = pytest.mark.slow

MODELS = ["depthwise", "original@onnx", "depthwise@litert"]
TOLERANCE = 1e-6  # the same model on the same runtime: the same numbers, bar JSON rounding


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server with its gRPC endpoint on."""
    log = tmp_path_factory.mktemp("protocols") / "server.log"
    with run_server(models_dir, log, grpc=True) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def digits(mnist: Mnist) -> tuple[np.ndarray, np.ndarray]:
    """Four real test digits as model input, and their labels."""
    return to_model_input(mnist.x_test[10:14]), mnist.y_test[10:14]


def native(server: Server, model: str, images: np.ndarray) -> np.ndarray:
    """What ``/predict`` answers for ``images``."""
    response = httpx.post(
        f"{server.url}/predict/{model}", json={"images": images[..., 0].tolist()}, timeout=30
    )
    assert response.status_code == 200, response.text
    return np.array([p["probabilities"] for p in response.json()["predictions"]])


# ---- TF Serving REST ---------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("form", ["instances", "named instances", "inputs", "named inputs"])
def test_tfserving_predict_equals_native(
    server: Server, digits: tuple[np.ndarray, np.ndarray], model: str, form: str
) -> None:
    images, _ = digits
    rows = images.tolist()  # [N, 28, 28, 1], as TF Serving takes a [None, 28, 28, 1] input
    body = {
        "instances": {"instances": rows},
        "named instances": {
            "signature_name": "serving_default",
            "instances": [{INPUT_NAME: r} for r in rows],
        },
        "inputs": {"inputs": rows},
        "named inputs": {"inputs": {INPUT_NAME: rows}},
    }[form]
    response = httpx.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    key = "predictions" if "instances" in form else "outputs"
    got = np.array(response.json()[key])
    assert got.shape == (len(images), CLASSES)
    assert np.abs(got - native(server, model, images)).max() < TOLERANCE


def test_tfserving_version_pinning_status_and_metadata(
    server: Server, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = {"instances": digits[0][:1].tolist()}
    pinned = httpx.post(f"{server.url}/v1/models/depthwise/versions/1:predict", json=rows)
    missing = httpx.post(f"{server.url}/v1/models/depthwise/versions/7:predict", json=rows)
    status = httpx.get(f"{server.url}/v1/models/depthwise@onnx").json()
    status_v1 = httpx.get(f"{server.url}/v1/models/depthwise/versions/1")
    metadata = httpx.get(f"{server.url}/v1/models/depthwise/metadata").json()
    assert pinned.status_code == 200 and len(pinned.json()["predictions"]) == 1
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    assert status["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    assert status_v1.status_code == 200
    signature = metadata["metadata"]["signature_def"]["signature_def"][SIGNATURE]
    assert metadata["model_spec"]["version"] == "1"
    assert [d["size"] for d in signature["inputs"][INPUT_NAME]["tensor_shape"]["dim"]] == [
        str(n) for n in (-1, *INPUT_SHAPE)
    ]
    assert signature["outputs"][OUTPUT_NAME]["dtype"] == "DT_FLOAT"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/models/nope:predict", {"instances": [[0.0] * PIXELS]}, 404),
        ("/v1/models/depthwise:predict", {"signature_name": "other", "instances": [[0.0] * PIXELS]},
         400),
        ("/v1/models/depthwise:predict", {"instances": [[0.0] * (PIXELS - 1)]}, 400),
        ("/v1/models/depthwise:predict", {"instances": [[2.0] * PIXELS]}, 400),
        ("/v1/models/depthwise:predict", {"instances": [], "inputs": []}, 400),
        ("/v1/models/depthwise:predict", {"instances": [{"pixels": [0.0] * PIXELS}]}, 400),
        ("/v1/models/depthwise:predict", "not json", 400),
    ],
)  # fmt: skip
def test_tfserving_errors_are_its_error_body(
    server: Server, path: str, body: object, status: int
) -> None:
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    response = httpx.post(f"{server.url}{path}", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and response.json()["error"]


# ---- KServe V2 over REST, with Triton's official HTTP client -----------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_kserve_http_client_infers_like_native(
    server: Server, digits: tuple[np.ndarray, np.ndarray], model: str, binary: bool
) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    images, _ = digits
    tensor = httpclient.InferInput(INPUT_NAME, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary)
    wanted = httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=binary)
    result = client.infer(model, [tensor], outputs=[wanted], request_id="r1")
    got = result.as_numpy(OUTPUT_NAME)
    assert got is not None and got.shape == (len(images), CLASSES)
    assert np.abs(got - native(server, model, images)).max() < TOLERANCE
    assert result.get_response()["id"] == "r1"
    client.close()


def test_kserve_http_health_and_metadata(server: Server) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("depthwise@onnx") and client.is_model_ready("depthwise", "1")
    assert not client.is_model_ready("depthwise", "2")
    meta = client.get_model_metadata("original@openvino")
    assert meta["versions"] == ["1"] and meta["platform"] == "openvino"
    assert meta["inputs"] == [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]}]
    assert meta["outputs"] == [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, CLASSES]}]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    client.close()


def test_kserve_binary_body_is_smaller_than_json(
    server: Server, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """The binary extension's body for a real digit is ~0.56x the JSON one (MNIST is mostly
    zeros, which JSON writes in 4 bytes too); its real saving is parsing time (benchmarked)."""
    image = digits[0][:1]
    header = b'{"inputs":[{"name":"image","shape":[1,28,28,1],"datatype":"FP32",' + (
        b'"parameters":{"binary_data_size":3136}}]}'
    )
    binary = header + image.astype("<f4").tobytes()
    as_json = httpx.Request(
        "POST",
        "/",
        json={
            "inputs": [
                {
                    "name": INPUT_NAME,
                    "shape": [1, *INPUT_SHAPE],
                    "datatype": "FP32",
                    "data": image.ravel().tolist(),
                }
            ]
        },
    ).content
    url = f"{server.url}/v2/models/depthwise/infer"
    answered = httpx.post(
        url, content=binary, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert answered.status_code == 200, answered.text
    assert len(binary) < 0.7 * len(as_json)
    # The same digit, the same answer: the smaller body carries the whole tensor.
    from_json = httpx.post(url, content=as_json, headers={"Content-Type": "application/json"})
    assert from_json.status_code == 200, from_json.text
    got, expected = (r.json()["outputs"][0]["data"] for r in (answered, from_json))
    assert np.allclose(got, expected, atol=1e-6), (got, expected)


def tensor(name: str, shape: list[int], datatype: str, values: int) -> dict[str, Any]:
    """A KServe v2 JSON input tensor of ``values`` zeros."""
    return {"name": name, "shape": shape, "datatype": datatype, "data": [0] * values}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"inputs": [tensor(INPUT_NAME, [1, PIXELS], "INT8", PIXELS)]}, 400),
        ({"inputs": [tensor("pixels", [1, PIXELS], "FP32", PIXELS)]}, 400),
        ({"inputs": [tensor(INPUT_NAME, [1, PIXELS - 1], "FP32", PIXELS - 1)]}, 400),
        ({"inputs": [tensor(INPUT_NAME, [2, PIXELS], "FP32", PIXELS)]}, 400),
        ({"inputs": [tensor(INPUT_NAME, [1, -SIDE, -SIDE], "FP32", PIXELS)]}, 400),
        ({"inputs": []}, 400),
    ],
)  # fmt: skip
def test_kserve_http_errors_are_clear(server: Server, body: object, status: int) -> None:
    response = httpx.post(f"{server.url}/v2/models/depthwise/infer", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and response.json()["error"]
    assert httpx.post(f"{server.url}/v2/models/nope/infer", json=body).status_code == 404


@pytest.mark.parametrize(
    "parameters",
    [{"binary_data_size": "3136"}, {"binary_data_size": [3136]}, {"binary_data_size": 3136.0},
     {"binary_data_size": -1}, {"binary_data_size": 3135}, [3136], "binary"],
)  # fmt: skip
def test_kserve_binary_header_errors_are_clear(server: Server, parameters: object) -> None:
    """A malformed binary description is the client's error (400), never the server's."""
    header = json.dumps(
        {"inputs": [{"name": INPUT_NAME, "shape": [1, PIXELS], "datatype": "FP32",
                     "parameters": parameters}]}
    ).encode()  # fmt: skip
    response = httpx.post(
        f"{server.url}/v2/models/depthwise/infer",
        content=header + bytes(4 * PIXELS),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "binary_data_size" in response.json()["error"] or "parameters" in response.text


# ---- KServe V2 over gRPC, with Triton's official gRPC client -----------------------------


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


def raw_exchange(port: int, request: bytes) -> tuple[bytes, dict[bytes, bytes], Any]:
    """One request on a fresh connection: status line, headers (but ``date`` and
    ``server-timing``) and the body (JSON without its ``timing``, or bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # every request here closes its connection
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    headers.pop(b"date")
    headers.pop(b"server-timing", None)
    headers.pop(b"content-length")  # the timings' digits vary
    try:
        parsed = json.loads(body)
    except ValueError:
        return status, headers, body
    if isinstance(parsed, dict):
        parsed.pop("timing", None)
    return status, headers, parsed


def port_of(server: Server) -> int:
    port = urlsplit(server.url).port
    assert port is not None
    return port


def test_inference_answers_are_the_same_through_asgi(
    server: Server, models_dir: Path, tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """The protocol answers inference requests itself (``--http-impl lean``, the module's
    server); ``--http-impl asgi`` sends them through uvicorn's ASGI cycle. Every protocol's
    answers, right and wrong, are the same both ways, bar timings and lengths."""
    for impl, wired in (("lean", True), ("asgi", False)):  # what each server's protocol has
        settings = Settings(models_dir=models_dir, http_impl=impl)
        assert (uvicorn_config(settings, None).http.hot is not None) is wired  # type: ignore[union-attr]
    image = digits[0][0].reshape(SIDE, SIDE)
    predict = json.dumps({INPUT_NAME: image.tolist()}).encode()
    tf_body = json.dumps({"instances": [image.tolist()]}).encode()
    v2_body = json.dumps(
        {"inputs": [tensor(INPUT_NAME, [1, *INPUT_SHAPE], "FP32", PIXELS)]}
    ).encode()
    requests = [
        ("/predict/depthwise@onnx", predict),
        ("/predict/depthwise@onnx?runtime=onnx", predict),
        ("/predict/depthwise@onnx", b"{not json"),
        ("/predict/nope", predict),
        ("/v1/models/depthwise@onnx:predict", tf_body),
        ("/v1/models/depthwise@onnx/versions/1:predict", tf_body),
        ("/v1/models/depthwise@onnx:predict", b'{"instances": 3}'),
        ("/v2/models/depthwise@onnx/infer", v2_body),
        ("/v2/models/depthwise@onnx/versions/1/infer", v2_body),
        ("/v2/models/depthwise@onnx/infer", b'{"inputs": []}'),
    ]
    # The same models as the module's server, so that a 404 lists the same ones.
    with run_server(models_dir, tmp_path / "server.log", "--http-impl", "asgi") as asgi:
        asgi.wait_ready()
        for path, body in requests:
            request = (
                b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
            ) % (path.encode(), len(body), body)
            lean_answer = raw_exchange(port_of(server), request)
            assert lean_answer == raw_exchange(port_of(asgi), request), path
            assert lean_answer[1][b"connection"] == b"close"


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


@pytest.mark.parametrize(
    "path", ["/v1/models/depthwise/versions/x:predict", "/v2/models/depthwise/versions/x/infer"]
)
def test_a_version_that_is_not_a_number_is_404_saying_so(server: Server, path: str) -> None:
    response = httpx.post(f"{server.url}{path}", json={}, timeout=30)
    assert response.status_code == 404, response.text
    assert "not a number" in response.text and "-1" not in response.text, response.text
