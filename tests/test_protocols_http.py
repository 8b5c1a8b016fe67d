"""The standard protocols over HTTP against a real server, spoken by real clients.

KServe V2 / Open Inference Protocol over REST: the official client, ``tritonclient.http`` (JSON
and the binary tensor extension). TF Serving's REST API: plain HTTP requests shaped like its
documented examples. Every answer must equal ``/predict``'s, and every protocol's answers, right
and wrong, are the same through the lean HTTP protocol and through ASGI.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

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
from tests.protocols_helpers import MODELS, TOLERANCE, native
from tests.protocols_helpers import digits as digits
from tests.protocols_helpers import server as server

pytestmark = pytest.mark.slow


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


@pytest.mark.parametrize(
    "path", ["/v1/models/depthwise/versions/x:predict", "/v2/models/depthwise/versions/x/infer"]
)
def test_a_version_that_is_not_a_number_is_404_saying_so(server: Server, path: str) -> None:
    response = httpx.post(f"{server.url}{path}", json={}, timeout=30)
    assert response.status_code == 404, response.text
    assert "not a number" in response.text and "-1" not in response.text, response.text


# ---- The same answers through ASGI -------------------------------------------------------


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
