"""Every error answer reaches every kind of client at once, and the server keeps serving.

Each error class is sent by a client that asks to close the connection after the answer
(urllib sends ``Connection: close``; so do many proxies), with a body sent whole, sent chunked,
or not sent at all, and by a keep-alive client; each answer must arrive within a second (the
server's body timeout is 30 s, so a server that waited for body bytes fails here).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import Server

pytestmark = pytest.mark.slow

BOUND_S = 1.0
GOOD = json.dumps({"image": [0.0] * 300 + [1.0] * 184 + [0.0] * 300}).encode()
BIG = b"x" * (5 * 1024 * 1024)  # over the default 4 MiB body limit

# (path, content type, body, status, error code in the JSON body or None for TF Serving's)
CASES = {
    "malformed-json": ("/predict/depthwise", "application/json", b'{"image": [0.1,', 400,
                       "bad_request"),
    "empty-body": ("/predict/depthwise", "application/json", b"", 400, "bad_request"),
    "wrong-shape": ("/predict/depthwise", "application/json", b'{"image": [0.5, 0.5]}', 422,
                    "invalid_input"),
    "out-of-range": ("/predict/depthwise", "application/json",
                     json.dumps({"image": [2.0] * 784}).encode(), 422, "invalid_input"),
    "not-a-picture": ("/predict/depthwise", "image/png", b"\x89PNG\r\n\x1a\n not really", 400,
                      "bad_request"),
    "media-type": ("/predict/depthwise", "text/plain", b"hello", 415, "unsupported_media_type"),
    "unknown-model": ("/predict/nonesuch", "application/json", GOOD, 404, "unknown_model"),
    "too-large": ("/predict/depthwise", "application/json", BIG, 413, "payload_too_large"),
    "tfserving-malformed": ("/v1/models/depthwise:predict", "application/json", b"{", 400, None),
    "tfserving-unknown": ("/v1/models/nonesuch:predict", "application/json", GOOD, 404, None),
    "kserve-malformed": ("/v2/models/depthwise/infer", "application/json", b"{", 400, None),
    "kserve-unknown": ("/v2/models/nonesuch/infer", "application/json", GOOD, 404, None),
}  # fmt: skip


@pytest.fixture(autouse=True)
def still_serving(server: Server) -> Iterator[None]:
    """After each test, the server still answers a good request."""
    yield
    request = urllib.request.Request(
        f"{server.url}/predict/depthwise", GOOD, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def timed(call: object) -> tuple[int, bytes, float]:
    """Run ``call()`` -> (status, body); return them with the seconds it took."""
    started = time.perf_counter()
    status, body = call()  # type: ignore[operator]
    return status, body, time.perf_counter() - started


def check(status: int, body: bytes, took: float, case: str) -> None:
    """The case's status and error code, within the bound."""
    _, _, _, want_status, want_code = CASES[case]
    assert status == want_status, (case, status, body[:200])
    error = json.loads(body)
    assert error["error"] if want_code is None else error["error"] == want_code, (case, error)
    assert took < BOUND_S, f"{case}: the {status} took {took:.2f} s"


@pytest.mark.parametrize("case", list(CASES))
def test_urllib_connection_close_gets_each_error_at_once(server: Server, case: str) -> None:
    """urllib (Connection: close, Content-Length, whole body sent) gets each error at once."""
    path, content_type, body, *_ = CASES[case]

    def call() -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{server.url}{path}", body, {"content-type": content_type}
        )
        assert request.get_header("Connection") is None  # urllib adds "Connection: close" itself
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    check(*timed(call), case)


@pytest.mark.parametrize("keep_alive", [False, True], ids=["close", "keep-alive"])
@pytest.mark.parametrize("case", ["malformed-json", "unknown-model", "too-large", "media-type"])
def test_chunked_bodies_get_each_error_at_once(server: Server, case: str, keep_alive: bool) -> None:
    """A chunked body (no Content-Length), closing or keep-alive, gets each error at once."""
    path, content_type, body, *_ = CASES[case]
    host, port = server.url.removeprefix("http://").split(":")

    def call() -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"content-type": content_type}
        if not keep_alive:
            headers["connection"] = "close"
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        connection.request("POST", path, chunks, headers, encode_chunked=True)
        response = connection.getresponse()
        answer = response.status, response.read()
        connection.close()
        return answer

    check(*timed(call), case)


@pytest.mark.parametrize("keep_alive", [False, True], ids=["close", "keep-alive"])
@pytest.mark.parametrize("case", ["unknown-model", "too-large", "media-type"])
def test_errors_decided_from_headers_need_no_body(
    server: Server, case: str, keep_alive: bool
) -> None:
    """Headers promising a body that never comes: an error the headers decide comes at once."""
    path, content_type, body, *_ = CASES[case]
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{'' if keep_alive else 'Connection: close'}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=BOUND_S) as sock:
        started = time.perf_counter()
        sock.sendall(head)
        status, answer = read_response(sock)  # TimeoutError past the bound fails the test
        took = time.perf_counter() - started
    assert status == CASES[case][3], answer[:300]
    assert json.loads(answer)["error"] == CASES[case][4]
    assert took < BOUND_S, f"{case}: took {took:.2f} s"


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length from ``sock``: its status and body."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in lines[1:]
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body
