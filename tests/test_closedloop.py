"""loadtests.closedloop against a small real HTTP server on 127.0.0.1 whose first answers are
slow, as a cold model's first batch of a new size is on a busy machine."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadtests.closedloop import run_closed_loop

COLD_ANSWERS, COLD_S = 8, 1.0  # the first 8 answers take a second each


def answering(delay_s: Callable[[int], float]) -> type[BaseHTTPRequestHandler]:
    """A handler answering POSTs with 200 ``{}``, the n-th (from 1) after ``delay_s(n)`` s."""
    count, lock = itertools.count(1), threading.Lock()

    class Answer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                pause = delay_s(next(count))
            time.sleep(pause)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    return Answer


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threading HTTP server on 127.0.0.1 with ``handler``; yields a URL to POST to."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/x"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def cold_server() -> Iterator[str]:
    with serving(answering(lambda n: COLD_S if n <= COLD_ANSWERS else 0.0)) as url:
        yield url


@pytest.mark.slow
def test_a_slow_first_wave_is_left_to_the_warm_up(cold_server: str) -> None:
    """Every client's first answer takes longer than warm-up and window together; the window
    opens only once each client has had one, so it measures the warm server, not nothing."""
    started = time.perf_counter()
    result = run_closed_loop(cold_server, [b"{}"], COLD_ANSWERS, seconds=0.3, warmup_s=0.1)
    assert time.perf_counter() - started >= COLD_S
    assert result.errors == 0
    assert result.throughput_rps > 0 and result.latency_ms.p50 < COLD_S * 1000 / 2, result


@pytest.mark.slow
def test_an_answer_that_never_comes_is_an_error_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stuck request is counted as an error after the answer timeout and the client goes on
    over a new connection (it waited for ever: a stuck service hung explore and tune). The
    window's length is the time base of its throughput, not the time until the last answer."""
    from loadtests import closedloop

    monkeypatch.setattr(closedloop, "ANSWER_TIMEOUT_S", 0.5)
    with serving(answering(lambda n: 5.0 if n == 3 else 0.0)) as url:  # the third: kept 5 s
        started = time.perf_counter()
        result = run_closed_loop(url, [b"{}"], 1, seconds=1.5, warmup_s=0.0)
        took = time.perf_counter() - started
    assert took < 4.5, took  # not the 5 s the server kept the request
    assert result.errors == 1 and result.requests > 10, result
    assert result.seconds == pytest.approx(1.5)
    assert result.throughput_rps == pytest.approx((result.requests - 1) / 1.5, rel=0.01)


@pytest.mark.slow
def test_a_service_that_dies_during_a_measurement_is_a_load_test_error(
    models_dir: Path, tmp_path: Path
) -> None:
    """tune records a trial whose service failed and goes on; a service that died during the
    measurement once escaped as a ConnectionRefusedError and ended the whole tune."""
    import psutil

    from loadtests import served
    from loadtests.probe import LoadTestError

    args = ("--variants", "depthwise", "--runtimes", "onnx", "--workers", "1", "--poll-s", "0")
    with (
        pytest.raises(LoadTestError, match="the service exited during the measurement"),
        served.service(models_dir, tmp_path, *args) as url,
    ):
        # The service's processes only (not, e.g., multiprocessing's resource tracker).
        for child in psutil.Process().children(recursive=True):
            if "--poll-s" in child.cmdline() or "serve" in child.cmdline():
                child.kill()
                child.wait(10)
        run_closed_loop(f"{url}/predict/depthwise@onnx", [b"{}"], 1, seconds=0.5)
