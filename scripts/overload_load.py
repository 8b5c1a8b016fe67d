"""The overload benchmark's load side (``scripts/bench_overload.py``): the open-loop run at one
rate (the C generator, ``scripts/openloop.c`` through :mod:`loadtests.cgen`, or the asyncio one
when there is no C compiler), the /healthz and /metrics probes beside it, the server's RSS, and
what they measured, typed (:class:`Load`)."""

from __future__ import annotations

import asyncio
import http.client
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from loadtests import cgen
from loadtests.openloop import OpenLoopResult, run_open_loop

PROBES = ("/healthz", "/metrics")
MAX_CONNECTIONS, PREOPEN, TIMEOUT_S = 2048, 256, 5.0  # the open-loop generator's pool


def rss_mb(pid: int) -> float:
    """Resident memory of a server, MB: the process and its children (workers, executor)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in (process, *process.children(recursive=True))) / 2**20


class PeakRss(threading.Thread):
    """Samples a process' RSS every 50 ms in the background; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        """Sample until told to stop."""
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)


class Probe(threading.Thread):
    """GETs ``path`` every 100 ms on one keep-alive connection; ``seconds``: each answer's time
    (a failed probe counts the time until it failed, and reconnects)."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.running = port, path, True
        self.seconds: list[float] = []

    def run(self) -> None:
        """Probe until told to stop."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while self.running:
            started = time.perf_counter()
            try:
                connection.request("GET", self.path)
                connection.getresponse().read()
            except (OSError, http.client.HTTPException):
                connection.close()
            self.seconds.append(time.perf_counter() - started)
            time.sleep(0.1)
        connection.close()


def ms(value: float | None) -> float:
    """A latency of the C generator's result, NaN when there was none."""
    return math.nan if value is None else value


@dataclass(frozen=True)
class Load:
    """One open-loop run's figures for the table, from either generator (latencies in ms)."""

    generator: str
    offered: float
    good_s: float
    shed_s: float
    failed_s: float
    shed_p50: float
    shed_p99: float
    ok_p50: float
    ok_p99: float
    lag_p99: float
    probes_max_ms: dict[str, float]
    waited: int | None = None  # requests that found all connections busy (C only)
    cpu_share: float | None = None  # the generator's CPU time over the run's (C only)
    raw: dict[str, Any] | None = None  # the C generator's whole result
    # Answers neither 200 nor the refusal, when the refusal is not 503 (mosec's 408 after its
    # --timeout): counted as failed, and the refusals' latency then unknown (NaN).
    unexpected: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_c(
        cls, run: cgen.OpenLoopRun, probes: dict[str, list[float]], shed_status: int = 503
    ) -> Load:
        """From the C generator's result; ``shed_status``: the server's refusal (mosec: 429).

        The generator times 503s apart and every other non-2xx answer together: with another
        refusal status, any other such answer is counted as failed, and the refusals' latency,
        which would mix it in, is left unknown."""
        shed, unexpected = run.shed, {}
        if shed_status != 503:
            shed = run.other
            unexpected = {
                status: count
                for status, count in run.status_counts.items()
                if status // 100 != 2 and status != shed_status
            }
        known = not unexpected
        return cls(
            "c",
            run.offered_rate,
            run.per_second(200),
            run.per_second(shed_status),
            (run.failed + sum(unexpected.values())) / run.duration_s,
            ms(shed.p50) if known else math.nan,
            ms(shed.p99) if known else math.nan,
            ms(run.ok.p50),
            ms(run.ok.p99),
            ms(run.lag.p99),
            probes_max(probes),
            run.waited,
            run.cpu_s / run.elapsed_s,
            asdict(run),
            unexpected,
        )

    @classmethod
    def from_python(cls, result: OpenLoopResult) -> Load:
        """From the asyncio generator's result (the fallback)."""
        return cls(
            "python",
            result.rate,
            result.per_second(200),
            result.per_second(503),
            result.per_second(0),
            result.latency_ms(503, 50),
            result.latency_ms(503, 99),
            result.latency_ms(200, 50),
            result.latency_ms(200, 99),
            result.lag_ms(99),
            probes_max(result.probes),
        )


def probes_max(probes: dict[str, list[float]]) -> dict[str, float]:
    """Each probed path's slowest answer, ms (NaN if never answered)."""
    return {path: max(v) * 1000 if v else math.nan for path, v in probes.items()}


def open_loop(
    url: str,
    body: Path,
    rate: float,
    seconds: float,
    binary: Path | None,
    probe_paths: tuple[str, ...] = PROBES,
    shed_status: int = 503,
) -> Load:
    """Open-loop POSTs of ``body`` to ``url`` at ``rate`` for ``seconds``, ``probe_paths`` GET
    beside; with the C generator (``binary``), else the asyncio one (which counts 503s only)."""
    if binary is None:
        if shed_status != 503:
            raise ValueError("the asyncio generator counts only 503 refusals: use the C one")
        result = asyncio.run(
            run_open_loop(url, body.read_bytes(), rate, seconds, probe_paths=probe_paths)
        )
        return Load.from_python(result)
    parts = urlsplit(url)
    port = parts.port or 80
    probes = [Probe(port, path) for path in probe_paths]
    for probe in probes:
        probe.start()
    plan = cgen.Plan(
        port,
        rate,
        seconds,
        path=parts.path,
        body=body,
        max_connections=MAX_CONNECTIONS,
        preopen=PREOPEN,
        timeout_s=TIMEOUT_S,
    )
    try:
        run = cgen.run(plan, binary)
    finally:
        for probe in probes:
            probe.running = False
        for probe in probes:
            probe.join()
    return Load.from_c(run, {probe.path: probe.seconds for probe in probes}, shed_status)


def generator() -> Path | None:
    """The C generator, built if needed; None (with a warning) if there is no C compiler."""
    try:
        return cgen.build()
    except cgen.CompilerNotFound as error:
        print(
            f"WARNING: {error}. Falling back to the asyncio generator, which saturates "
            "itself long before 4x on a small machine: watch its lag column."
        )
        return None
