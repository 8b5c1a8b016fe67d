"""A hostile client against a real server: every bad input a clear 4xx, never a 5xx, no
Python reprs or machine paths in answers, slow clients cut off, memory bounded, and the server
still serving (and back near its idle memory) at the end."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from modelrepo.contract import INPUT_NAME, PIXELS
from service.imaging import FORMATS
from tests.helpers import Server, run_server

BLANK = {INPUT_NAME: [0.0] * PIXELS}  # a request with one blank digit

pytestmark = pytest.mark.slow

LIMITS = (
    "--header-timeout-s",
    "1",
    "--body-timeout-s",
    "1",
    "--keep-alive-s",
    "2",
    "--max-header-bytes",
    "8192",
    "--max-headers",
    "50",
)
# A "1" on black, 64x64: every format and mode below must classify it.
DIGIT = np.zeros((64, 64), dtype=np.uint8)
DIGIT[10:54, 28:36] = 255
MODES = (
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "F",
    "I;16",
    "LA",
    "PA",
    "RGBX",
)
# What no answer may contain: a Python object's repr, a traceback, a path on this machine.
LEAKS = re.compile(r" at 0x[0-9a-f]+|Traceback|/(?:tmp|work|home|root|usr)/")


def rss_mb(pid: int) -> float:
    """Resident memory of a server, MB: the process and its children (the workers and the
    model executor of a multi-process server)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in (process, *process.children(recursive=True))) / 2**20


@dataclass(frozen=True)
class Hostile:
    """The module's server, and its resident memory once warm, before any hostile request."""

    server: Server
    idle_rss_mb: float


@pytest.fixture(scope="module")
def hostile_run(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """A real server with short timeouts, and its memory after a few ordinary requests, before
    any test; after the module, it must still serve."""
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with run_server(models_dir, log, "--runtimes", "savedmodel", *LIMITS) as server:
        server.wait_ready()
        for _ in range(20):
            assert upload(server, encode(Image.fromarray(DIGIT), "PNG")).status_code == 200
        yield Hostile(server, rss_mb(server.process.pid))
        assert "Traceback" not in log.read_text(), "the server logged a traceback"


@pytest.fixture(scope="module")
def hostile(hostile_run: Hostile) -> Server:
    """The module's server."""
    return hostile_run.server


def encode(image: Image.Image, fmt: str) -> bytes:
    """``image`` saved in ``fmt`` (a JPEG at quality 95, as a camera or scanner saves one)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def picture(mode: str) -> Image.Image | None:
    """DIGIT in ``mode`` (None if Pillow cannot make that mode from L)."""
    if mode == "I;16":
        return Image.fromarray(DIGIT.astype(np.uint16) * 200)
    try:
        return Image.fromarray(DIGIT).convert(mode)
    except ValueError:
        return None


def upload(server: Server, data: bytes, content_type: str = "image/png") -> httpx.Response:
    """A raw picture body to the depthwise model."""
    return httpx.post(
        f"{server.url}/predict/depthwise", content=data, headers={"content-type": content_type}
    )


def assert_clean(response: httpx.Response) -> None:
    """A 4xx with a JSON error and detail, and nothing leaked."""
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["error"] and body["detail"], body
    assert not LEAKS.search(response.text), response.text


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_accepted_format_in_every_mode_classifies(hostile: Server, fmt: str) -> None:
    """Each accepted format, in each mode Pillow can save it in, gives the digit 1."""
    tried = 0
    for mode in MODES:
        image = picture(mode)
        try:
            data = encode(image, fmt) if image is not None else None
        except (OSError, ValueError, KeyError):
            data = None  # Pillow cannot write this mode in this format: no client can send it
        if data is None:
            continue
        tried += 1
        response = upload(hostile, data, f"image/{fmt.lower()}")
        assert response.status_code == 200, (mode, response.text)
        assert response.json()["predictions"][0]["digit"] == 1, (mode, response.json())
    assert tried >= 3


def test_first_frame_of_an_animated_gif(hostile: Server) -> None:
    """An animated GIF: its first frame is the picture, not the second (a bar across, which
    does not read 1: checked, so that the test can tell the frames apart)."""
    bar = DIGIT.T.copy()
    frames = [Image.fromarray(DIGIT), Image.fromarray(bar)]
    second = upload(hostile, encode(frames[1], "PNG")).json()["predictions"][0]["digit"]
    assert second != 1, "the second frame reads 1 too: the test cannot tell them apart"
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    response = upload(hostile, buffer.getvalue(), "image/gif")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["digit"] == 1, response.json()


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX"])
def test_other_formats_are_415_naming_the_accepted_ones(hostile: Server, fmt: str) -> None:
    """A picture Pillow could read but we do not accept: 415, and the list of what we do."""
    response = upload(hostile, encode(Image.fromarray(DIGIT).convert("RGB"), fmt))
    assert_clean(response)
    assert response.status_code == 415 and "PNG, JPEG, WEBP" in response.json()["detail"]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"GIF89a garbage", b"%PDF-1.4 not an image",
     b"\xff\xd8\xff\xe0" + b"\0" * 100],
    ids=["empty", "png-header-only", "gif-garbage", "pdf", "jpeg-garbage"],
)  # fmt: skip
def test_garbage_and_truncated_pictures_are_400(hostile: Server, data: bytes) -> None:
    """Not a picture, or a broken one: 400, message without reprs."""
    response = upload(hostile, data)
    assert_clean(response)
    assert response.status_code == 400, response.text


def test_a_truncated_png_is_400(hostile: Server) -> None:
    """Half of a real PNG."""
    data = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), np.uint8)), "PNG"
    )
    response = upload(hostile, data[: len(data) // 2])
    assert_clean(response)
    assert response.status_code == 400, response.text


def test_a_decompression_bomb_is_refused_before_decoding(hostile: Server) -> None:
    """A tiny PNG that claims 20000x20000 pixels: 413 at once, memory untouched."""
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")
    assert len(bomb) < 100_000
    started = time.perf_counter()
    response = upload(hostile, bomb)
    assert_clean(response)
    assert response.status_code == 413 and time.perf_counter() - started < 1.0


def test_a_big_jpeg_photo_is_decoded_at_reduced_scale(hostile: Server) -> None:
    """A 12-megapixel JPEG (over the 4 MP limit as stored) decodes at 1/8 scale and serves."""
    big = Image.fromarray(DIGIT).resize((4000, 3000))
    response = upload(hostile, encode(big, "JPEG"), "image/jpeg")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["digit"] == 1, response.json()


def large_pictures_at_once(server: Server, count: int = 40) -> list[httpx.Response]:
    """``count`` concurrent 2048x2048 PNGs of DIGIT (small files, 4 MP each when decoded)."""
    big = encode(Image.fromarray(DIGIT).resize((2048, 2048)), "PNG")
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: upload(server, big), range(count)))


def test_many_large_pictures_at_once_keep_memory_bounded(hostile: Server) -> None:
    """40 concurrent 2048x2048 PNGs: all classified (40 is under --max-in-flight and the queue,
    and decoding two at a time keeps the model's queue short), memory bounded."""
    before = rss_mb(hostile.process.pid)
    responses = large_pictures_at_once(hostile)
    assert [r.status_code for r in responses] == [200] * 40, [r.text[:80] for r in responses]
    assert {r.json()["predictions"][0]["digit"] for r in responses} == {1}
    assert rss_mb(hostile.process.pid) - before < 300


def test_oversized_body_is_a_413_that_a_simple_client_reads(hostile: Server) -> None:
    """urllib writes its whole 12 MB body before reading: it must get the 413, not a reset."""
    request = urllib.request.Request(
        f"{hostile.url}/predict/depthwise",
        data=b"0" * 12_000_000,
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413


def test_a_chunked_multipart_upload_is_cut_off_at_the_limit(hostile: Server) -> None:
    """A 40 MB multipart upload with no Content-Length: 413, never spooled whole."""
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(40):
            yield b"\0" * 1_000_000

    response = httpx.post(
        f"{hostile.url}/predict/depthwise",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert_clean(response)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{", 400, "bad_request"),
        (b"[" * 100_000, 400, "bad_request"),
        (b'{"image": "x"}', 422, "invalid_input"),
        (b'{"image": [NaN]}', 400, "bad_request"),
        (b'{"images": []}', 422, "invalid_input"),
    ],
    ids=["truncated", "deep", "string", "nan", "empty-list"],
)
def test_bad_json_is_4xx(hostile: Server, body: bytes, status: int, code: str) -> None:
    """Not JSON (NaN is not JSON; nesting deeper than the parser's limit): 400 bad_request.
    JSON that is not images: 422 invalid_input."""
    response = upload(hostile, body, "application/json")
    assert_clean(response)
    assert (response.status_code, response.json()["error"]) == (status, code), response.text


# ---- every JSON body one edit away from a valid one, for each JSON API ---------------------

IMAGE_28 = [[[0.0]] * 28 for _ in range(28)]
V2_TENSOR = {"name": INPUT_NAME, "shape": [1, PIXELS], "datatype": "FP32"}
VALID = {  # (path, body, Inference-Header-Content-Length: the binary extension's JSON header)
    "predict": ("/predict/depthwise", {INPUT_NAME: [0.0] * PIXELS}, False),
    "tf-serving rows": ("/v1/models/depthwise:predict", {"instances": [IMAGE_28]}, False),
    "tf-serving columns": (
        "/v1/models/depthwise:predict",
        {"signature_name": "serving_default", "inputs": {INPUT_NAME: [IMAGE_28]}},
        False,
    ),
    "kserve json": (
        "/v2/models/depthwise/infer",
        {
            "id": "a",
            "inputs": [{**V2_TENSOR, "data": [0.0] * PIXELS}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
            "parameters": {"binary_data_output": False},
        },
        False,
    ),
    "kserve binary": (
        "/v2/models/depthwise/infer",
        {"inputs": [{**V2_TENSOR, "parameters": {"binary_data_size": 4 * PIXELS}}]},
        True,
    ),
}
REPLACEMENTS: tuple[object, ...] = (
    None,
    True,
    "x",
    "",
    -1,
    0,
    1.5,
    1e300,
    2**70,
    [],
    [[]],
    [None],
    {},
    {"a": 1},
)


def one_edit_away(document: object) -> Iterator[object]:
    """``document`` with one value (the whole, or any value inside it, lists' first two
    elements) replaced by each of REPLACEMENTS."""
    yield from REPLACEMENTS
    children = (
        list(document.items())
        if isinstance(document, dict)
        else list(enumerate(document[:2]))
        if isinstance(document, list)
        else []
    )
    for key, child in children:
        for edited in one_edit_away(child):
            copy = dict(document) if isinstance(document, dict) else list(document)  # type: ignore[call-overload]
            copy[key] = edited
            yield copy


@pytest.mark.parametrize("api", list(VALID))
def test_every_body_one_edit_from_a_valid_one_gets_a_4xx_or_an_answer(
    hostile: Server, api: str
) -> None:
    """Hundreds of wrong shapes, types and values where each API expects something else: each
    answered 200 (still valid) or a clear 4xx, never a 5xx, nothing leaked."""
    path, valid, binary = VALID[api]
    wrong = []
    with httpx.Client(base_url=hostile.url, timeout=30) as client:
        for document in one_edit_away(valid):
            header = json.dumps(document).encode()
            response = client.post(
                path,
                content=header + (bytes(4 * PIXELS) if binary else b""),
                headers={"content-type": "application/json"}
                | ({"inference-header-content-length": str(len(header))} if binary else {}),
            )
            if response.status_code >= 500 or LEAKS.search(response.text):
                wrong.append(f"{response.status_code} {response.text[:100]} <- {header[:200]!r}")
    assert not wrong, f"{len(wrong)} bodies:\n" + "\n".join(wrong[:20])


def post_head(length: int) -> bytes:
    """The request line and headers of a JSON predict promising ``length`` body bytes."""
    return (
        b"POST /predict/depthwise HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


@dataclass(frozen=True)
class Exchange:
    """What came back on a raw connection, and whether the server closed it within the wait."""

    answer: bytes
    closed: bool


def raw_exchange(server: Server, data: bytes, wait: float = 3.0) -> Exchange:
    """Send raw bytes on a fresh connection; whatever comes back before it closes (or ``wait``
    passes with the connection still open)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return Exchange(received, closed=False)
        except ConnectionResetError:
            pass  # closed too, the hard way
    return Exchange(received, closed=True)


def test_too_many_headers_is_431(hostile: Server) -> None:
    """Over --max-headers: 431 and the connection closed."""
    headers = "".join(f"X-H{i}: v\r\n" for i in range(60))
    got = raw_exchange(hostile, f"GET /healthz HTTP/1.1\r\nHost: a\r\n{headers}\r\n".encode())
    assert got.answer.startswith(b"HTTP/1.1 431") and got.closed, got


def test_headers_too_large_is_431(hostile: Server) -> None:
    """Over --max-header-bytes of unfinished headers: 431 and the connection closed."""
    got = raw_exchange(hostile, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20_000)
    assert got.answer.startswith(b"HTTP/1.1 431") and got.closed, got


@pytest.mark.parametrize("sent", [b"", b"GET /heal"], ids=["silent", "half-request-line"])
def test_slow_clients_are_disconnected_after_the_header_timeout(
    hostile: Server, sent: bytes
) -> None:
    """A connection that sends nothing, or half a request line, is closed after ~1 s."""
    started = time.perf_counter()
    got = raw_exchange(hostile, sent, wait=5.0)
    assert got == Exchange(b"", closed=True) and time.perf_counter() - started < 3.0


def test_a_stalled_body_is_408(hostile: Server) -> None:
    """Headers promise 30,000 bytes, 1,000 come, then nothing: 408 after the body timeout."""
    head = (
        b"POST /predict/depthwise HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: 30000\r\n\r\n"
    )
    answer = raw_exchange(hostile, head + b" " * 1000, wait=5.0).answer
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_a_client_that_leaves_mid_body_counts_499_not_500(hostile: Server) -> None:
    """Disconnecting part-way through the body: no 500 anywhere, a 499 in the metrics."""
    host, port = hostile.url.removeprefix("http://").split(":")
    before = gone_count(httpx.get(f"{hostile.url}/metrics").text)
    for _ in range(3):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(post_head(30_000) + b"{")
            time.sleep(0.1)
    time.sleep(0.3)
    metrics = httpx.get(f"{hostile.url}/metrics").text
    assert gone_count(metrics) == before + 3, metrics
    assert 'status="500"' not in metrics


def gone_count(metrics: str) -> float:
    """The requests counted 499 (client gone), over every variant and runtime."""
    return sum(
        float(n) for n in re.findall(r'requests_total\{[^}]*status="499"[^}]*\} (\S+)', metrics)
    )


def test_unsupported_content_type_names_the_accepted_ones(hostile: Server) -> None:
    """415 lists what is accepted."""
    response = upload(hostile, b"abc", "text/plain")
    assert response.status_code == 415 and "image/webp" in response.json()["detail"]


def test_answers_leak_no_machine_paths(hostile: Server) -> None:
    """/variants and /readyz: figures and model names, no paths of this machine."""
    for path in ("/variants", "/readyz", "/variants/depthwise"):
        text = httpx.get(f"{hostile.url}{path}").text
        assert not LEAKS.search(text), (path, text[:300])


def test_docs_load_offline(hostile: Server) -> None:
    """/docs and /redoc use scripts served by this server, not a CDN."""
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{hostile.url}{page}").text
        scripts = re.findall(r'src="([^"]+)"', html) + re.findall(r'href="([^"]+\.css)"', html)
        assert scripts and all(s.startswith("/") for s in scripts), scripts
        for src in scripts:
            assert httpx.get(f"{hostile.url}{src}").status_code == 200, src


def test_in_flight_limit_sheds_at_once(models_dir: Path, tmp_path: Path) -> None:
    """--max-in-flight 1: with one request held in the server, the next POST gets 503 +
    Retry-After at once, its connection stays usable, and GETs still answer."""
    # ONNX alone: a server without TensorFlow starts in a quarter of the time.
    with run_server(
        models_dir, tmp_path / "log", "--runtimes", "onnx", "--max-in-flight", "1"
    ) as server:
        server.wait_ready()
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as held, httpx.Client() as client:
            held.sendall(post_head(100) + b"{")
            time.sleep(0.2)
            started = time.perf_counter()
            shed = client.post(f"{server.url}/predict/depthwise", json=BLANK)
            shed_s = time.perf_counter() - started
            # The same keep-alive connection, after a shed request whose body was dropped:
            health = client.get(f"{server.url}/healthz")
            again = client.post(f"{server.url}/predict/depthwise", json=BLANK)
        metrics = httpx.get(f"{server.url}/metrics").text
        time.sleep(0.2)
        after = httpx.post(f"{server.url}/predict/depthwise", json=BLANK)
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
    assert shed.json()["error"] == "overloaded" and shed_s < 0.5
    assert health.status_code == 200 and again.status_code == 503
    assert 'mnist_serve_shed_total{reason="in_flight"} 2.0' in metrics
    assert after.status_code == 200


def test_connections_over_the_limit_are_refused_and_the_rest_serve(
    models_dir: Path, tmp_path: Path
) -> None:
    """--max-connections 3: three idle connections are held; a fourth gets 503 and is closed;
    once they go, requests are served again."""
    args = ("--runtimes", "onnx", "--max-connections", "3")
    with run_server(models_dir, tmp_path / "log", *args) as server:
        server.wait_ready()
        host, port = server.url.removeprefix("http://").split(":")
        held = [socket.create_connection((host, int(port))) for _ in range(3)]
        time.sleep(0.2)
        refused = raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        for sock in held:
            sock.close()
        time.sleep(0.2)
        served = httpx.get(f"{server.url}/healthz")
    assert refused.closed and refused.answer.startswith(b"HTTP/1.1 503"), refused
    assert b"too many open connections" in refused.answer
    assert served.status_code == 200


def test_http_client_chunked_oversize(hostile: Server) -> None:
    """http.client, chunked, 10 MB of JSON: the 413 arrives."""
    host, port = hostile.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(
        "POST",
        "/predict/depthwise",
        body=iter([b"0" * 1_000_000] * 10),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 413


def test_still_serving_and_memory_back_near_idle(hostile_run: Hostile) -> None:
    """After large pictures and an oversized body (on top of whatever ran before): a
    prediction works and RSS is back within 100 MB of the server's idle memory."""
    server = hostile_run.server
    large_pictures_at_once(server)
    assert upload(server, b"0" * 12_000_000, "application/json").status_code == 413
    time.sleep(1.0)
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert upload(server, encode(Image.fromarray(DIGIT), "PNG")).status_code == 200
    assert rss_mb(server.process.pid) - hostile_run.idle_rss_mb < 100
