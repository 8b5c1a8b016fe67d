"""Open-loop load against a latency target: latency per arrival rate, and the highest rate each
model sustains within the target (MLPerf's Server scenario; Triton Model Analyzer's "best
config under p99 <= X").

``mnist-serve loadtest --arrival poisson --rates 200,400,800 --slo p99=20ms`` runs
:func:`run_sweep`: for each model, MLPerf LoadGen's Server scenario at each rate
(:mod:`loadtests.loadgen`: LoadGen's Poisson schedule, its minimum duration and query count,
real MNIST test digits POSTed as JSON, latency from LoadGen's scheduled issue time), then a
:class:`RateSearch` narrows the highest rate LoadGen judges VALID down by bisection. LoadGen's
verdict decides each rate: VALID needs the percentile within the bound *and* its early-stopping
test passed. A rate not VALID is run once more and the second verdict stands: as it was when
INVALID (one stall on a busy machine must not end a search), with as many requests as LoadGen
asks for when undecided (the percentile met on too few requests); still undecided, it "needs N
more requests" and does not count as met. (An INVALID run followed by an undecided one, whose
percentile met the bound on the minimum count, gets a third run with the count LoadGen asks
for: the first was a stall, and the second only too short.) A failed request counts as over
the bound, so a server cannot meet the target by refusing work. When every rate tried is met,
the search goes on upward by doubling (up to the ceiling: by default the client's own,
calibrated at the start by :mod:`loadtests.client_ceiling`) so that the models are separated
rather than tied at the top rate. Results go to ``openloop.json`` and LoadGen's logs to
``loadgen/`` in the run folder; :mod:`loadtests.report` renders them.

Locust stays the closed-loop engine (its users wait for answers). The asyncio generator
(:mod:`loadtests.openloop`) stays only where LoadGen cannot serve: ``scripts/bench_overload.py``,
which probes /healthz and /metrics on its event loop during the load and offers constant
arrivals. On rate LoadGen with our Python client keeps up with it (up to 6,000 requests/s against
a null server, docs/benchmarks.md, I).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from loadtests import defaults, loadgen
from loadtests.loadgen import LoadGenRun
from loadtests.openloop_results import (
    ClientCeiling,
    LoadGenVerdict,
    OpenLoopRecord,
    RatePoint,
    Slo,
)
from loadtests.protocols import Protocol, encode
from loadtests.runner import machine, read_digits

DIGITS = 256  # distinct test digits, LoadGen's query sample library
WARMUP_S = 0.5  # sent before each run and not shown to LoadGen (connections, the batcher)
# An undecided run is run again only if LoadGen asks for at most this many times the minimum.
MAX_RERUN_FACTOR = 10
LOADGEN_DIR = "loadgen"


def linked(run: LoadGenRun, out_dir: Path) -> LoadGenVerdict:
    """LoadGen's verdict with its summary's path relative to ``out_dir`` (the run folder)."""
    try:
        summary = run.summary.relative_to(out_dir).as_posix()
    except ValueError:
        summary = run.summary.as_posix()
    return dataclasses.replace(run.result, summary=summary)


def rate_point(
    model: str,
    rate: float,
    run: LoadGenRun,
    slo: Slo,
    out_dir: Path,
    first: LoadGenRun | None = None,
    runs: int | None = None,
) -> RatePoint:
    """One rate's point from LoadGen's run (``first``: the first run at this rate, not VALID;
    ``runs``: how many ran; by default 1 without ``first`` and 2 with it)."""
    verdict = linked(run, out_dir)
    share_ok = run.ok / verdict.queries if verdict.queries else 0.0
    return RatePoint(
        model=model,
        rate=rate,
        requests=verdict.queries,
        ok=run.ok,
        goodput_rps=round(verdict.completed_qps * share_ok, 1),
        latency_ms=verdict.latency_ms,
        slo_ms=round(verdict.percentile_ms(slo.percentile), 3),
        met=verdict.valid,
        lag_p99_ms=run.sut_lag_p99_ms,
        runs=runs if runs is not None else (1 if first is None else 2),
        loadgen=verdict,
        first=None if first is None else linked(first, out_dir),
        cpu_steal=run.cpu_steal,
    )


class RateSearch:
    """One model's search for its highest rate within the SLO, one run at a time.

    The given rates are tried in increasing order until one misses; then the gap between the
    highest rate that met the SLO (0 if none) and the lowest that missed is halved
    ``bisections`` times. If every given rate is met, the rate doubles (up to ``ceiling``;
    None: not at all) until one misses: a search that ends with every rate met has found only
    a lower bound, and two models both "at the top rate" are not tied. One run at a time, so
    that :func:`run_sweep` can interleave the models' searches.
    """

    def __init__(
        self, rates: Sequence[float], bisections: int = 4, ceiling: float | None = None
    ) -> None:
        if not rates or min(rates) <= 0:
            raise ValueError("rates must be positive")
        self.ladder = sorted(rates)
        self.bisections = bisections
        self.ceiling = ceiling
        self.passed, self.failed = 0.0, math.inf
        self.runs: list[RatePoint] = []
        self.extended: list[float] = []  # rates above the ladder, tried because all were met

    def next_rate(self) -> float | None:
        """The rate to run next, or None when the search is over."""
        if math.isinf(self.failed):
            rate = next((r for r in self.ladder if r > self.passed), None)
            if rate is None and self.ceiling is not None and self.passed < self.ceiling:
                rate = min(self.passed * 2, self.ceiling)
                self.extended.append(rate)
            return rate
        bisected = sum(1 for p in self.runs if p.rate not in self.ladder + self.extended)
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
    measure: Callable[[float], RatePoint],
    rates: Sequence[float],
    bisections: int = 4,
    ceiling: float | None = None,
) -> tuple[float, list[RatePoint]]:
    """The highest rate whose run meets the SLO, and every run made to find it (one model's
    :class:`RateSearch` run to its end)."""
    search = RateSearch(rates, bisections, ceiling)
    while (rate := search.next_rate()) is not None:
        search.record(measure(rate))
    return search.passed, search.runs


def under_ceiling(rates: Sequence[float], ceiling: float | None) -> list[float]:
    """A built-in ladder (explore's, tune's) cut at the client's ceiling, since a rate above
    it would measure the client; the ceiling itself when it is below every rate (None or 0:
    the ladder as given)."""
    if not ceiling:
        return list(rates)
    return [rate for rate in rates if rate <= ceiling] or [ceiling]


def bodies(mnist: str | None, model: str) -> list[bytes]:
    """JSON bodies of real MNIST test digits for ``model`` (the same digits for every model);
    LoadTestError if MNIST cannot be read."""
    data = read_digits(mnist)
    picks = np.random.default_rng(0).choice(len(data.x_test), size=DIGITS, replace=False)
    return [encode(Protocol.NATIVE, "json", model, data.x_test[i]).body for i in picks]


def measure_rate(
    url: str,
    model: str,
    payloads: list[bytes],
    rate: float,
    seconds: float,
    slo: Slo,
    min_requests: int = defaults.MIN_REQUESTS,
    out_dir: Path | None = None,
) -> RatePoint:
    """LoadGen's Server scenario at ``rate`` (at least ``seconds`` and ``min_requests``) after
    a warm-up, its logs in ``out_dir/loadgen/``. A run that is not VALID is run once more and
    the second run's verdict stands: an INVALID one as it was (one stall on a busy machine must
    not end a search; a real limit fails twice; each VALID carries LoadGen's 99 % confidence,
    so two tries keep 98 %), an undecided one (the percentile met on too few requests) with
    the total LoadGen asks for, unless that is over MAX_RERUN_FACTOR times ``min_requests``.
    A second run that is undecided after an INVALID first (the first a stall, the second met
    the bound on too few requests) gets a third with the total LoadGen asks for, on the same cap.
    Without ``out_dir`` (explore, tune) the logs go to a temporary folder, removed after."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="loadgen-") as scratch:
            return measure_rate(
                url, model, payloads, rate, seconds, slo, min_requests, Path(scratch)
            )
    root = out_dir

    def run(queries: int, attempt: int) -> LoadGenRun:
        name = f"{model.replace('@', '-')}-{rate:g}" + (f"-{attempt}" if attempt > 1 else "")
        return loadgen.run_server_scenario(
            f"{url}/predict/{model}",
            payloads,
            rate,
            slo,
            root / LOADGEN_DIR / name,
            min_duration_s=seconds,
            min_queries=queries,
            seed=attempt - 1,
            warmup_s=WARMUP_S,
        )

    first = run(min_requests, 1)
    if first.result.valid:
        return rate_point(model, rate, first, slo, root)
    cap = MAX_RERUN_FACTOR * max(min_requests, 1)
    needed = first.result.queries + (first.result.needs_more or 0)
    if not first.result.undecided:  # INVALID: a real limit, or a stall on a busy machine
        needed = min_requests
    elif needed > cap:
        return rate_point(model, rate, first, slo, root)
    second = run(needed, 2)
    more = second.result.queries + (second.result.needs_more or 0)
    if not first.result.undecided and second.result.undecided and more <= cap:
        return rate_point(model, rate, run(more, 3), slo, root, first, runs=3)
    return rate_point(model, rate, second, slo, root, first)


def run_sweep(
    url: str,
    models: Sequence[str],
    rates: Sequence[float],
    seconds: float,
    slo: Slo,
    out_dir: Path,
    mnist: str | None = None,
    on_point: Callable[[RatePoint], None] | None = None,
    min_requests: int = defaults.MIN_REQUESTS,
    ceiling: float | None = None,
    client: ClientCeiling | None = None,
) -> OpenLoopRecord:
    """Every model's search for its highest rate within ``slo``, interleaved round by round
    (alternating the order, as the closed loop does, so that drift on the machine does not
    favour one model); writes openloop.json (the report renders it)."""
    started = datetime.now(UTC)
    payloads = {model: bodies(mnist, model) for model in models}
    searches = {model: RateSearch(rates, ceiling=ceiling) for model in models}
    order = list(models)
    while True:
        due = [(m, rate) for m in order if (rate := searches[m].next_rate()) is not None]
        if not due:
            break
        for model, rate in due:
            point = measure_rate(
                url, model, payloads[model], rate, seconds, slo, min_requests, out_dir
            )
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
        ceiling=ceiling,
        client=client,
        generator=f"MLPerf LoadGen {loadgen.VERSION}, Server scenario",
    )
    record.save(out_dir)
    return record
