"""Prometheus metrics, in a registry of the app's own (so several apps in one process don't clash).

With several worker processes (``service.supervisor``) every process writes its series to
files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when the
library is imported, so the supervisor sets the variable before starting any process), and
``/metrics`` in any process adds up all of them; the in-flight gauge then reads the server-wide
count that admission keeps in shared memory.

Every series is labelled by variant and runtime (``unknown`` for names not served).
Latency buckets reach down to 50 µs: a served MNIST model answers in about a millisecond, and
Prometheus' default buckets (5 ms and up) would put every request in the first one.

The per-request series are tallied in plain numbers (:class:`Tally`) and handed to
prometheus-client in bulk ``FLUSH_S`` later, by a timer on the event loop. Its ``observe()``
takes a lock and, in multiprocess mode, writes two memory-mapped values each time; four series
a request cost 10-16 µs there, the tallies about 1 (``make bench-metrics``, docs/benchmarks.md,
section P). A scrape flushes its own process at once and, with several processes, first waits
``SETTLE_S`` (five flush periods) for the others' timers: it counts every request answered
before it arrived unless a process's event loop was held up for longer than that.

This is the one module that knows prometheus-client's private ``Histogram`` attributes
(``_upper_bounds``, ``_buckets``, ``_sum``); pyproject.toml bounds its version, and
tests/test_metrics.py checks that a flushed tally reads exactly like ``observe()``.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
IN_FLIGHT_HELP = "Predict requests being handled now (all models)."

LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256, 512, 1024)
FLUSH_S = 0.02  # how long an observation may wait in its process before prometheus-client has it
SETTLE_S = 5 * FLUSH_S  # how long a multiprocess scrape waits for the other processes' flushes


class Metrics:
    """The service's instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mnist_serve_requests",
            "Predict requests by variant and HTTP status.",
            ["variant", "runtime", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "mnist_serve_request_seconds",
            "Server time of a predict request, from routing to response (decode, queue, model).",
            ["variant", "runtime"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "mnist_serve_queue_seconds",
            "Time a request waited for its batch to start.",
            ["variant", "runtime"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "mnist_serve_model_seconds",
            "Time of the model call that served a request (its whole batch).",
            ["variant", "runtime"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mnist_serve_batch_size",
            "Images per model call.",
            ["variant", "runtime"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.shed = Counter(
            "mnist_serve_shed",
            "Inference requests refused at once because the server was full (reason in_flight; "
            "those refused by a model's deadline are counted as status 503 in requests).",
            ["reason"],
            registry=self.registry,
        )
        self.version_swaps = Counter(
            "mnist_serve_version_swaps",
            "New model versions swapped in without a restart.",
            ["variant"],
            registry=self.registry,
        )
        self.version_refusals = Counter(
            "mnist_serve_version_refusals",
            "New model versions refused (failed to load, to warm up, or their runtimes "
            "disagreed); the serving version stayed.",
            ["variant"],
            registry=self.registry,
        )
        self._models: dict[tuple[str, str], ModelSeries] = {}
        self._pending: list[ModelSeries] = []
        self._timer: asyncio.TimerHandle | None = None
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.in_flight_count: Callable[[], float] = lambda: 0.0
        if self.multiprocess_dir is None:
            gauge = Gauge("mnist_serve_in_flight", IN_FLIGHT_HELP, registry=self.registry)
            gauge.set_function(lambda: self.in_flight_count())

    def model(self, variant: str, runtime: str) -> ModelSeries:
        """One model's series, looked up once (``labels()`` on every request costs)."""
        key = (variant, runtime)
        series = self._models.get(key)
        if series is None:
            series = self._models[key] = ModelSeries(self, variant, runtime)
        return series

    def pending(self, series: ModelSeries) -> None:
        """``series`` has observations to hand over: flush within ``FLUSH_S``.

        Called on the event loop's thread; without a running loop (a unit test), flush now.
        """
        self._pending.append(series)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Hand every tallied observation to prometheus-client (the app's lifespan also calls
        this at shutdown, so that no tally and no timer outlive the event loop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []  # taken first: a failure can't jam the list
        for series in pending:
            series.flush()

    async def scrape(self) -> bytes:
        """/metrics: every request answered before the call, whichever process answered it
        (unless that process's loop could not run its flush timer within ``SETTLE_S``)."""
        if self.multiprocess_dir is not None:
            await asyncio.sleep(SETTLE_S)  # the other processes' timers flush their tallies
        return self.exposition()

    def exposition(self) -> bytes:
        """The text format: this process's series, or every process's (as flushed so far)."""
        self.flush()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(_InFlight(self.in_flight_count))
        return generate_latest(registry)


class ModelSeries:
    """The per-request series of one model (variant, runtime), bound to their labels and
    tallied until :meth:`Metrics.flush`."""

    __slots__ = (
        "_flushed",
        "_labels",
        "_metrics",
        "_statuses",
        "model_seconds",
        "queue_seconds",
        "request_seconds",
        "waiting",
    )

    def __init__(self, metrics: Metrics, variant: str, runtime: str) -> None:
        self._metrics = metrics
        self._labels = (variant, runtime)
        self._statuses: dict[int, int] = {}  # status: requests since the last flush
        self._flushed: dict[int, Any] = {}  # status: its counter, bound once
        self.request_seconds = Tally(metrics.request_seconds.labels(variant, runtime))
        self.queue_seconds = Tally(metrics.queue_seconds.labels(variant, runtime))
        self.model_seconds = Tally(metrics.model_seconds.labels(variant, runtime))
        self.waiting = False  # in the Metrics' pending list

    def answered(self, status: int, seconds: float) -> None:
        """One request answered with ``status``, ``seconds`` after it was routed."""
        self._statuses[status] = self._statuses.get(status, 0) + 1
        self.request_seconds.observe(seconds)
        if not self.waiting:
            self.waiting = True
            self._metrics.pending(self)

    def served(self, queue_s: float, model_s: float) -> None:
        """Where a served request's time went: its wait for a batch, its batch's model call."""
        self.queue_seconds.observe(queue_s)
        self.model_seconds.observe(model_s)
        if not self.waiting:
            self.waiting = True
            self._metrics.pending(self)

    def flush(self) -> None:
        """Hand the tallies to prometheus-client."""
        self.waiting = False
        statuses, self._statuses = self._statuses, {}  # taken first: never handed over twice
        for status, count in statuses.items():
            counter = self._flushed.get(status)
            if counter is None:
                counter = self._metrics.requests.labels(*self._labels, str(status))
                self._flushed[status] = counter
            counter.inc(count)
        self.request_seconds.flush()
        self.queue_seconds.flush()
        self.model_seconds.flush()


class Tally:
    """A histogram's observations since its last flush, in plain numbers: a bisect and two
    additions each, where ``Histogram.observe`` takes a lock and (in multiprocess mode)
    writes two memory-mapped values."""

    __slots__ = ("_child", "bounds", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self.bounds: list[float] = list(child._upper_bounds)  # ends with +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """One observation: counted in the first bucket whose bound is >= ``value``. A NaN is
        dropped (``observe()`` would count it in no bucket and make the sum NaN for good)."""
        if value != value:
            return
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        """Add the tallied buckets and sum to the histogram, and start again from zero."""
        counts, total = self.counts, self.total
        if not any(counts):
            return
        self.counts, self.total = [0] * len(counts), 0.0  # taken first: never handed over twice
        for i, count in enumerate(counts):
            if count:
                self._child._buckets[i].inc(count)
        self._child._sum.inc(total)


class _InFlight:
    """The in-flight gauge, read at scrape time (multiprocess mode)."""

    def __init__(self, count: Callable[[], float]) -> None:
        self.count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample: the count now."""
        yield GaugeMetricFamily("mnist_serve_in_flight", IN_FLIGHT_HELP, value=self.count())
