"""Prometheus metrics, in a registry of the app's own (so several apps in one process don't clash).

With several worker processes (``service.supervisor``) every process writes its series to
files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when the
library is imported, so the supervisor sets the variable before starting any process), and
``/metrics`` in any process adds up all of them; the in-flight gauge then reads the server-wide
count that admission keeps in shared memory.

Every series is labelled by variant and runtime (``unknown`` for names not served).
Latency buckets reach down to 50 µs: a served MNIST model answers in about a millisecond, and
Prometheus' default buckets (5 ms and up) would put every request in the first one.
"""

from __future__ import annotations

import os
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

    def exposition(self) -> bytes:
        """The text format for /metrics: this process's series, or every process's."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(_InFlight(self.in_flight_count))
        return generate_latest(registry)


class ModelSeries:
    """The per-request series of one model (variant, runtime), bound to their labels."""

    def __init__(self, metrics: Metrics, variant: str, runtime: str) -> None:
        self._requests = metrics.requests
        self._labels = (variant, runtime)
        self._by_status: dict[int, Any] = {}
        self.request_seconds = metrics.request_seconds.labels(variant, runtime)
        self.queue_seconds = metrics.queue_seconds.labels(variant, runtime)
        self.model_seconds = metrics.model_seconds.labels(variant, runtime)

    def count(self, status: int) -> None:
        """Count one request answered with ``status``."""
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._requests.labels(*self._labels, str(status))
        counter.inc()


class _InFlight:
    """The in-flight gauge, read at scrape time (multiprocess mode)."""

    def __init__(self, count: Callable[[], float]) -> None:
        self.count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample: the count now."""
        yield GaugeMetricFamily("mnist_serve_in_flight", IN_FLIGHT_HELP, value=self.count())
