"""loadtests.front: nginx in front of a server, refusing POSTs over its limit with our 503.

The refusal is checked against a stand-in upstream that never answers a POST (so a request
stays in flight for as long as the test needs); the pass-through against a real server.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests.front import Front, config, nginx_binary, run_front
from loadtests.procs import free_port
from modelrepo.contract import INPUT_NAME
from service.admission import SHED_BODY
from tests.helpers import run_server
from training.data import Mnist

OURS_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Type: application/json\r\n"
    b'Content-Length: 16\r\n\r\n{"error":"ours"}'
)


def requests(conn: socket.socket) -> Iterator[bytes]:
    """Each request's head read from ``conn``, its body (``Content-Length``) read and dropped:
    nginx may send a head and its body in two writes."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            if not (data := conn.recv(65536)):
                return
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            ),
            0,
        )
        while len(buffer) < length:
            if not (data := conn.recv(65536)):
                return
            buffer += data
        buffer = buffer[length:]
        yield head


class Upstream(threading.Thread):
    """A stand-in upstream on 127.0.0.1 (one request per read, as nginx sends them): a GET or
    ``POST /fast`` gets 200; ``POST /busy`` its own 503; ``POST /hold`` is held, never
    answered."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.posted = threading.Event()

    def run(self) -> None:
        """Accept connections until closed; each is served in a thread of its own."""
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        """Answer each request as the class says, on one kept-alive connection."""
        with conn:
            for head in requests(conn):
                if head.startswith(b"POST /hold"):
                    self.held.append(conn)
                    self.posted.set()
                    conn.recv(1)  # until nginx gives up on it
                    return
                if head.startswith(b"POST /busy"):
                    conn.sendall(OURS_503)
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def close(self) -> None:
        """Stop accepting (shut down first: a blocked accept() wakes); drop the held."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.held:
            conn.close()
        self.join(10)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A stand-in upstream, running."""
    stand_in = Upstream()
    stand_in.start()
    yield stand_in
    stand_in.close()


@pytest.mark.slow  # starts nginx
def test_the_configuration_passes_nginx_own_check(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(config(Front(limit=8), free_port(), free_port(), tmp_path))
    done = subprocess.run(
        [nginx_binary(), "-t", "-p", str(tmp_path), "-e", str(tmp_path / "log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


@pytest.mark.slow  # starts nginx
def test_a_post_over_the_limit_gets_our_503_at_once_and_gets_pass(
    upstream: Upstream, tmp_path: Path
) -> None:
    def held() -> None:  # the one request in flight; it fails when the front stops
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{url}/hold", content=b"{}", timeout=30)

    with run_front(upstream.port, Front(limit=1), tmp_path) as url:
        first = threading.Thread(target=held, daemon=True)
        first.start()
        assert upstream.posted.wait(10), "the first POST never reached the upstream"
        second = httpx.post(f"{url}/fast", content=b"{}", timeout=5)
        assert second.status_code == 503
        assert second.content == SHED_BODY
        assert second.headers["retry-after"] == "1"
        assert second.headers["content-type"] == "application/json"
        assert second.headers["x-refused-by"] == "front"
        assert second.elapsed.total_seconds() < 2  # refused by nginx, not after a wait
        health = httpx.get(f"{url}/healthz", timeout=5)  # GETs are not counted
        assert (health.status_code, health.text) == (200, "ok")
    first.join(10)
    assert not first.is_alive()


@pytest.mark.slow  # starts nginx
def test_the_limit_is_per_request_and_the_upstreams_503_passes_unchanged(
    upstream: Upstream, tmp_path: Path
) -> None:
    with run_front(upstream.port, Front(limit=1), tmp_path) as url, httpx.Client() as client:
        for _ in range(5):  # one kept-alive connection, one request after another
            answer = client.post(f"{url}/fast", content=b"{}", timeout=5)
            assert (answer.status_code, answer.text) == (200, "ok")
        ours = client.post(f"{url}/busy", content=b"{}", timeout=5)
        assert ours.status_code == 503
        assert ours.content == b'{"error":"ours"}'
        assert ours.headers["retry-after"] == "7"
        assert "x-refused-by" not in ours.headers


@pytest.mark.slow  # starts nginx
def test_our_server_answers_through_the_front_as_it_does_directly(
    models_dir: Path, mnist: Mnist, tmp_path: Path
) -> None:
    digit = (mnist.x_test[0].astype(np.float32) / 255.0).reshape(28, 28).tolist()
    body = {INPUT_NAME: digit}
    with run_server(
        models_dir, tmp_path / "server.log", "--variants", "depthwise", "--runtimes", "onnx"
    ) as server:
        server.wait_ready()
        port = int(server.url.rsplit(":", 1)[1])
        with run_front(port, Front(limit=4), tmp_path / "front") as front:
            for base in (server.url, front):
                ok = httpx.post(f"{base}/predict/depthwise@onnx", json=body, timeout=30)
                assert ok.status_code == 200, ok.text
                bad = httpx.post(
                    f"{base}/predict/depthwise@onnx",
                    content=b"{",
                    headers={"content-type": "application/json"},
                    timeout=30,
                )
                assert bad.status_code == 400, bad.text
            direct = httpx.post(f"{server.url}/predict/depthwise@onnx", json=body, timeout=30)
            fronted = httpx.post(f"{front}/predict/depthwise@onnx", json=body, timeout=30)
            assert fronted.json()["predictions"] == direct.json()["predictions"]
            missing = httpx.post(f"{front}/predict/nothing@onnx", json=body, timeout=30)
            assert missing.status_code == 404  # our error, passed through unchanged
            assert (
                missing.json()
                == httpx.post(f"{server.url}/predict/nothing@onnx", json=body, timeout=30).json()
            )


def test_a_missing_nginx_is_named_with_its_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from loadtests import front

    monkeypatch.setattr(front.shutil, "which", lambda _: None)
    monkeypatch.setattr(front.os, "access", lambda *_: False)
    with pytest.raises(front.NginxNotFound, match="apt-get install nginx-light"):
        front.nginx_binary()
