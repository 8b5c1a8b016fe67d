"""MLPerf LoadGen's Server scenario against our HTTP service: the one module that knows LoadGen.

LoadGen (``mlcommons-loadgen``, pinned in pyproject.toml) schedules queries at Poisson times at
the asked rate, runs until both its minimum duration and its minimum query count are met, and
judges the run: VALID only when the latency percentile is within the bound *and* its early
stopping test says the number of queries supports that at 99 % confidence. Its verdict comes
out as log files; :func:`read_detail_log` turns them into a typed
:class:`loadtests.openloop_results.LoadGenVerdict`, and
nothing else in the project reads LoadGen's text or calls its API.

The system under test (:class:`_HttpSut`) is ours: LoadGen calls ``issue_queries`` on its own
thread; each query's request goes to an asyncio loop on a background thread, which POSTs it over
the keep-alive pool of :class:`loadtests.openloop.ConnectionPool` and tells LoadGen when the
answer is complete. A failed request (any status but 200, a lost connection, or no answer within
``TIMEOUT_S``) is counted, and its completion is held back until the latency bound has passed,
so LoadGen counts it over the bound: a server cannot meet the target by refusing work.

:func:`min_queries` is LoadGen's early-stopping rule (loadgen/early_stopping.cc) in Python: the
fewest queries for which ``overlatency`` queries over the bound still let LoadGen say, at
``confidence``, that the ``percentile`` is within it (p99 at 99 %, none over: 459).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtests import steal
from loadtests.openloop import ConnectionPool, Sample, encode_request
from loadtests.openloop_results import LoadGenVerdict, Slo
from loadtests.results import Percentiles
from loadtests.runner import LoadTestError

VERSION = "6.0.17"  # the mlcommons-loadgen whose logs these readers are tested on
CONFIDENCE = 0.99  # LoadGen's early-stopping confidence (fixed in LoadGen)
TIMEOUT_S = 10.0  # a request unanswered this long is a failure
DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"
_NEEDS = re.compile(r"need to run at least (\d+) more queries")
_LEVELS = {"50.00": "p50", "90.00": "p90", "95.00": "p95", "99.00": "p99", "99.90": "p999"}


class LoadGenError(LoadTestError):
    """LoadGen is missing, or its logs do not hold a result (the command line says which)."""


@dataclass(frozen=True)
class LoadGenRun:
    """One LoadGen run: its verdict, what our system under test saw, where the logs are."""

    result: LoadGenVerdict
    ok: int  # answers with status 200
    failed: int  # other statuses, lost connections, timeouts
    sut_lag_p99_ms: float  # from LoadGen's issue call to the request's write on a socket
    folder: Path  # LoadGen's logs: mlperf_log_summary.txt, mlperf_log_detail.txt
    cpu_steal: float | None = None  # the CPU the hypervisor took meanwhile (loadtests/steal.py)

    @property
    def summary(self) -> Path:
        """LoadGen's own summary of the run."""
        return self.folder / SUMMARY_LOG


def read_detail_log(path: Path) -> LoadGenVerdict:
    """LoadGen's verdict from its detail log (``:::MLLOG {json}`` lines, key and value)."""
    values: dict[str, Any] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError as err:
        raise LoadGenError(f"cannot read LoadGen's log {path}: {err.strerror or err}") from err
    for line in lines:
        if line.startswith(b":::MLLOG "):
            entry = orjson.loads(line[len(b":::MLLOG ") :])
            values[entry["key"]] = entry["value"]
    if "result_validity" not in values:
        raise LoadGenError(f"{path} holds no LoadGen result (did the run end?)")
    needs = _NEEDS.search(str(values.get("early_stopping_result", "")))

    def ms(key: str) -> float:
        return float(values.get(key, math.nan)) / 1e6

    levels = {name: ms(f"result_{level}_percentile_latency_ns") for level, name in _LEVELS.items()}
    return LoadGenVerdict(
        valid=values["result_validity"] == "VALID",
        latency_met=bool(values["result_perf_constraints_met"]),
        early_stopping_met=bool(values["early_stopping_met"]),
        min_duration_met=bool(values["result_min_duration_met"]),
        min_queries_met=bool(values["result_min_queries_met"]),
        queries=int(values["result_query_count"]),
        overlatency=int(values["result_overlatency_query_count"]),
        needs_more=int(needs.group(1)) if needs else None,
        target_qps=float(values.get("effective_target_qps", math.nan)),
        scheduled_qps=float(values["result_scheduled_samples_per_sec"]),
        completed_qps=float(values["result_completed_samples_per_sec"]),
        latency_ms=Percentiles(**levels),
        p97_ms=ms("result_97.00_percentile_latency_ns"),
        mean_ms=ms("result_mean_latency_ns"),
        max_ms=ms("result_max_latency_ns"),
        version=str(values.get("loadgen_version", "")).split(" ")[0],
    )


def _binomial_cdf(t: int, n: int, p_over: float) -> float:
    """P(at most ``t`` of ``n`` queries are over the bound), each over with ``p_over``."""
    log_p, log_q = math.log(p_over), math.log1p(-p_over)
    terms = [
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * log_p
        + (n - k) * log_q
        for k in range(t + 1)
    ]
    top = max(terms)
    return math.exp(top) * sum(math.exp(x - top) for x in terms)


def min_queries(percentile: float, overlatency: int = 0, confidence: float = CONFIDENCE) -> int:
    """The fewest queries with which ``overlatency`` of them over the bound still pass LoadGen's
    early stopping for ``percentile`` (0-1): the smallest n such that, were the true share over
    the bound 1 - percentile, seeing at most ``overlatency`` over it would have probability
    below 1 - confidence (LoadGen's ``MinPassingQueriesFinder``, tolerance 0)."""
    if not 0 < percentile < 1 or overlatency < 0:
        raise ValueError("percentile in (0, 1), overlatency >= 0")
    p_over = 1 - percentile
    low, high = overlatency + 1, overlatency + 1
    while _binomial_cdf(overlatency, high, p_over) >= 1 - confidence:
        low, high = high, high * 2
    while low < high:  # the smallest n in [low, high] that passes
        middle = (low + high) // 2
        if _binomial_cdf(overlatency, middle, p_over) < 1 - confidence:
            high = middle
        else:
            low = middle + 1
    return low


class _HttpSut:
    """LoadGen's system under test: each query a POST of one payload to ``url`` (module doc)."""

    def __init__(self, url: str, payloads: list[bytes], bound_s: float, connections: int) -> None:
        import mlperf_loadgen as lg

        self.lg = lg
        self.requests = [encode_request(url, "POST", body, "application/json") for body in payloads]
        self.bound_s = bound_s
        self.outstanding: dict[int, float] = {}  # LoadGen's sample id -> when it was issued
        self.ok = self.failed = 0
        self.lags: list[float] = []
        self.issued: collections.deque[tuple[float, list[tuple[int, int]]]] = collections.deque()
        self.draining = False  # a drain is scheduled on the loop and has not started
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pool = ConnectionPool(url, self._answered)
        self._call(self.pool.open(connections))
        self.watchdog = self._call(self._start_watching())

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def issue(self, samples: list[Any]) -> None:
        """LoadGen's issue callback (its thread): hand the queries to the event loop. One
        wake-up of the loop serves every query issued until it runs (:meth:`_drain`), not one
        per query: a wake-up is a system call and a pass of the loop."""
        self.issued.append((time.perf_counter(), [(s.id, s.index) for s in samples]))
        if not self.draining:
            self.draining = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self.draining = False  # first: a query issued from here on schedules another drain
        while self.issued:
            issued, queries = self.issued.popleft()
            self._send(queries, issued)

    def flush(self) -> None:
        """LoadGen's flush callback: nothing is held back."""

    def _send(self, queries: list[tuple[int, int]], issued: float) -> None:
        for query, index in queries:
            self.outstanding[query] = issued
            self.pool.send(self.requests[index], issued, query)

    def _answered(self, sample: Sample, tag: object) -> None:
        if not isinstance(tag, int) or (issued := self.outstanding.pop(tag, None)) is None:
            return  # a warm-up request, or one already given up on
        if sample.sent:
            self.lags.append(sample.sent - issued)
        if sample.status == 200:
            self.ok += 1
            self._complete(tag)
        else:
            self._fail(tag, issued)

    def _fail(self, query: int, issued: float) -> None:
        """Count a failure; complete it only once the bound has passed (over it for LoadGen)."""
        self.failed += 1
        wait = issued + self.bound_s + 0.002 - time.perf_counter()
        if wait > 0:
            self.loop.call_later(wait, self._complete, query)
        else:
            self._complete(query)

    def _complete(self, query: int) -> None:
        self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(query, 0, 0)])

    async def _start_watching(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._watch())

    async def _shut_down(self) -> None:
        self.watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.watchdog
        self.pool.close()

    async def _watch(self) -> None:
        """Give up on requests unanswered for TIMEOUT_S (LoadGen would wait for ever)."""
        while True:
            await asyncio.sleep(0.5)
            late = time.perf_counter() - TIMEOUT_S
            for query, issued in list(self.outstanding.items()):
                if issued < late:
                    del self.outstanding[query]
                    self._fail(query, issued)

    async def _warm_up(self, rate: float, seconds: float) -> None:
        for index in range(round(rate * seconds)):
            self.pool.send(self.requests[index % len(self.requests)], time.perf_counter())
            await asyncio.sleep(1 / rate)
        await asyncio.sleep(0.2)

    def warm_up(self, rate: float, seconds: float) -> None:
        """Requests at ``rate`` for ``seconds``, not shown to LoadGen (connections, batcher)."""
        if seconds > 0:
            self._call(self._warm_up(rate, seconds))

    def close(self) -> None:
        """Stop the loop and its connections."""
        self._call(self._shut_down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def run_server_scenario(
    url: str,
    payloads: list[bytes],
    rate: float,
    slo: Slo,
    folder: Path,
    *,
    min_duration_s: float,
    min_queries: int,
    seed: int = 0,
    warmup_s: float = 0.0,
    connections: int = 256,
) -> LoadGenRun:
    """LoadGen's Server scenario at ``rate`` queries/s against ``url`` (POSTs of ``payloads``,
    chosen by LoadGen), judged against ``slo``; its logs go to ``folder``."""
    try:
        import mlperf_loadgen as lg
    except ImportError as err:
        raise LoadGenError(
            "the open-loop mode needs MLPerf LoadGen: pip install mlcommons-loadgen"
        ) from err
    folder.mkdir(parents=True, exist_ok=True)
    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Server
    settings.mode = lg.TestMode.PerformanceOnly
    settings.server_target_qps = rate
    settings.server_target_latency_ns = round(slo.limit_ms * 1e6)
    settings.server_target_latency_percentile = slo.percentile / 100
    settings.min_duration_ms = round(min_duration_s * 1000)
    settings.min_query_count = min_queries
    settings.schedule_rng_seed = seed
    settings.sample_index_rng_seed = seed
    logs = lg.LogSettings()
    logs.log_output.outdir = str(folder)
    logs.log_output.copy_summary_to_stdout = False
    logs.enable_trace = False
    sut = _HttpSut(url, payloads, slo.limit_ms / 1000, connections)
    before = steal.read()
    try:
        sut.warm_up(rate, warmup_s)
        handle = lg.ConstructSUT(sut.issue, sut.flush)
        library = lg.ConstructQSL(len(payloads), len(payloads), lambda _: None, lambda _: None)
        try:
            lg.StartTestWithLogSettings(handle, library, settings, logs)
        finally:
            lg.DestroyQSL(library)
            lg.DestroySUT(handle)
    finally:
        sut.close()
    stolen = steal.share(before, steal.read())
    lags = sorted(sut.lags)
    lag = lags[min(len(lags) - 1, int(0.99 * len(lags)))] * 1000 if lags else math.nan
    result = read_detail_log(folder / DETAIL_LOG)
    return LoadGenRun(result, sut.ok, sut.failed, round(lag, 3), folder, stolen)
