"""service.copies.LocalCopies: a hybrid front end's own copies of the light models (a unit test
of that piece, on the real ONNX export; the executor is a stand-in queue)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelrepo.contract import INPUT_SHAPE
from service.batcher import Batcher, Timing, never
from service.copies import LocalCopies
from service.metrics import Metrics
from service.registry import ModelRegistry, plan
from service.settings import Settings


class Executor:
    """Stands in for the executor's queue (service.remote.RemoteBatcher)."""

    inline = False

    def admit(self) -> None:
        pass

    async def submit(
        self, images: np.ndarray, gone: Callable[[], bool] = never
    ) -> tuple[np.ndarray, Timing]:
        return np.zeros((len(images), 10), np.float32), Timing(0.0, 0.0, len(images))

    async def stop(self) -> None:
        pass


async def until(check: object, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def copies_follow_the_executor(models_dir: Path) -> None:
    runtimes = ["savedmodel", "onnx"]
    settings = Settings(models_dir=models_dir, variants=["depthwise"], runtimes=runtimes)
    registry = ModelRegistry(settings, Metrics(), plan(settings), gpu=False)
    copies = LocalCopies(registry, gpu=False)
    onnx, saved = registry.lookup("depthwise@onnx"), registry.lookup("depthwise@savedmodel")
    executor = Executor()
    for model in (onnx, saved):  # the executor reports both ready
        model.state = "ready"
        model.batcher = copies.queue(model, executor)
    assert onnx.batcher is executor and saved.batcher is executor  # until the copy is warm

    await until(lambda: isinstance(onnx.batcher, Batcher))
    copy = onnx.batcher
    assert isinstance(copy, Batcher)
    assert saved.batcher is executor  # TensorFlow is never copied into a front end
    assert copies.queue(onnx, executor) is copy  # the next state report keeps it
    digit = np.zeros((1, *INPUT_SHAPE), np.float32)
    probabilities, _ = await copy.submit(digit)
    assert probabilities.shape == (1, 10) and abs(float(probabilities.sum()) - 1) < 1e-4

    onnx.active = 1  # a request holds the model when its version stops serving
    onnx.state = "retired"
    copies.keep([])  # the executor no longer reports it
    await asyncio.sleep(0.5)
    assert onnx.batcher is copy, "retired under a request that still holds it"
    onnx.active = 0
    await until(lambda: onnx.batcher is None)  # detached first: no new request reaches it
    assert copies.copies == {}
    await until(lambda: not copy.running)  # then stopped: its cancelled loop awaited, ticks later

    onnx.state = "ready"  # served again: a new copy, retiring when the front end shuts down
    onnx.batcher = copies.queue(onnx, executor)
    await until(lambda: isinstance(onnx.batcher, Batcher))
    second = onnx.batcher
    assert isinstance(second, Batcher) and second is not copy and second.running
    onnx.active = 1
    copies.keep([])
    await asyncio.sleep(0.1)
    await copies.close()
    assert not second.running, "a copy retiring at shutdown was left running"

    on_gpu = LocalCopies(registry, gpu=True)  # ONNX Runtime runs on CUDA in the executor
    assert not on_gpu.copied(onnx) and not on_gpu.copied(saved)


@pytest.mark.slow  # the only fast-set test on trained models: training them took 24 s of it
def test_copies_follow_the_executor(models_dir: Path) -> None:
    """A ready ONNX model gets a copy (the executor serves it until the copy is warm), a
    SavedModel never does, and a version the executor drops is retired once no request holds
    it; on a GPU, ONNX Runtime is left to the executor."""
    threshold = gc.get_threshold()
    try:
        asyncio.run(copies_follow_the_executor(models_dir))
    finally:  # a loaded copy settles the collector (service.collector): not for later tests
        gc.unfreeze()
        gc.set_threshold(*threshold)
