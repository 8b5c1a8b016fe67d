"""The open loop's own limit, calibrated at the start: the highest arrival rate this machine's
client (MLPerf LoadGen with our Python system under test) sustains within the SLO against a
server that does nothing (:mod:`loadtests.null_server`).

The rate search doubles a rate every model met, up to a ceiling, so that two models are not
"tied" at the top rate tried. A fixed ceiling fits one machine only: LoadGen with our client
kept up with about 2,000 req/s on the slow 2-core machines and with 12,000-28,000 on one four
times faster (docs/benchmarks.md, I, Z and AA). Too low, it stops the search before the models
part; too high, the search runs into the client's own limit, and a miss there is the client's.
So ``--ceiling auto`` (the default) runs :func:`calibrate` first: LoadGen at doubling rates on the
null server, with the sweep's SLO, payloads and minimum requests, then two bisections between the
last rate the client kept up with and the first it did not. About ten one-second runs; the
ceiling and its runs go into ``openloop.json``. ``loadtest --tuned`` calibrates once for both
of its runs; ``explore`` once a run (kept in ``explore.json`` when it resumes) and ``tune``
once for all its models (``tune.json``), each with its own minimum requests.

For ``loadtest`` the null server runs while the service under test sits idle; for ``explore``
and ``tune`` before any service starts. Either way the client has the machine it will have in
the measurement, less the service's share under load: the ceiling is an upper bound on what
the client can measure honestly, and every point records the client's lag too.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from loadtests.loadgen import LoadGenError, LoadGenRun, run_server_scenario
from loadtests.openloop_results import ClientCeiling, ClientRun, Slo
from loadtests.procs import stop
from loadtests.runner import LoadTestError

START = 1000.0  # the first calibration rate (req/s): it doubles from here while kept up
FLOOR = 125.0  # or, when the client misses START, halves down to this
TOP = 64000.0  # the calibration stops here, kept up with or not
BISECTIONS = 2  # halvings of the gap between the last rate kept up with and the first not
RUN_S = 1.0  # each calibration run lasts at least this (and the sweep's --min-requests)
WARMUP_S = 0.5  # before each calibration run, not shown to LoadGen
FOLDER = "client"  # LoadGen's logs of the calibration, under the sweep's loadgen/ folder
STARTUP_S = 20.0  # the null server must say its port within this


@contextlib.contextmanager
def null_server() -> Iterator[str]:
    """A null server in its own process for the duration: its URL."""
    with subprocess.Popen(
        [sys.executable, "-m", "loadtests.null_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            line = _first_line(process, STARTUP_S).strip()
            if not line.isdigit():
                raise LoadGenError(
                    f"the null server did not start (exit code {process.poll()}, said {line!r})"
                )
            yield f"http://127.0.0.1:{int(line)}/null"
        finally:
            stop(process, timeout_s=5)


def _first_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The process's first line of output, or '' if it exits or says nothing in time."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return process.stdout.readline()


def kept_up(run: LoadGenRun, slo: Slo) -> bool:
    """Whether the client kept up in a run on the null server: LoadGen's VALID, and the
    client's own lag p99 within :attr:`Slo.client_lag_limit_ms`."""
    return run.result.valid and run.sut_lag_p99_ms <= slo.client_lag_limit_ms


def calibrate(
    slo: Slo,
    payloads: list[bytes],
    folder: Path,
    min_requests: int,
    on_run: Callable[[ClientRun], None] | None = None,
) -> ClientCeiling:
    """The client's ceiling on this machine: runs against a null server at ``START``,
    doubling while the client keeps up (:func:`kept_up`; up to ``TOP``) or, if it misses
    ``START``, halving until it keeps up (down to ``FLOOR``); then ``BISECTIONS`` halvings of
    the gap. A rate missed is run once more and the second verdict stands, as in the search.
    Each run lasts ``RUN_S`` and ``min_requests`` with the sweep's ``slo`` and ``payloads``;
    LoadGen's logs go to ``folder``. When the calibration cannot run (LoadGen missing, the
    null server not starting, a log not written), a ceiling of 0 saying why: the search then
    keeps to its rates, and the run goes on rather than ending."""
    runs: list[ClientRun] = []
    try:
        with null_server() as url:

            def met(rate: float) -> bool:
                for attempt in (1, 2):
                    result = run_server_scenario(
                        url,
                        payloads,
                        rate,
                        slo,
                        folder / (f"null-{rate:g}" + ("" if attempt == 1 else "-again")),
                        min_duration_s=RUN_S,
                        min_queries=min_requests,
                        warmup_s=WARMUP_S,
                    )
                    done = ClientRun(
                        rate,
                        kept_up(result, slo),
                        round(result.result.latency_ms.p99, 3),
                        result.sut_lag_p99_ms,
                        attempt,
                        result.cpu_steal,
                    )
                    runs.append(done)
                    if on_run is not None:
                        on_run(done)
                    if done.valid:
                        return True
                return False

            passed, failed = search(met)
    except (LoadTestError, OSError) as err:
        return ClientCeiling(0.0, runs, problem=str(err))
    return ClientCeiling(passed, runs, capped=not failed)


def search(met: Callable[[float], bool]) -> tuple[float, float]:
    """The calibration's rates, one at a time: the highest ``met`` and the lowest not (0 if
    none)."""
    passed, failed = 0.0, 0.0
    if met(START):
        passed, rate = START, START * 2
        while rate <= TOP and not failed:
            if met(rate):
                passed, rate = rate, rate * 2
            else:
                failed = rate
    else:
        failed, rate = START, START / 2
        while rate >= FLOOR and not passed:
            if met(rate):
                passed = rate
            else:
                failed, rate = rate, rate / 2
    for _ in range(BISECTIONS if failed and passed else 0):
        middle = round((passed + failed) / 2)
        if met(middle):
            passed = middle
        else:
            failed = middle
    return passed, failed
