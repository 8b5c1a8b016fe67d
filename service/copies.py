"""The hybrid engine's front-end side: a front end's own copies of the executor's light models.

With ``--engine hybrid`` (the default with several workers) the executor still owns every
model. It loads and warms them, follows new versions, answers the repository API and reports
each model's state to the front ends (``service.remote``). On top of that, a front end loads
its own copy of each *ready* model whose runtime is light and runs on the CPU here: ONNX
Runtime, LiteRT, OpenVINO (tens of MB each). TensorFlow stays in the executor. The copy is
served in process, through a batcher of its own, so a request to it pays no process hop and no
shared-memory copy. That is what the replicas engine gains on a CPU, at a fraction of its
memory (measured in docs/benchmarks.md, section K).

The executor stays the source of truth:

* a copy serves only a version the executor reports ready;
* until the copy is loaded and warm, or if it fails to load, requests go to the executor;
* on a GPU only the CPU-only runtimes (LiteRT, OpenVINO) are copied: ONNX Runtime runs on CUDA
  in the executor, the one process that owns the device;
* a version the executor stops serving is retired as ``service.versions`` retires one: the
  models stop pointing at the copy, and its last requests finish before its batcher stops.

While the executor restarts, the models with a warm copy keep serving from it, and so do they
while the restarted executor reports them loading: it is the same version. The others answer
503 until the executor has them ready again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from service import collector
from service.batcher import Batcher, ModelQueue
from service.channel import ModelState
from service.device import TENSORFLOW_RUNTIMES
from service.loading import open_model
from service.registry import ModelRegistry, ServedModel
from service.versions import RETIRE_GRACE_S, RETIRE_TIMEOUT_S

log = logging.getLogger(__name__)
Key = tuple[str, int]  # (variant@runtime, version)
HEAVY = TENSORFLOW_RUNTIMES  # never copied: TensorFlow stays out of the front ends


@dataclass(eq=False)
class Copy:
    """One model version loaded in this front end."""

    batcher: Batcher | None = None  # None while it loads, or if it failed to
    holders: list[ServedModel] = field(default_factory=list)  # models handed its batcher


class LocalCopies:
    """The copies of one front end, kept in step with the executor's model states."""

    def __init__(self, registry: ModelRegistry, gpu: bool) -> None:
        self.registry = registry
        self.gpu = gpu  # whether the executor runs GPU-capable runtimes on a GPU
        self.copies: dict[Key, Copy] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def copied(self, model: ServedModel) -> bool:
        """Whether ``model`` gets a copy here: a light runtime that runs on the CPU anyway."""
        return model.runtime_name not in HEAVY and (model.cpu_only or not self.gpu)

    def queue(self, model: ServedModel, remote: ModelQueue) -> ModelQueue:
        """What a ready ``model`` serves through: its copy once warm, else ``remote``
        (the executor), and the copy starts loading if it has not."""
        if not self.copied(model):
            return remote
        key = (model.name, model.model.version)
        copy = self.copies.get(key)
        if copy is None:
            copy = self.copies[key] = Copy()
            self._spawn(self._load(key, copy, model), f"copy {model.name}")
        if copy.batcher is None:
            return remote
        if not any(h is model for h in copy.holders):
            copy.holders.append(model)
        return copy.batcher

    def warm(self, model: ServedModel) -> Batcher | None:
        """The warm copy of ``model``'s version here, if there is one."""
        copy = self.copies.get((model.name, model.model.version))
        return copy.batcher if copy is not None else None

    def keep(self, states: list[ModelState]) -> None:
        """Retire the copies of versions the executor no longer serves (a model that is
        loading, e.g. in a restarted executor, keeps its copy)."""
        live = {(s.name, s.version) for s in states if s.state in ("ready", "loading")}
        for key in [k for k in self.copies if k not in live]:
            self._spawn(self._retire(self.copies.pop(key)), f"retire {key[0]}")

    async def close(self) -> None:
        """Stop every copy, retiring ones included (the front end is shutting down)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a retiring copy stops its batcher
        for copy in self.copies.values():
            if copy.batcher is not None:
                await copy.batcher.stop()
        self.copies.clear()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, key: Key, copy: Copy, model: ServedModel) -> None:
        """Load and warm the copy, then point the ready models of its version at it."""
        registry = self.registry
        try:
            opened = await open_model(
                registry.settings,
                model,
                gpu=False,
                metrics=registry.metrics,
                in_flight=registry.in_flight_now,
            )
        except Exception as err:  # the executor still serves it: this is only a shortcut
            log.warning("%s version %d: no copy in this front end (%s)", *key, err)
            return
        batcher = opened.batcher
        if self.copies.get(key) is not copy:  # retired while it loaded
            await batcher.stop()
            return
        copy.batcher = batcher
        for served in registry.models():
            if (served.name, served.model.version) == key and served.state == "ready":
                served.batcher = batcher
                copy.holders.append(served)
        collector.settle(f"copy of {key[0]} loaded")
        log.info(
            "%s version %d now serves in this front end (batch 1: %.3f ms)", *key, opened.batch1_ms
        )

    async def _retire(self, copy: Copy) -> None:
        """Stop ``copy`` once no request holds it (or after the versions' timeout)."""
        batcher = copy.batcher
        if batcher is None:
            return  # still loading: _load stops it when done

        def held() -> bool:
            return not batcher.idle or any(h.active and h.batcher is batcher for h in copy.holders)

        try:
            await asyncio.sleep(RETIRE_GRACE_S)
            deadline = time.monotonic() + RETIRE_TIMEOUT_S
            while held() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:  # also when the front end shuts down (close) while it waits
            for holder in copy.holders:
                if holder.batcher is batcher:
                    holder.batcher = None
            copy.holders.clear()
            await batcher.stop()
        collector.release("a copy retired")
