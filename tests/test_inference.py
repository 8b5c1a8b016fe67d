"""service.inference.Inference: how a request's end is counted (a unit test of that piece)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from service.errors import BadRequest
from service.inference import Inference
from service.metrics import Metrics


def counted(metrics: Metrics, status: int) -> float:
    value = metrics.registry.get_sample_value(
        "mnist_serve_requests_total",
        {"variant": "unknown", "runtime": "unknown", "status": str(status)},
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("error", "status"),
    [(asyncio.CancelledError(), 499), (BadRequest("no"), 400), (RuntimeError("bug"), 500)],
)
def test_how_a_request_ends_is_its_status(error: BaseException, status: int) -> None:
    """A cancelled call (a gRPC client that gave up) is 499, not a server error."""
    metrics = Metrics()
    registry: Any = SimpleNamespace(in_flight=0, metrics=metrics)
    with pytest.raises(type(error)), Inference(registry):
        raise error
    assert counted(metrics, status) == 1.0 and registry.in_flight == 0
