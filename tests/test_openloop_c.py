"""The C open-loop generator (scripts/openloop.c through loadtests/cgen.py) against real servers
on 127.0.0.1: per-status counts, the asked rate, latency from the scheduled time (queueing and
waiting for a connection counted), timeouts, Poisson arrivals, and our real service."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from loadtests import cgen
from modelrepo.contract import INPUT_NAME, SIDE
from tests.helpers import Server
from training.data import Mnist

SERIAL_DELAY_S = 0.025  # /serial: one request at a time for the whole server, 25 ms each


class Handler(BaseHTTPRequestHandler):
    """200 for /ok, 503 for /busy, 200 + ``Connection: close`` for /close, 404 otherwise;
    /serial takes 25 ms with the whole server's lock held; /slow answers after 2 s; /garbage
    answers with no HTTP at all and closes."""

    protocol_version = "HTTP/1.1"
    lock = threading.Lock()

    def do_GET(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path
        if path == "/serial":
            with self.lock:
                time.sleep(SERIAL_DELAY_S)
        if path == "/slow":
            time.sleep(2.0)
        if path == "/garbage":  # not HTTP: the generator must count one failure, not two
            self.wfile.write(b"garbage\r\n\r\n")
            self.close_connection = True
            return
        code = {"/ok": 200, "/busy": 503, "/close": 200, "/serial": 200}.get(path, 404)
        close = "Connection: close\r\n" if path == "/close" else ""
        # One write (head and body): two would meet Nagle and delayed ACKs, 40 ms each.
        self.wfile.write(f"HTTP/1.1 {code} X\r\nContent-Length: 2\r\n{close}\r\nok".encode())
        self.close_connection = bool(close)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@contextmanager
def stdlib_server() -> Iterator[int]:
    """A threading stdlib HTTP server on 127.0.0.1; yields its port."""
    ThreadingHTTPServer.request_queue_size = 256  # the generator pre-opens 64 at once
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator, freshly compiled (the build step tested too, not a cached binary)."""
    try:
        return cgen.build(tmp_path_factory.mktemp("bin"))
    except cgen.CompilerNotFound as error:  # the CI image has gcc: a missing one is a failure
        pytest.fail(f"{error}; these tests need it")


def run_all(binary: Path, *plans: cgen.Plan) -> list[cgen.OpenLoopRun]:
    """Run several plans at once (each its own process), to keep the test short."""
    with ThreadPoolExecutor(len(plans)) as pool:
        return list(pool.map(lambda plan: cgen.run(plan, binary), plans))


@pytest.mark.slow
def test_per_status_counts_and_the_asked_rate(binary: Path) -> None:
    """200 req/s for 2 s on three paths at once: 400 sent and answered on each, counted by
    status and class; a Connection: close answer makes the next request open a connection;
    Poisson arrivals average the rate and depend on the seed alone (not on the reuse order)."""
    with stdlib_server() as port:
        ok, busy, close, poisson, again, other, garbage = run_all(
            binary,
            *(cgen.Plan(port, 200, 2.0, path=p, preopen=4) for p in ("/ok", "/busy", "/close")),
            cgen.Plan(port, 200, 2.0, path="/ok", arrival="poisson", seed=3, preopen=4),
            cgen.Plan(
                port, 200, 2.0, path="/ok", arrival="poisson", seed=3, preopen=4, reuse="lifo"
            ),
            cgen.Plan(port, 200, 2.0, path="/ok", arrival="poisson", seed=4, preopen=4),
            cgen.Plan(port, 100, 1.0, path="/garbage", preopen=4),
        )
    # Every answer malformed: each request one failure (it counted as a bad response and a
    # connection error both, twice in ``failed``).
    assert garbage.bad_responses == garbage.sent == 100 and garbage.failed == 100, garbage
    for run in (ok, busy, close):
        assert run.scheduled == run.sent == run.completed == 400
        assert run.failed == 0 and run.waited == 0
        assert run.lag.count == 400 and run.lag.p50 is not None and run.lag.p50 < 5
    assert ok.status_counts == {200: 400} and ok.ok.count == 400 and ok.shed.count == 0
    assert ok.per_second(200) == pytest.approx(200)
    assert ok.elapsed_s == pytest.approx(2.0, abs=0.5)  # on schedule, not faster or slower
    assert busy.status_counts == {503: 400} and busy.shed.count == 400 and busy.ok.count == 0
    assert close.status_counts == {200: 400} and close.connections_opened >= 400
    # keep-alive: connections reused (without it, 400); a stall of the shared stdlib server
    # can leave a few dozen in flight at once
    assert ok.connections_opened < 100
    assert ok.ok.p50 is not None and ok.ok.p99 is not None and ok.ok.max is not None
    assert 0 < ok.ok.p50 <= ok.ok.p99 <= ok.ok.max < 1000
    assert abs(poisson.scheduled - 400) < 4 * 400**0.5 and poisson.completed == poisson.scheduled
    assert poisson.scheduled == again.scheduled != other.scheduled
    assert again.completed == again.scheduled


@pytest.mark.slow
def test_queueing_and_waiting_are_counted_from_the_scheduled_time(binary: Path) -> None:
    """A server taking 25 ms per request, one at a time (40/s), offered 80/s for 0.5 s through
    at most 4 connections: the backlog grows, so the last request answers ~0.54 s after its
    scheduled time; 36 of the 40 found every connection busy. A closed-loop client (or one that
    timed from the send) would report 25-100 ms for every request."""
    with stdlib_server() as port:
        run = cgen.run(cgen.Plan(port, 80, 0.5, path="/serial", max_connections=4), binary)
    assert run.status_counts == {200: 40}
    last_ms = (40 * SERIAL_DELAY_S - 39 / 80 + SERIAL_DELAY_S) * 1e3
    assert run.ok.max is not None  # above it only by what a busy machine adds to serial work
    assert 0.85 * last_ms <= run.ok.max <= 1.5 * last_ms, run.ok.max
    assert run.waited >= 30
    assert run.lag.max is not None and run.lag.max < 50  # waiting is not the generator's lag


def test_a_request_unanswered_within_the_timeout_is_counted(binary: Path) -> None:
    """/slow answers after 2 s: with a 0.3 s timeout, all 10 time out and none completes."""
    with stdlib_server() as port:
        run = cgen.run(cgen.Plan(port, 20, 0.5, path="/slow", timeout_s=0.3), binary)
    assert run.timeouts == 10 and run.completed == 0 and run.status_counts == {}
    assert run.elapsed_s < 1.5


def test_only_loopback_is_a_target_and_help_explains(binary: Path) -> None:
    refused = subprocess.run(
        [binary, "--host", "10.0.0.1", "--port", "80", "--rate", "1", "--duration", "1"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "only 127.0.0.1" in refused.stderr
    helped = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True)
    assert "--max-connections" in helped.stdout and "poisson" in helped.stdout


def test_build_is_cached_until_the_source_changes(tmp_path: Path, binary: Path) -> None:
    source = tmp_path / "openloop.c"
    source.write_bytes(cgen.SOURCE.read_bytes())
    built = cgen.build(tmp_path / "bin", source)
    first = built.stat().st_mtime_ns
    assert cgen.build(tmp_path / "bin", source).stat().st_mtime_ns == first  # not rebuilt
    source.write_text(source.read_text() + "\nint broken(void) { return }\n")
    with pytest.raises(RuntimeError, match=r"compiling openloop\.c failed"):
        cgen.build(tmp_path / "bin", source)


@pytest.mark.slow
def test_our_service_answers_every_request(binary: Path, server: Server, mnist: Mnist) -> None:
    """200 POSTs/s of a real digit for 2 s to the real service: every one a 200."""
    digit = mnist.x_test[0].reshape(SIDE, SIDE).astype(np.float32)
    digit = digit / 255.0 if digit.max() > 1 else digit
    body = Path(str(server.log) + ".body.json")
    body.write_text(json.dumps({INPUT_NAME: digit.tolist()}))
    port = int(server.url.rsplit(":", 1)[1])
    plan = cgen.Plan(port, 200, 2.0, path="/predict/depthwise", body=body)
    run = cgen.run(plan, binary)
    assert run.sent == run.completed == 400 and run.status_counts == {200: 400}, run
    assert run.failed == 0
