"""End to end: a real ``mnist-serve serve`` on 127.0.0.1 serving small real SavedModels."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from modelrepo.contract import INPUT_NAME, PIXELS, SIDE
from tests.conftest import QuickModels
from tests.helpers import Server, png_bytes, run_server
from training.data import Mnist, to_model_input

ZEROS = [0.0] * PIXELS  # a blank digit, flat
BLANK = {INPUT_NAME: ZEROS}  # a request with one blank digit
RAGGED = [[0.0] * SIDE] * (SIDE - 1) + [[0.0] * 3]

pytestmark = pytest.mark.slow


def predict_json(server: Server, variant: str, payload: object) -> httpx.Response:
    return httpx.post(f"{server.url}/predict/{variant}", json=payload, timeout=30)


def test_readyz_is_503_until_models_are_warm(models_dir: Path, tmp_path: Path) -> None:
    with run_server(models_dir, tmp_path / "log", "--max-batch-size", "64") as server:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        early = httpx.post(f"{server.url}/predict/original", json={INPUT_NAME: [0.0] * PIXELS})
        early_ready = httpx.get(f"{server.url}/readyz")
        statuses = server.wait_ready()
        after = predict_json(server, "original", {INPUT_NAME: [0.0] * PIXELS})
    # Loading two SavedModels and warming 64 batch sizes takes seconds; the port opens at once:
    # a predict sent as soon as it does finds its model still loading.
    assert early.status_code == 503 and early.headers["retry-after"] == "2", early.text
    assert early.json()["error"] == "unavailable" and "still loading" in early.json()["detail"]
    assert early_ready.status_code == 503 and early_ready.json()["status"] == "loading"
    assert statuses[0] == 503 and statuses[-1] == 200
    assert after.status_code == 200


@pytest.mark.parametrize("variant", ["original", "depthwise"])
def test_predictions_equal_the_models_own_output(
    server: Server, trained: QuickModels, mnist: Mnist, variant: str
) -> None:
    pixels = to_model_input(mnist.x_test[:8])
    expected = np.asarray(trained.results[variant].model(pixels, training=False))
    response = predict_json(server, variant, {"images": pixels[..., 0].tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["variant"] == variant and body["version"] == 1
    got = np.array([p["probabilities"] for p in body["predictions"]])
    assert np.abs(got - expected).max() < 1e-5
    assert [p["digit"] for p in body["predictions"]] == expected.argmax(axis=1).tolist()
    timing = response.headers["server-timing"]
    assert re.fullmatch(r"queue;dur=[\d.]+, model;dur=[\d.]+, app;dur=[\d.]+", timing)


def test_flat_and_nested_json_agree(server: Server, mnist: Mnist) -> None:
    image = (mnist.x_test[0] / 255.0).astype(np.float32)
    nested = predict_json(server, "depthwise", {INPUT_NAME: image.tolist()}).json()
    flat = predict_json(server, "depthwise", {INPUT_NAME: image.ravel().tolist()}).json()
    assert nested["predictions"] == flat["predictions"]


def test_uploaded_mnist_pngs_classify_like_their_arrays(server: Server, mnist: Mnist) -> None:
    digits = mnist.x_test[:16]  # the fixture server takes 16 images per request
    arrays = predict_json(server, "original", {"images": (digits / 255.0).tolist()}).json()
    expected = [p["digit"] for p in arrays["predictions"]]
    got = []
    for i, digit in enumerate(digits):
        png = png_bytes(digit)
        if i % 2:  # alternate the two upload styles: multipart form and raw body
            response = httpx.post(
                f"{server.url}/predict/original", files={"file": ("d.png", png, "image/png")}
            )
        else:
            response = httpx.post(
                f"{server.url}/predict/original", content=png, headers={"content-type": "image/png"}
            )
        assert response.status_code == 200, response.text
        got.append(response.json()["predictions"][0]["digit"])
    assert got == expected


def test_photo_of_paper_digit_as_jpeg(server: Server, mnist: Mnist) -> None:
    digit = mnist.x_test[0]  # a 7
    paper = Image.new("L", (400, 300), 230)
    paper.paste(Image.fromarray(255 - digit).resize((168, 168)), (120, 60))
    buffer = io.BytesIO()
    paper.convert("RGB").save(buffer, format="JPEG", quality=85)
    response = httpx.post(
        f"{server.url}/predict/depthwise",
        content=buffer.getvalue(),
        headers={"content-type": "image/jpeg"},
    )
    assert response.status_code == 200
    assert response.json()["predictions"][0]["digit"] == int(mnist.y_test[0])


def raw(body: bytes | str, content_type: str | None) -> dict[str, object]:
    """Request arguments for a raw body ("TRUNCATED" and "BLANK" are made in the test)."""
    return {"content": body, "headers": {"content-type": content_type} if content_type else {}}


def json_of(image: object) -> dict[str, object]:
    return {"json": {INPUT_NAME: image}}


NAN_JSON = b'{"image": [' + b",".join([b"NaN"] * PIXELS) + b"]}"
INF_JSON = b'{"image": [' + b",".join([b"Infinity"] * PIXELS) + b"]}"
OVERFLOW_JSON = b'{"image": [' + b",".join([b"1e999"] * PIXELS) + b"]}"
JSON, PNG = "application/json", "image/png"
BAD_INPUTS = [
    ("unknown variant", "nope", json_of([0.0] * PIXELS), 404, "unknown_model"),
    ("dot-dot path", "..%2F..%2Fetc", json_of([0.0] * PIXELS), 404, None),
    ("malformed JSON", "original", raw(b'{"image": [1,', JSON), 400, "bad_request"),
    ("neither key", "original", {"json": {"pixels": []}}, 422, "invalid_input"),
    ("wrong shape", "original", json_of([0.5] * 100), 422, "invalid_input"),
    (
        "ragged rows",
        "original",
        json_of(RAGGED),
        422,
        "invalid_input",
    ),
    ("NaN literal (not JSON)", "original", raw(NAN_JSON, JSON), 400, "bad_request"),
    ("Infinity literal (not JSON)", "original", raw(INF_JSON, JSON), 400, "bad_request"),
    ("overflow to infinity", "original", raw(OVERFLOW_JSON, JSON), 400, "bad_request"),
    ("0-255 pixels", "original", json_of([255.0] * PIXELS), 422, "invalid_input"),
    ("strings", "original", json_of(["a"] * PIXELS), 422, "invalid_input"),
    (
        "too many images",
        "original",
        {"json": {"images": [ZEROS] * 17}},
        422,
        "invalid_input",
    ),
    ("empty image list", "original", {"json": {"images": []}}, 422, "invalid_input"),
    ("empty image body", "original", raw(b"", PNG), 400, "bad_request"),
    ("not an image", "original", raw(b"GIF89a nonsense", PNG), 400, "bad_request"),
    ("truncated PNG", "original", raw("TRUNCATED", PNG), 400, "bad_request"),
    ("blank image", "original", raw("BLANK", PNG), 422, "invalid_input"),
    ("form without file", "original", {"files": {"other": ("a.png", b"x")}}, 422, "invalid_input"),
    ("wrong content type", "original", raw(b"1,2,3", "text/csv"), 415, "unsupported_media_type"),
    ("no content type", "original", raw(b"1,2,3", None), 415, "unsupported_media_type"),
    ("body over the limit", "original", raw(b"0" * (5 << 20), JSON), 413, "payload_too_large"),
]


@pytest.mark.parametrize(
    ("what", "variant", "request_args", "status", "code"),
    BAD_INPUTS,
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_4xx_and_server_keeps_serving(
    server: Server,
    mnist: Mnist,
    what: str,
    variant: str,
    request_args: dict[str, object],
    status: int,
    code: str | None,
) -> None:
    args = dict(request_args)
    noise = np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)
    if args.get("content") == "TRUNCATED":
        args["content"] = png_bytes(noise)[:5000]
    elif args.get("content") == "BLANK":
        args["content"] = png_bytes(np.full((40, 40), 255, np.uint8))
    response = httpx.post(f"{server.url}/predict/{variant}", timeout=30, **args)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    if code is not None:
        body = response.json()
        assert body["error"] == code and body["detail"]
    if code == "unknown_model":
        known = response.json()["known"]
        assert {"depthwise", "original", "depthwise@onnx", "original@litert"} <= set(known)
    good = predict_json(server, "original", {INPUT_NAME: (mnist.x_test[0] / 255.0).tolist()})
    assert good.status_code == 200


def test_variants_report_training_figures_and_device(server: Server) -> None:
    listed = httpx.get(f"{server.url}/variants").json()
    assert [v["name"] for v in listed] == ["depthwise", "original"]
    original = httpx.get(f"{server.url}/variants/original").json()
    assert original["parameters"] == 1_199_882 and original["device"].startswith("/CPU")
    assert original["ready"] is True and 0.9 < original["test_accuracy"] <= 1
    assert httpx.get(f"{server.url}/variants/nope").status_code == 404


def test_concurrent_requests_are_batched(server: Server, mnist: Mnist) -> None:
    image = {INPUT_NAME: (mnist.x_test[1] / 255.0).tolist()}

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *[client.post("/predict/depthwise", json=image) for _ in range(64)]
            )

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    assert max(r.json()["timing"]["batch_images"] for r in responses) > 1
    assert {r.json()["predictions"][0]["digit"] for r in responses} == {int(mnist.y_test[1])}


def requests_counted(metrics: str, variant: str, status: str) -> float:
    """mnist_serve_requests_total of ``variant`` (SavedModel) with ``status``, in ``metrics``."""
    pattern = (
        rf'mnist_serve_requests_total{{runtime="savedmodel",status="{status}",'
        rf'variant="{variant}"}} ([\d.e+]+)'
    )
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_what_was_sent(server: Server) -> None:
    def count(text: str, status: str) -> float:
        return requests_counted(text, "depthwise", status)

    before = httpx.get(f"{server.url}/metrics").text
    for _ in range(3):
        predict_json(server, "depthwise", {INPUT_NAME: [0.0] * PIXELS})
    predict_json(server, "depthwise", {INPUT_NAME: [2.0] * PIXELS})
    after = httpx.get(f"{server.url}/metrics").text
    assert count(after, "200") - count(before, "200") == 3
    assert count(after, "422") - count(before, "422") == 1
    assert "mnist_serve_model_seconds_bucket" in after and 'le="0.0001"' in after
    assert "mnist_serve_batch_size_bucket" in after and "mnist_serve_in_flight" in after


def test_openapi_examples_work_when_pasted(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    body = spec["paths"]["/predict/{variant}"]["post"]["requestBody"]["content"]
    examples = body["application/json"]["examples"]
    assert examples
    for example in examples.values():
        response = predict_json(server, "depthwise", example["value"])
        assert response.status_code == 200, response.text
    assert {"multipart/form-data", "image/png", "image/jpeg"} <= body.keys()


def test_full_queue_answers_503_with_retry_after(models_dir: Path, tmp_path: Path) -> None:
    """With a one-request queue, a burst of 64 overflows it: some are served, the rest get 503
    "overloaded" with Retry-After at once, the metrics count exactly that, and the server
    recovers."""
    image = {INPUT_NAME: [0.0] * PIXELS}
    with run_server(models_dir, tmp_path / "log", "--max-queue", "1", "--no-batching") as server:
        server.wait_ready()

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                calls = [client.post("/predict/original", json=image) for _ in range(64)]
                return await asyncio.gather(*calls)

        responses = asyncio.run(burst())
        metrics = httpx.get(f"{server.url}/metrics").text
        after = predict_json(server, "original", image)
    served = [r for r in responses if r.status_code == 200]
    rejected = [r for r in responses if r.status_code == 503]
    assert served and rejected and len(served) + len(rejected) == 64, [
        r.status_code for r in responses
    ]
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    assert {r.json()["error"] for r in rejected} == {"overloaded"}
    assert {r.json()["predictions"][0]["digit"] for r in served} == {
        served[0].json()["predictions"][0]["digit"]
    }
    assert requests_counted(metrics, "original", "200") == len(served)
    assert requests_counted(metrics, "original", "503") == len(rejected)
    assert 'mnist_serve_shed_total{reason="in_flight"} 0.0' in metrics  # 128 is the default limit
    assert after.status_code == 200
