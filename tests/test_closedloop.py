"""loadtests.closedloop against a small real HTTP server on 127.0.0.1 whose first answers are
slow, as a cold model's first batch of a new size is on a busy machine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtests.closedloop import run_closed_loop

COLD_ANSWERS, COLD_S = 8, 1.0  # the first 8 answers take a second each


class ColdStart(BaseHTTPRequestHandler):
    """Answers POSTs with 200 ``{}``; the first COLD_ANSWERS after COLD_S."""

    protocol_version = "HTTP/1.1"
    answered = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with ColdStart.lock:
            ColdStart.answered += 1
            cold = ColdStart.answered <= COLD_ANSWERS
        if cold:
            time.sleep(COLD_S)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cold_server() -> Iterator[str]:
    ColdStart.answered = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), ColdStart)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/x"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.slow
def test_a_slow_first_wave_is_left_to_the_warm_up(cold_server: str) -> None:
    """Every client's first answer takes longer than warm-up and window together; the window
    opens only once each client has had one, so it measures the warm server, not nothing."""
    started = time.perf_counter()
    result = run_closed_loop(cold_server, [b"{}"], COLD_ANSWERS, seconds=0.3, warmup_s=0.1)
    assert time.perf_counter() - started >= COLD_S
    assert result.errors == 0
    assert result.throughput_rps > 0 and result.latency_ms.p50 < COLD_S * 1000 / 2, result
