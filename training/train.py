"""Train one catalogued variant on MNIST, seeded, timing every epoch.

The recipe is the reference one: categorical cross-entropy, Adadelta, batch 128, 12 epochs,
validated on the 10,000 test images. Adadelta defaults to the *old* Keras settings
(learning_rate=1.0, rho=0.95): today's default of 0.001 falls far short in 12 epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

from modelrepo.contract import CLASSES
from training.catalog import Variant
from training.data import Mnist, to_model_input
from training.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_RHO,
    DEFAULT_SEED,
)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the reference recipe unless told otherwise."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    rho: float = DEFAULT_RHO
    seed: int = DEFAULT_SEED
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


@dataclass
class TrainResult:
    """A trained model and its figures."""

    variant: Variant
    model: keras.Model
    config: TrainConfig
    train_images: int
    epoch_seconds: list[float] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    test_loss: float = float("nan")
    test_accuracy: float = float("nan")

    @property
    def train_seconds(self) -> float:
        """Wall time spent in ``fit`` (validation included, export excluded)."""
        return float(sum(self.epoch_seconds))


# Called at each epoch's end with (epoch number from 1, its seconds, Keras' logs).
EpochHook = Callable[[int, float, dict[str, float]], None]
# Called after each training batch with the batch index within the epoch.
BatchHook = Callable[[int], None]


def train_variant(
    variant: Variant,
    data: Mnist,
    config: TrainConfig,
    on_epoch: EpochHook | None = None,
    on_batch: BatchHook | None = None,
) -> TrainResult:
    """Train ``variant`` on ``data`` following ``config`` and evaluate it on the test set."""
    keras.utils.set_random_seed(config.seed)  # Python, NumPy and TensorFlow in one call
    data = data.limited(config.limit)
    x_train, x_test = to_model_input(data.x_train), to_model_input(data.x_test)
    y_train = keras.utils.to_categorical(data.y_train, CLASSES)
    y_test = keras.utils.to_categorical(data.y_test, CLASSES)

    model = variant.build()
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.Adadelta(learning_rate=config.learning_rate, rho=config.rho),
        metrics=["accuracy"],
    )
    result = TrainResult(variant, model, config, train_images=len(x_train))
    model.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=[_Timer(result, on_epoch, on_batch)],
    )
    loss, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    result.test_loss, result.test_accuracy = float(loss), float(accuracy)
    return result


def batches_per_epoch(train_images: int, batch_size: int) -> int:
    """How many optimizer steps one epoch takes (the last batch may be short)."""
    return -(-train_images // batch_size)


class _Timer(keras.callbacks.Callback):
    """Records each epoch's wall time and Keras' logs, and forwards progress to the hooks."""

    def __init__(self, result: TrainResult, on_epoch: EpochHook | None, on_batch: BatchHook | None):
        super().__init__()
        self._result, self._on_epoch, self._on_batch = result, on_epoch, on_batch
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._on_batch is not None:
            self._on_batch(batch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._started
        logs = {key: float(value) for key, value in (logs or {}).items()}
        self._result.epoch_seconds.append(seconds)
        for key, value in logs.items():
            self._result.history.setdefault(key, []).append(value)
        if self._on_epoch is not None:
            self._on_epoch(epoch + 1, seconds, logs)
