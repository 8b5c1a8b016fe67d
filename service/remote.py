"""A front end's side of the executor engine: its models are the executor's.

The front end plans the same models as the executor (``service.registry.plan``: the model
repository and the settings, no TensorFlow), then :class:`ExecutorClient` connects to the
executor's socket and keeps each model's state as the executor reports it. A ready model gets a
:class:`RemoteBatcher` in place of a batcher, so the handlers of every protocol run unchanged:

* ``admit()`` refuses at once (503) a request that would miss the queue deadline, from the
  requests every front end has outstanding for that model and the executor's running batch
  time (both in ``service.shared``);
* ``submit()`` writes the images into a free slot of this front end's shared-memory block,
  sends a 13-byte request and waits for the answer; the probabilities are read from the slot.

With the hybrid engine, a ready model of a light runtime serves through this front end's own
copy once it is warm (``service.copies``), and through the executor until then.

If the executor dies, every request waiting on it fails at once with 503 (never hangs), the
models show as loading (except those a hybrid front end serves from its own copy), and the
client reconnects as soon as the supervisor has restarted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from modelrepo.layout import ModelName, ModelRepository, RepositoryError
from service.batcher import ModelQueue, Timing, never
from service.channel import (
    ANSWER,
    CONTROL,
    CONTROL_DONE,
    FAILED,
    OK,
    OVERLOADED,
    REQUEST,
    REQUEST_STRUCT,
    STATES,
    Control,
    Frames,
    Hello,
    ModelState,
    Slots,
    control_frame,
    hello_frame,
    read_control,
    read_states,
)
from service.copies import LocalCopies
from service.errors import ClientGone, ModelFailure, Overloaded, Unavailable
from service.registry import ModelRegistry, ServedModel, ServedVariant
from service.shared import FAILED as PROCESS_FAILED
from service.shared import LOADING, READY, SharedState

log = logging.getLogger(__name__)
RECONNECT_S = 0.05


@dataclass
class _Waiting:
    future: asyncio.Future[tuple[int, Timing]]
    slot: int
    abandoned: bool = False  # the caller gave up: free the slot when the answer comes


class ExecutorClient(asyncio.Protocol):
    """The connection to the executor, kept up for the front end's life."""

    def __init__(
        self,
        registry: ModelRegistry,
        shared: SharedState,
        process: int,
        socket_path: str,
        copies: LocalCopies | None = None,
    ) -> None:
        self.registry = registry
        self.copies = copies  # the hybrid engine: light models also loaded here
        self.shared = shared
        self.process = process
        self.socket_path = socket_path
        self.slots = Slots.create(
            block_name(socket_path, process),
            registry.settings.max_in_flight,
            registry.settings.max_batch_size,
        )
        self.frames = Frames()
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, _Waiting] = {}
        self.ids = itertools.count(1)
        self._lost: asyncio.Future[None] | None = None
        self.controls: dict[int, asyncio.Future[str | None]] = {}

    async def run(self) -> None:
        """Connect, and reconnect whenever the executor restarts, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self._lost = loop.create_future()  # before connecting: a loss right after is seen
            try:
                await loop.create_unix_connection(lambda: self, self.socket_path)
            except OSError:  # not listening (yet): the supervisor is restarting it
                await asyncio.sleep(RECONNECT_S)
                continue
            await self._lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Introduce this front end and its block."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.frames = Frames()  # nothing half-read from a previous executor
        hello = Hello(self.process, self.slots.block.name, self.slots.slots, self.slots.max_images)
        self.transport.write(hello_frame(hello))

    def connection_lost(self, exc: Exception | None) -> None:
        """The executor is gone: fail what waits on it, show the models as loading."""
        self.transport = None
        if self.waiting:
            log.error("the model executor stopped with %d requests waiting", len(self.waiting))
        for waiting in self.waiting.values():
            if not waiting.future.done():
                waiting.future.set_exception(
                    Unavailable("the model executor restarted; retry shortly", retry_after_s=1)
                )
        self.waiting.clear()
        for future in self.controls.values():
            if not future.done():
                future.set_exception(Unavailable("the model executor restarted; retry"))
        self.controls.clear()
        self.slots.reset()
        for model in self.registry.models():
            copy = self.copies.warm(model) if self.copies is not None else None
            if copy is not None and model.state == "ready":
                model.batcher = copy  # served here while the executor restarts
                continue
            model.state, model.batcher = "loading", None
        self.shared.set_ready(self.process, LOADING)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Answers resolve their requests; states update the models."""
        for kind, fields in self.frames.feed(data):
            if kind == ANSWER[0]:
                request_id, status, batch, queue_s, model_s = fields
                waiting = self.waiting.pop(request_id, None)
                if waiting is None:
                    continue
                if waiting.abandoned:
                    self.slots.give(waiting.slot)
                elif not waiting.future.done():
                    waiting.future.set_result((status, Timing(queue_s, model_s, batch)))
            elif kind == STATES[0]:
                self.apply(read_states(fields))
            elif kind == CONTROL_DONE[0]:
                done = read_control(fields)
                future = self.controls.pop(done.id, None)
                if future is not None and not future.done():
                    future.set_result(done.error)

    def apply(self, states: list[ModelState]) -> None:
        """The executor's model states, onto this front end's models (a version it did not
        serve before: a new variant entry, so requests holding the old one finish on it)."""
        by_variant: dict[str, list[ModelState]] = {}
        for state in states:
            by_variant.setdefault(ModelName.parse(state.name).variant, []).append(state)
        for variant, variant_states in by_variant.items():
            self.follow_versions(variant, variant_states)
        models = {(m.name, m.model.version): m for m in self.registry.models()}
        for state in states:
            model = models.get((state.name, state.version))
            if model is None:
                continue
            ready = state.state == "ready"
            if state.state == "loading" and self.copies is not None and self.copies.warm(model):
                ready = True  # the executor reloads this version: its copy here serves
            model.state = "ready" if ready else state.state  # type: ignore[assignment]
            model.reason = state.reason
            model.device = state.device or model.device
            model.batch1_ms = state.batch1_ms or model.batch1_ms
            model.batching = state.batching or model.batching
            model.batcher = self.queue(model, state) if ready else None
        if self.copies is not None:
            self.copies.keep(states)
        registry = self.registry
        readiness = READY if registry.ready else LOADING if registry.loading else PROCESS_FAILED
        self.shared.set_ready(self.process, readiness)

    def queue(self, model: ServedModel, state: ModelState) -> ModelQueue:
        """Where a ready model's requests go: the executor, or this front end's copy."""
        remote = RemoteBatcher(self, model, state.index, state.inline)
        return remote if self.copies is None else self.copies.queue(model, remote)

    def follow_versions(self, variant: str, states: list[ModelState]) -> None:
        """Serve the versions the executor serves for ``variant``, and know its refusals."""
        served = self.registry.variants.get(variant)
        if served is None:
            return
        served.refused.clear()  # the executor's list, which an explicit load can shorten
        served.refused.update({int(k): v for k, v in states[0].refused.items()})
        newest = next(s.version for s in states if s.newest)
        older = sorted({s.version for s in states if not s.newest})
        if newest == served.model.version and older == sorted(served.older):
            return
        repository = ModelRepository(self.registry.settings.models_dir)
        try:
            versions = {v: repository.get(variant, v) for v in (newest, *older)}
            metadata = versions[newest].load_metadata()
        except RepositoryError as err:
            log.error("cannot follow %s to version %d: %s", variant, newest, err)
            return

        def models(version: int) -> dict[str, ServedModel]:
            return {r: ServedModel(versions[version], r) for r in served.runtimes}

        self.registry.variants[variant] = ServedVariant(
            versions[newest],
            metadata,
            models(newest),
            served.default_runtime,
            served.refused,
            {v: models(v) for v in older},
        )

    async def control(self, action: str, variant: str) -> str | None:
        """Have the executor load or unload ``variant``: None once done, else why not."""
        if self.transport is None:
            raise Unavailable("the model executor is restarting; retry shortly")
        request_id = next(self.ids) & 0xFFFFFFFF
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.controls[request_id] = future
        self.transport.write(control_frame(CONTROL, Control(request_id, action, variant)))
        return await future

    async def infer(
        self, index: int, images: np.ndarray, gone: Callable[[], bool]
    ) -> tuple[np.ndarray, Timing]:
        """Run ``images`` on model ``index`` in the executor."""
        transport = self.transport
        if transport is None:
            raise Unavailable("the model executor is restarting; retry shortly")
        slot = self.slots.take()
        if slot is None:
            raise Overloaded("every request slot of this front end is in use; retry shortly")
        count = len(images)
        self.slots.images(slot, count)[:] = images
        request_id = next(self.ids) & 0xFFFFFFFF
        waiting = _Waiting(asyncio.get_running_loop().create_future(), slot)
        self.waiting[request_id] = waiting
        transport.write(REQUEST + REQUEST_STRUCT.pack(request_id, index, count, slot))
        self.shared.add_outstanding(self.process, index, 1)
        try:
            status, timing = await waiting.future
        except asyncio.CancelledError:
            if request_id in self.waiting:
                waiting.abandoned = True  # the executor may still write into the slot
            else:
                self.slots.give(slot)  # answered just before the cancel: the slot is free
            raise
        finally:
            self.shared.add_outstanding(self.process, index, -1)
        if status != OK:
            self.slots.give(slot)
            raise answer_error(status)
        probabilities = self.slots.probabilities(slot, count).copy()
        self.slots.give(slot)
        if gone():
            raise ClientGone("the client closed the connection")
        return probabilities, timing

    def close(self) -> None:
        """Close the connection and unmap the block (the supervisor unlinks it)."""
        if self.transport is not None:
            self.transport.close()
        with contextlib.suppress(BufferError):
            self.slots.close()


def answer_error(status: int) -> Exception:
    """The error a non-OK answer stands for."""
    if status == OVERLOADED:
        return Overloaded("the model's queue is over its deadline; retry shortly")
    if status == FAILED:
        return ModelFailure("the model failed on this batch")
    return Unavailable("the model is not ready in the executor; retry shortly")


class RemoteBatcher:
    """A front end's stand-in for the executor's batcher of one model."""

    def __init__(
        self, client: ExecutorClient, model: ServedModel, index: int, inline: bool
    ) -> None:
        settings = client.registry.settings
        self.client = client
        self.model = model
        self.index = index
        self.inline = inline
        self.max_batch_size = settings.max_batch_size
        self.deadline_s = settings.max_queue_wait_ms / 1000 if settings.max_queue_wait_ms else None

    def admit(self) -> None:
        """503 at once if the requests already waiting, batched, would outlast the deadline."""
        if self.deadline_s is None:
            return
        shared = self.client.shared
        batches = -(-shared.outstanding(self.index) // self.max_batch_size)
        wait = batches * shared.batch_s(self.index)
        if wait > self.deadline_s:
            raise Overloaded(
                f"the model's queue would take ~{wait * 1000:.0f} ms, over the "
                f"{self.deadline_s * 1000:.0f} ms deadline; retry shortly"
            )

    async def submit(
        self, images: np.ndarray, gone: Callable[[], bool] = never
    ) -> tuple[np.ndarray, Timing]:
        """Run ``images`` in the executor."""
        return await self.client.infer(self.index, images, gone)

    async def stop(self) -> None:
        """Nothing to stop here: the executor owns the batcher."""


def block_name(socket_path: str, process: int) -> str:
    """The shared-memory block of front end ``process`` of the server at ``socket_path``
    (the supervisor derives the same names to unlink them)."""
    tag = socket_path.rstrip("/").split("/")[-2]  # the supervisor's run folder
    return f"{tag}-fe{process}"
