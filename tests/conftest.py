"""Fixtures: the real MNIST, small real models trained once per session, a real server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from modelrepo.layout import ModelRepository, ModelVersion
from tests.helpers import REPO, SERVER_ARGS, Server, run_server
from training import catalog
from training.data import ENV_VAR, Mnist, load_mnist

if TYPE_CHECKING:
    from training.train import TrainResult

# Small but real: one epoch on 12,000 images reaches > 90 % on the full test set in seconds.
QUICK_LIMIT = 12_000
DEFAULT_MNIST = REPO.parent / "shared" / "data" / "mnist" / "mnist.npz"


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """The MNIST npz: $MNIST_DATA, else ../shared beside the repository."""
    path = Path(os.environ.get(ENV_VAR) or DEFAULT_MNIST)
    if not path.exists():
        pytest.fail(f"MNIST not found at {path}: set {ENV_VAR} to the .npz or IDX folder")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_path: Path) -> Mnist:
    """The real MNIST arrays."""
    return load_mnist(mnist_path)


@dataclass
class QuickModels:
    """The seed models trained quickly, and where they were exported."""

    repository: ModelRepository
    results: dict[str, TrainResult]
    exported: dict[str, ModelVersion]


@pytest.fixture(scope="session")
def trained(mnist: Mnist, tmp_path_factory: pytest.TempPathFactory) -> QuickModels:
    """Both seed models, trained for one epoch on 12,000 images and exported to a repository."""
    from training.export import export_model
    from training.train import TrainConfig, train_variant

    repository = ModelRepository(tmp_path_factory.mktemp("models"))
    config = TrainConfig(epochs=1, limit=QUICK_LIMIT)
    quick = QuickModels(repository, {}, {})
    for name in catalog.SEED_VARIANTS:
        quick.results[name] = train_variant(catalog.get(name), mnist, config)
        quick.exported[name] = export_model(quick.results[name], mnist, repository)
    return quick


@pytest.fixture(scope="session")
def models_dir(trained: QuickModels) -> Path:
    """The model repository holding the quick seed models."""
    return trained.repository.root


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``mnist-serve serve`` on 127.0.0.1, ready."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with run_server(models_dir, log, *SERVER_ARGS) as running:
        running.wait_ready()
        yield running
