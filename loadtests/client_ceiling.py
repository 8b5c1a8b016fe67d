"""The open loop's own limit, calibrated at the start: the highest arrival rate this machine's
client (MLPerf LoadGen with our Python system under test) sustains within the SLO against a
server that does nothing (:mod:`loadtests.null_server`).

The rate search doubles a rate every model met, up to a ceiling, so that two models are not
"tied" at the top rate tried. A fixed ceiling fits one machine only: LoadGen with our client
kept up with about 2,000 req/s on the slow 2-core machines and with 12,000 on one four times
faster (docs/benchmarks.md, I and Z). Too low, it stops the search before the models part; too
high, the search runs into the client's own limit, and a miss there is the client's. So
``--ceiling auto`` (the default) runs :func:`calibrate` first: LoadGen at doubling rates on the
null server, with the sweep's SLO, payloads and run length, then a bisection between the last
rate VALID and the first not. A few seconds; the ceiling and its runs go into ``openloop.json``.

The null server runs while the service under test sits idle, so the client has the machine
it will have in the sweep, less the service's share under load: the ceiling is an upper bound
on what the client can measure honestly, and the sweep's points record the client's lag too.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from loadtests.loadgen import LoadGenError, run_server_scenario
from loadtests.openloop_results import ClientCeiling, ClientRun, Slo

START = 1000.0  # the first calibration rate (req/s); it doubles from here
TOP = 64000.0  # the calibration stops here, VALID or not
BISECTIONS = 2  # halvings of the gap between the last VALID rate and the first not
WARMUP_S = 0.5  # before each calibration run, not shown to LoadGen
FOLDER = "client"  # LoadGen's logs of the calibration, under the sweep's loadgen/ folder
STARTUP_S = 20.0  # the null server must say its port within this


@contextlib.contextmanager
def null_server() -> Iterator[str]:
    """A null server in its own process for the duration: its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtests.null_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = _first_line(process, STARTUP_S)
        if not line.strip().isdigit():
            raise LoadGenError(f"the null server did not start (it said {line.strip()!r})")
        yield f"http://127.0.0.1:{int(line)}/null"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _first_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The process's first line of output, or '' if it exits or says nothing in time."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return process.stdout.readline()


def calibrate(
    slo: Slo,
    payloads: list[bytes],
    folder: Path,
    seconds: float,
    min_requests: int,
    on_run: Callable[[ClientRun], None] | None = None,
) -> ClientCeiling:
    """The client's ceiling on this machine: LoadGen against a null server at ``START``,
    doubling while VALID (up to ``TOP``), then ``BISECTIONS`` halvings of the gap between
    the last VALID rate and the first not; each run as the sweep's (``seconds``,
    ``min_requests``, ``slo``, ``payloads``), LoadGen's logs in ``folder``."""
    runs: list[ClientRun] = []
    with null_server() as url:

        def run(rate: float) -> ClientRun:
            result = run_server_scenario(
                url,
                payloads,
                rate,
                slo,
                folder / f"null-{rate:g}",
                min_duration_s=seconds,
                min_queries=min_requests,
                warmup_s=WARMUP_S,
            )
            verdict = result.result
            done = ClientRun(
                rate, verdict.valid, round(verdict.latency_ms.p99, 3), result.sut_lag_p99_ms
            )
            runs.append(done)
            if on_run is not None:
                on_run(done)
            return done

        passed, failed, rate = 0.0, 0.0, START
        while rate <= TOP:
            if not run(rate).valid:
                failed = rate
                break
            passed, rate = rate, rate * 2
        for _ in range(BISECTIONS if failed and passed else 0):
            middle = round((passed + failed) / 2)
            if run(middle).valid:
                passed = middle
            else:
                failed = middle
    return ClientCeiling(passed, runs, capped=not failed)
