"""Where a process's models come from: loaded here, or served by the executor.

``create_app`` asks :func:`models_for` once, at construction:

* :class:`LocalModels`: this process picks the device (importing TensorFlow only if a
  SavedModel may be served: ``service.device.place``), and its
  lifespan loads, warms and serves every model itself: the single process (``--workers 1``)
  and each worker of the replicas engine;
* :class:`RemoteModels`: a front end of the executor engine: no TensorFlow, no models; its
  lifespan connects to the executor (``service.remote``), whose models it serves. With the
  hybrid engine it also keeps its own copies of the light models (``service.copies``).

A worker (:class:`WorkerContext`) also reports its readiness to the shared state, so that
``/readyz`` of any process is ready only when every process is.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from service import collector
from service import device as devices
from service.control import LocalControl, ModelControl, RemoteControl
from service.copies import LocalCopies
from service.registry import ModelRegistry
from service.remote import ExecutorClient
from service.settings import Settings
from service.shared import FAILED, LOADING, READY, SharedState
from service.versions import VersionWatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerContext:
    """A worker process of a multi-process server (``service.supervisor``)."""

    process: int  # this worker's index, 0..workers-1
    workers: int
    engine: str  # hybrid, executor or replicas
    shared: SharedState
    executor_socket: str | None = None  # hybrid and executor engines: where the models are
    gpu: bool = False  # whether the executor owns a GPU (then ONNX Runtime is not copied)


class Models(Protocol):
    """How the app's lifespan starts and stops its models."""

    gpu: bool
    device: str
    control: ModelControl | None  # the repository API's load and unload (None: not here)

    async def start(self, registry: ModelRegistry) -> None:
        """Begin serving (returns at once unless models must load before start-up ends)."""
        ...

    async def stop(self, registry: ModelRegistry) -> None:
        """Stop serving."""
        ...


def report_readiness(registry: ModelRegistry, worker: WorkerContext | None) -> None:
    """Tell the other processes whether this one is ready (no-op for a single process)."""
    if worker is not None:
        state = READY if registry.ready else LOADING if registry.loading else FAILED
        worker.shared.set_ready(worker.process, state)


class LocalModels:
    """The models load and run in this process."""

    def __init__(self, settings: Settings, worker: WorkerContext | None) -> None:
        self.settings = settings
        self.worker = worker
        self.device = devices.place(
            settings.device,
            settings.runtimes,
            settings.intra_op_threads,
            settings.inter_op_threads,
        )
        self.gpu = self.device.startswith("/GPU")
        log.info("models will run on %s", devices.describe(self.device))
        self._loading: asyncio.Task[None] | None = None
        self.control: ModelControl | None = None

    async def start(self, registry: ModelRegistry) -> None:
        """Load in the background (with ``strict_models``: now, failing start-up), then
        watch the repository for new versions."""

        def changed() -> None:
            report_readiness(registry, self.worker)

        versions = VersionWatcher(registry, on_change=changed)
        collector.serving(registry.in_flight_now)  # a retired model's garbage waits for a lull
        if self.worker is None or self.worker.engine != "replicas":
            self.control = LocalControl(registry, versions)  # replicas: no one acts for all
        if self.settings.strict_models:
            async with versions.changing:  # an unload or load waits for start-up's loading
                await registry.load(on_change=changed)  # ModelLoadError fails start-up
            collector.settle("models loaded")
            self._loading = asyncio.create_task(watch(versions), name="versions")
        else:
            self._loading = asyncio.create_task(load_and_watch(registry, versions), name="load")

    async def stop(self, registry: ModelRegistry) -> None:
        """Stop loading (or watching for versions) and every batcher."""
        if self._loading is not None:
            self._loading.cancel()
        await registry.close()


async def load_and_watch(registry: ModelRegistry, versions: VersionWatcher) -> None:
    """Load every model, then watch the repository for new versions. The repository API is
    live meanwhile: an unload or load waits for the loading (else a model it retired would be
    started once loaded, out of anyone's reach)."""
    async with versions.changing:
        await registry.load(on_change=versions.on_change)
    collector.settle("models loaded")
    await versions.recover()
    await watch(versions)


async def watch(versions: VersionWatcher) -> None:
    """Swap new versions in as they appear (``service.versions``), unless polling is off."""
    if versions.registry.settings.poll_s > 0:
        await versions.run()


class RemoteModels:
    """The executor serves the models; this front end forwards to it."""

    gpu = False

    def __init__(self, settings: Settings, worker: WorkerContext) -> None:
        assert worker.executor_socket is not None
        self.worker = worker
        self.device = "executor"
        self._task: asyncio.Task[None] | None = None
        self._client: ExecutorClient | None = None
        self._copies: LocalCopies | None = None
        self.control: ModelControl | None = None

    async def start(self, registry: ModelRegistry) -> None:
        """Connect to the executor (and reconnect if it restarts) in the background."""
        worker = self.worker
        assert worker.executor_socket is not None
        if worker.engine == "hybrid":
            self._copies = LocalCopies(registry, worker.gpu)
        client = ExecutorClient(
            registry, worker.shared, worker.process, worker.executor_socket, self._copies
        )
        self._client = client
        self.control = RemoteControl(registry, client)
        self._task = asyncio.create_task(client.run(), name="executor-client")
        collector.serving(registry.in_flight_now)  # a retired copy's garbage waits for a lull
        collector.settle("front end started")

    async def stop(self, registry: ModelRegistry) -> None:
        """Disconnect."""
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            self._client.close()
        if self._copies is not None:
            await self._copies.close()


def models_for(settings: Settings, worker: WorkerContext | None) -> Models:
    """Local models, or the executor's for a front end of the executor engine."""
    if worker is not None and worker.executor_socket is not None:
        return RemoteModels(settings, worker)
    return LocalModels(settings, worker)
