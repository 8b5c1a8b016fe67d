"""Open-loop load against a latency target: latency per arrival rate, and the highest rate each
model sustains within the target (MLPerf's Server scenario; Triton Model Analyzer's "best
config under p99 <= X").

``mnist-serve loadtest --arrival poisson --rates 200,400,800 --slo p99=20ms`` runs
:func:`run_sweep`: for each model, requests arrive at each rate (Poisson gaps, real MNIST test
digits as JSON, sent by :mod:`loadtests.openloop`, latency from the scheduled send time), then
a :class:`RateSearch` narrows the highest rate meeting the SLO down by bisection. A request that
fails (any status but 200, or no answer) counts as infinitely slow, so a server cannot meet the
target by refusing work. Each run has a warm-up and at least 1,000 measured requests, and a run
that misses is repeated and judged on both runs' requests together, so one stall on a noisy
machine does not end a search. Results go to ``openloop.json`` in the run folder;
:mod:`loadtests.report` renders them.

Why our own generator and not Locust or MLPerf LoadGen: Locust's users are closed loop (a user
waits for its answer; even ``constant_throughput`` only paces each user), so an overloaded
server slows its own load and the queueing goes unmeasured; LoadGen does the scheduling right but
drives a callback in-process, so the HTTP client around it would be ours anyway, and its
C++ package adds a build for little. ``loadtests/openloop.py`` is 250 lines of asyncio, tested
against a server with a known delay (tests/test_openloop.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from loadtests.openloop import OpenLoopResult, run_open_loop
from loadtests.protocols import Protocol, encode
from loadtests.results import OpenLoopRecord, Percentiles, RatePoint, Slo
from loadtests.runner import machine

DIGITS = 256  # distinct test digits cycled through
MIN_REQUESTS = 1000  # measured per run at least: a p99 then rests on the 10 slowest
WARMUP_S = 0.5  # sent before each run and not measured (connections, caches, the batcher)


def rate_point(model: str, result: OpenLoopResult, slo: Slo, runs: int = 1) -> RatePoint:
    """Summarize one open-loop run (or ``runs`` runs at one rate, pooled)."""
    answered = [sample.latency * 1000 for sample in result.samples if sample.status == 200]
    return RatePoint(
        model=model,
        rate=result.rate,
        requests=len(result.samples),
        ok=result.statuses()[200],
        goodput_rps=round(result.per_second(200), 1),
        latency_ms=Percentiles.of(answered),
        slo_ms=round(slo.latency_ms(result), 3),
        met=slo.met(result),
        lag_p99_ms=round(result.lag_ms(99), 3),
        runs=runs,
    )


class RateSearch:
    """One model's search for its highest rate within the SLO, one run at a time.

    The given rates are tried in increasing order until one misses; then the gap between the
    highest rate that met the SLO (0 if none) and the lowest that missed is halved
    ``bisections`` times. If every given rate meets it, the answer is the highest (a lower
    bound). One run at a time, so that :func:`run_sweep` can interleave the models' searches.
    """

    def __init__(self, rates: Sequence[float], bisections: int = 4) -> None:
        if not rates or min(rates) <= 0:
            raise ValueError("rates must be positive")
        self.ladder = sorted(rates)
        self.bisections = bisections
        self.passed, self.failed = 0.0, math.inf
        self.runs: list[RatePoint] = []

    def next_rate(self) -> float | None:
        """The rate to run next, or None when the search is over."""
        if math.isinf(self.failed):
            return next((r for r in self.ladder if r > self.passed), None)
        bisected = sum(1 for p in self.runs if p.rate not in self.ladder)
        middle = round((self.passed + self.failed) / 2, 1)
        if bisected >= self.bisections or middle in (self.passed, self.failed):
            return None
        return middle

    def record(self, point: RatePoint) -> None:
        """Take in the run at :meth:`next_rate`."""
        self.runs.append(point)
        if point.met:
            self.passed = max(self.passed, point.rate)
        else:
            self.failed = min(self.failed, point.rate)


def find_max_rate(
    measure: Callable[[float], RatePoint], rates: Sequence[float], bisections: int = 4
) -> tuple[float, list[RatePoint]]:
    """The highest rate whose run meets the SLO, and every run made to find it (one model's
    :class:`RateSearch` run to its end)."""
    search = RateSearch(rates, bisections)
    while (rate := search.next_rate()) is not None:
        search.record(measure(rate))
    return search.passed, search.runs


def bodies(mnist: str | None, model: str) -> list[bytes]:
    """JSON bodies of real MNIST test digits for ``model`` (the same digits for every model)."""
    from training.data import load_mnist

    data = load_mnist(mnist or None)
    picks = np.random.default_rng(0).choice(len(data.x_test), size=DIGITS, replace=False)
    return [encode(Protocol.NATIVE, "json", model, data.x_test[i]).body for i in picks]


def run_seconds(rate: float, seconds: float, min_requests: int = MIN_REQUESTS) -> float:
    """How long to run at ``rate``: ``seconds``, or longer so that at least ``min_requests``
    are measured (a p99 over fewer than ~1,000 requests hangs on a handful of them)."""
    return max(seconds, min_requests / rate)


def measure_rate(
    url: str,
    model: str,
    payloads: list[bytes],
    rate: float,
    seconds: float,
    slo: Slo,
    min_requests: int = MIN_REQUESTS,
) -> RatePoint:
    """One run at ``rate`` after a warm-up; if it misses the SLO, a second run, and the verdict
    on both runs' requests pooled: one stall on a busy machine does not end a search, a real
    limit misses twice."""

    def run(seed: int) -> OpenLoopResult:
        duration = run_seconds(rate, seconds, min_requests)
        sent = run_open_loop(
            f"{url}/predict/{model}",
            payloads,
            rate,
            duration,
            poisson=True,
            seed=seed,
            warmup_s=WARMUP_S,
        )
        return asyncio.run(sent)

    first = run(seed=0)
    if slo.met(first):
        return rate_point(model, first, slo)
    second = run(seed=1)
    pooled = OpenLoopResult(rate, first.seconds + second.seconds, first.samples + second.samples)
    return rate_point(model, pooled, slo, runs=2)


def run_sweep(
    url: str,
    models: Sequence[str],
    rates: Sequence[float],
    seconds: float,
    slo: Slo,
    out_dir: Path,
    mnist: str | None = None,
    on_point: Callable[[RatePoint], None] | None = None,
    min_requests: int = MIN_REQUESTS,
) -> OpenLoopRecord:
    """Every model's search for its highest rate within ``slo``, interleaved round by round
    (alternating the order, as the closed loop does, so that drift on the machine does not
    favour one model); writes openloop.json (the report renders it)."""
    started = datetime.now(UTC)
    payloads = {model: bodies(mnist, model) for model in models}
    searches = {model: RateSearch(rates) for model in models}
    order = list(models)
    while True:
        due = [(m, rate) for m in order if (rate := searches[m].next_rate()) is not None]
        if not due:
            break
        for model, rate in due:
            point = measure_rate(url, model, payloads[model], rate, seconds, slo, min_requests)
            searches[model].record(point)
            if on_point is not None:
                on_point(point)
        order.reverse()
    record = OpenLoopRecord(
        slo=slo,
        seconds_per_run=seconds,
        rates=list(rates),
        models=list(models),
        max_rate={m: searches[m].passed for m in models},
        points=[p for m in models for p in searches[m].runs],
        created_at=started.isoformat(timespec="seconds"),
        machine=machine(),
        min_requests=min_requests,
        warmup_s=WARMUP_S,
    )
    record.save(out_dir)
    return record
