"""service.metrics: the tallies that stand in for prometheus-client's per-request observe()
(a unit test of that piece; tests/test_engine.py checks the sums over several processes)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram

from service.metrics import FLUSH_S, LATENCY_BUCKETS, MULTIPROC_ENV, Metrics, Tally
from tests.helpers import REPO


def test_a_flushed_tally_reads_exactly_like_observe() -> None:
    """Values on, between, below and beyond the bounds land in the same buckets with the same
    sum (this is the check on prometheus-client's private attributes the tally writes)."""
    values = [*LATENCY_BUCKETS, 0.0, -1.0, 1e9, *(random.Random(0).random() for _ in range(500))]
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    one = Histogram("t", "t", ["m"], buckets=LATENCY_BUCKETS, registry=direct).labels("a")
    tally = Tally(Histogram("t", "t", ["m"], buckets=LATENCY_BUCKETS, registry=tallied).labels("a"))
    for i, value in enumerate(values):
        one.observe(value)
        tally.observe(value)
        if i % 97 == 0:
            tally.flush()  # several flushes add up
    tally.flush()
    assert samples(tallied) == pytest.approx(samples(direct), rel=1e-12)  # sums added in bulk
    assert samples(tallied)[("t_count", (("m", "a"),))] == len(values)


def test_a_nan_is_not_tallied() -> None:
    """A NaN would poison the histogram's sum for good: the tally drops it."""
    tallied = CollectorRegistry()
    tally = Tally(Histogram("t", "t", ["m"], buckets=LATENCY_BUCKETS, registry=tallied).labels("a"))
    tally.observe(float("nan"))
    tally.observe(0.5)
    tally.flush()
    assert samples(tallied)[("t_sum", (("m", "a"),))] == 0.5
    assert samples(tallied)[("t_count", (("m", "a"),))] == 1


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but the creation times."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample as prometheus-client has it now (without flushing)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_observations_reach_prometheus_within_the_flush_period() -> None:
    """On an event loop, answered and served requests are handed over by one timer, not per
    request; a scrape hands over at once."""
    metrics = Metrics()
    labels = {"variant": "depthwise", "runtime": "onnx"}

    async def scenario() -> None:
        series = metrics.model("depthwise", "onnx")
        for _ in range(3):
            series.served(0.0002, 0.001)
            series.answered(200, 0.002)
        series.answered(503, 0.0001)
        assert sample(metrics, "mnist_serve_requests_total", status="200", **labels) == 0
        await asyncio.sleep(2 * FLUSH_S)
        assert sample(metrics, "mnist_serve_requests_total", status="200", **labels) == 3
        assert sample(metrics, "mnist_serve_requests_total", status="503", **labels) == 1
        assert sample(metrics, "mnist_serve_model_seconds_count", **labels) == 3
        assert abs(sample(metrics, "mnist_serve_queue_seconds_sum", **labels) - 0.0006) < 1e-12
        assert sample(metrics, "mnist_serve_request_seconds_count", **labels) == 4
        series.answered(200, 0.002)
        text = (await metrics.scrape()).decode()
        assert (
            'mnist_serve_requests_total{runtime="onnx",status="200",variant="depthwise"} 4.0'
            in text
        )

    asyncio.run(scenario())


CHILD = """
import asyncio, sys
from service.metrics import Metrics

async def main():
    series = Metrics().model("depthwise", "onnx")
    for _ in range(3):
        series.answered(200, 0.002)
    print("answered", flush=True)  # tallied, its flush timer running
    await asyncio.sleep(5)

asyncio.run(main())
"""


def test_a_scrape_counts_what_another_process_answered_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several worker processes: a scrape waits for the others' flushes, so a request that
    another worker answered just before /metrics was asked is counted."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    metrics = Metrics()  # this process's scrape reads every process's files
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "answered\n"
        text = asyncio.run(metrics.scrape()).decode()
    finally:
        child.kill()
        child.wait()
    assert 'mnist_serve_requests_total{runtime="onnx",status="200",variant="depthwise"} 3.0' in text
