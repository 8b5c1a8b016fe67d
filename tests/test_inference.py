"""service.inference.Inference: how a request's end is counted (a unit test of that piece)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from service.errors import INTERNAL_DETAIL, BadRequest
from service.inference import Inference
from service.metrics import Metrics


def counted(metrics: Metrics, status: int) -> float:
    metrics.flush()
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


def _bug(*_: object) -> None:
    raise RuntimeError("a bug, at /work/secret/path")


@pytest.mark.parametrize(
    ("api", "body"),
    [
        ("native", {"error": "internal_error", "detail": INTERNAL_DETAIL}),
        ("tfserving", {"error": INTERNAL_DETAIL}),
        ("kserve", {"error": INTERNAL_DETAIL}),
    ],
)
def test_a_bug_is_a_500_in_the_api_own_error_shape(
    api: str, body: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """An exception that is not a ServeError (a bug) is logged, counted 500 and answered in the
    API's own error shape, with nothing of it leaked."""
    import importlib
    import json

    from starlette.requests import Request

    from service.adapter import Target, infer

    adapter = {"native": "NATIVE", "tfserving": "TF_SERVING", "kserve": "KSERVE"}[api]
    metrics = Metrics()
    registry: Any = SimpleNamespace(in_flight=0, metrics=metrics, get=_bug)
    request = Request({"type": "http", "method": "POST", "path": "/x", "headers": []})
    module = importlib.import_module(f"service.{api}")
    answer = asyncio.run(infer(getattr(module, adapter), registry, request, Target("depthwise")))
    assert answer.status_code == 500 and json.loads(bytes(answer.body)) == body
    assert counted(metrics, 500) == 1.0 and registry.in_flight == 0
    assert "a bug, at /work/secret/path" in caplog.text  # in the log, not in the answer
