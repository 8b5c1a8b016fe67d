"""Prometheus metrics, in a registry of the app's own (so several apps in one process don't clash).

Every series is labelled by variant and runtime (``unknown`` for names not served).
Latency buckets reach down to 50 µs: a served MNIST model answers in about a millisecond, and
Prometheus' default buckets (5 ms and up) would put every request in the first one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.in_flight = Gauge(
            "mnist_serve_in_flight",
            "Predict requests being handled now (all models).",
            registry=self.registry,
        )
