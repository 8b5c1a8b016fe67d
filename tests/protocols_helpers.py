"""What the protocol tests (test_protocols_http.py, test_protocols_grpc.py) share: a real server
with its gRPC endpoint on (a module-scoped fixture, overriding conftest's ``server``: each module
gets its own), four real test digits, and ``/predict``'s answer that every protocol's must equal.
A test module uses the fixtures by importing them: ``from tests.protocols_helpers import digits
as digits, server as server``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import Server, run_server
from training.data import Mnist, to_model_input

MODELS = ["depthwise", "original@onnx", "depthwise@litert"]
TOLERANCE = 1e-6  # the same model on the same runtime: the same numbers, bar JSON rounding


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server with its gRPC endpoint on."""
    log = tmp_path_factory.mktemp("protocols") / "server.log"
    with run_server(models_dir, log, grpc=True) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def digits(mnist: Mnist) -> tuple[np.ndarray, np.ndarray]:
    """Four real test digits as model input, and their labels."""
    return to_model_input(mnist.x_test[10:14]), mnist.y_test[10:14]


def native(server: Server, model: str, images: np.ndarray) -> np.ndarray:
    """What ``/predict`` answers for ``images``."""
    response = httpx.post(
        f"{server.url}/predict/{model}", json={"images": images[..., 0].tolist()}, timeout=30
    )
    assert response.status_code == 200, response.text
    return np.array([p["probabilities"] for p in response.json()["predictions"]])
