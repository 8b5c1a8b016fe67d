"""A hostile client on raw connections to a real server: too many or too large headers are 431,
slow clients are cut off after the header timeout, a stalled body is 408, a client that leaves
mid-body counts 499 (never 500), and the in-flight and connection limits shed at once while the
rest is served."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelrepo.contract import INPUT_NAME, PIXELS
from tests.helpers import Server, run_server
from tests.hostile_helpers import hostile as hostile
from tests.hostile_helpers import hostile_run as hostile_run

BLANK = {INPUT_NAME: [0.0] * PIXELS}  # a request with one blank digit

pytestmark = pytest.mark.slow


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
