"""A short real training of both seed models, exported and reloaded as SavedModels."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from modelrepo.contract import CLASSES, INPUT_NAME, OUTPUT_NAME
from tests.conftest import QuickModels
from training.data import Mnist, to_model_input

pytestmark = pytest.mark.slow

METADATA_FIELDS = {
    "variant", "version", "parameters", "macs", "test_accuracy", "test_loss", "epochs",
    "batch_size", "learning_rate", "training_seconds", "epoch_seconds", "savedmodel_bytes",
    "tensorflow_version", "keras_version", "data_sha256", "created_at",
}  # fmt: skip


@pytest.mark.parametrize("name", ["original", "depthwise"])
def test_short_training_beats_90_percent(trained: QuickModels, name: str) -> None:
    assert trained.results[name].test_accuracy > 0.90


@pytest.mark.parametrize("name", ["original", "depthwise"])
def test_savedmodel_signature_matches_keras(trained: QuickModels, mnist: Mnist, name: str) -> None:
    import tensorflow as tf  # here, not at the top: collecting test-fast stays TensorFlow-free

    images = to_model_input(mnist.x_test[:256])
    expected = np.asarray(trained.results[name].model(images, training=False))
    loaded = tf.saved_model.load(str(trained.exported[name].path))
    serving = loaded.signatures["serving_default"]
    got = serving(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()
    assert got.shape == (256, CLASSES)
    assert np.abs(got - expected).max() < 1e-5


@pytest.mark.parametrize("name", ["original", "depthwise"])
def test_metadata_holds_every_figure(trained: QuickModels, mnist: Mnist, name: str) -> None:
    exported = trained.exported[name]
    metadata = json.loads((exported.path / "metadata.json").read_text())
    assert metadata.keys() >= METADATA_FIELDS
    assert metadata["variant"] == name
    assert metadata["version"] == exported.version
    assert exported.version == 1
    assert metadata["learning_rate"] == 1.0 and metadata["epochs"] == 1
    assert len(metadata["epoch_seconds"]) == 1 and metadata["training_seconds"] > 0
    assert metadata["test_accuracy"] == pytest.approx(trained.results[name].test_accuracy)
    assert metadata["savedmodel_bytes"] > 100_000
    assert metadata["data_sha256"] == mnist.checksum
    assert metadata["parameters"] == trained.results[name].model.count_params()


def test_next_export_gets_the_next_version(
    trained: QuickModels, mnist: Mnist, tmp_path: Path
) -> None:
    from modelrepo.layout import ModelRepository
    from training.export import export_model

    repository = ModelRepository(tmp_path)
    first = export_model(trained.results["depthwise"], mnist, repository)
    second = export_model(trained.results["depthwise"], mnist, repository)
    assert (first.version, second.version) == (1, 2)
    assert repository.get("depthwise").version == 2
    assert repository.get("depthwise", 1).path == first.path
    assert not list(tmp_path.glob(".staging-*")), "staging folders must not be left behind"


def test_the_same_seed_trains_the_same_weights_and_another_does_not(
    trained: QuickModels, mnist: Mnist
) -> None:
    # Reproducible training on the CPU, bit for bit: the fixture trained both seed models in
    # turn; depthwise again alone, from the same seed, must come out identical.
    from training import catalog
    from training.train import TrainConfig, train_variant

    def weights(config: TrainConfig) -> list[np.ndarray]:
        return list(train_variant(catalog.get("depthwise"), mnist, config).model.get_weights())

    first = trained.results["depthwise"]
    again = weights(first.config)
    assert all(np.array_equal(a, b) for a, b in zip(first.model.get_weights(), again, strict=True))
    other = weights(replace(first.config, seed=first.config.seed + 1))
    assert not all(np.array_equal(a, b) for a, b in zip(again, other, strict=True))
