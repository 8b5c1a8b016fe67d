"""The model executor: one process that owns the models, and the device, for every front end.

In the executor engine (``serve --engine executor``) the front ends parse HTTP and gRPC and
never import TensorFlow; this process loads every model (as the single process does:
``service.registry``), batches the requests of all front ends together in each model's
:class:`~service.batcher.Batcher`, and answers through the shared-memory channel
(``service.channel``). On a GPU this makes exactly one process own the device, and the batch
sizes are the ones the whole load makes, not one front end's share of it.

Each front end connects to the executor's Unix socket and introduces its shared-memory block;
the executor then sends it every model's state, again whenever one changes, and serves its
requests. It publishes each model's running batch time in the shared state, so front ends can
refuse at once a request that would miss its queue deadline (``service.remote``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import cast

from service import collector
from service import device as devices
from service.batcher import Batcher, Timing
from service.channel import (
    ANSWER,
    ANSWER_STRUCT,
    CONTROL,
    CONTROL_DONE,
    FAILED,
    HELLO,
    OK,
    OVERLOADED,
    REQUEST,
    UNAVAILABLE,
    Control,
    Frames,
    ModelState,
    Slots,
    control_frame,
    read_control,
    read_hello,
    states_frame,
)
from service.control import LocalControl
from service.errors import Overloaded, ServeError, Unavailable
from service.metrics import Metrics
from service.registry import ModelRegistry, ServedModel, plan
from service.settings import Settings
from service.shared import SharedState
from service.versions import VersionWatcher

log = logging.getLogger(__name__)


class Executor:
    """The models, their batchers, and the front ends connected to them."""

    def __init__(self, settings: Settings, shared: SharedState) -> None:
        planned = plan(settings)
        device = devices.place(
            settings.device,
            settings.runtimes,
            settings.intra_op_threads,
            settings.inter_op_threads,
        )
        log.info("executor %d: models will run on %s", os.getpid(), devices.describe(device))
        self.registry = ModelRegistry(settings, Metrics(), planned, gpu=device.startswith("/GPU"))
        self.shared = shared
        self.connections: set[FrontEndConnection] = set()
        self.versions = VersionWatcher(self.registry, on_change=self.publish)
        self.control = LocalControl(self.registry, self.versions)
        self.watching: asyncio.Task[None] | None = None
        # Every model ever served, in the order front ends address them by: append-only, so
        # an index sent before a swap still names the model it meant.
        self.table: list[ServedModel] = []
        self._positions: dict[int, int] = {}

    def index_of(self, model: ServedModel) -> int:
        """The model's place in the table (added on first sight)."""
        position = self._positions.get(id(model))
        if position is None:
            position = self._positions[id(model)] = len(self.table)
            self.table.append(model)
        return position

    def model_at(self, index: int) -> ServedModel:
        """The model a request addresses; one retired since it was sent: its successor (the
        same version if it still serves, else the newest)."""
        if not 0 <= index < len(self.table):
            raise Unavailable("no such model in this executor (it restarted); retry")
        model = self.table[index]
        if model.state != "retired":
            return model
        try:
            return self.registry.lookup(model.name, version=model.model.version)
        except ServeError:
            return self.registry.lookup(model.name)

    def states(self) -> list[ModelState]:
        """Every serving model's state, with its index."""
        states = []
        for served in self.registry.variants.values():
            refused = {str(k): v for k, v in served.refused.items()}
            for m in served.models():
                index = self.index_of(m)
                if isinstance(m.batcher, Batcher) and self.shared.batch_s(index) == 0.0:
                    # Its warm-up's batch time until its first batch: a model swapped in
                    # under load is guarded by its queue deadline from its first request.
                    self.shared.set_batch_s(index, m.batcher.batch_s)
                states.append(
                    ModelState(
                        m.name,
                        m.state,
                        m.reason,
                        m.device,
                        m.batch1_ms,
                        bool(m.batcher is not None and m.batcher.inline),
                        m.model.version,
                        refused,
                        index,
                        m.model.version == served.model.version,
                        m.batching,
                    )
                )
        return states

    def publish(self) -> None:
        """Tell every front end the models' states."""
        frame = states_frame(self.states())
        for connection in self.connections:
            connection.write(frame)

    async def run(self, socket_path: str) -> None:
        """Listen, load the models (publishing each as it becomes ready), serve until SIGTERM."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # Ctrl-C reaches every process of the group: the front ends drain, and the executor
        # keeps serving them until the supervisor stops it (SIGTERM) after they are done.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server = await loop.create_unix_server(lambda: FrontEndConnection(self), socket_path)
        try:
            collector.serving(self.registry.in_flight_now)  # retired models' garbage: in a lull
            async with self.versions.changing:  # an unload or load waits for the loading
                await self.registry.load(on_change=self.publish)
            collector.settle("models loaded")
            await self.versions.recover()
            if self.registry.settings.poll_s > 0:
                self.watching = loop.create_task(self.versions.run(), name="versions")
            await stop.wait()
        finally:
            server.close()
            await self.registry.close()


class FrontEndConnection(asyncio.Protocol):
    """One front end's requests, answered through its shared-memory block."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.frames = Frames()
        self.slots: Slots | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Wait for the front end's hello."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        """The front end is gone (stopped or restarted): forget it."""
        self.executor.connections.discard(self)
        if self.slots is not None:
            with contextlib.suppress(BufferError):  # views still held by a running batch
                self.slots.close()

    def write(self, data: bytes) -> None:
        """Send a frame, if the front end is still there."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        """Requests are served (a lone one on an idle inline model at once, the others by a
        task each, to be batched); a hello maps the block and gets the states."""
        frames = list(self.frames.feed(data))
        requests = [fields for kind, fields in frames if kind == REQUEST[0]]
        if len(requests) == 1 and self.serve_now(*requests[0]):
            requests = []
        for fields in requests:
            asyncio.get_running_loop().create_task(self.serve(*fields))
        for kind, fields in frames:
            if kind == CONTROL[0]:
                asyncio.get_running_loop().create_task(self.act(read_control(fields)))
            elif kind == HELLO[0]:
                self.slots = Slots.attach(read_hello(fields))
                self.executor.connections.add(self)
                self.write(states_frame(self.executor.states()))

    async def act(self, control: Control) -> None:
        """A front end's load or unload; answer with how it went."""
        error = None
        try:
            if control.action == "load":
                await self.executor.control.load(control.variant)
            else:
                await self.executor.control.unload(control.variant)
        except ServeError as err:
            error = err.detail
        except Exception as err:  # the front end waits for an answer: always give one
            log.exception("model control %s %s failed", control.action, control.variant)
            error = f"{type(err).__name__} while acting"
        self.write(control_frame(CONTROL_DONE, Control(control.id, error=error)))

    def serve_now(self, request_id: int, index: int, count: int, slot: int) -> bool:
        """Answer a lone request on its idle inline model right here (no task, no wake-up:
        the one-client path pays one hop each way and nothing more); False if it must queue."""
        try:
            model = self.executor.model_at(index)
        except ServeError:
            return False  # serve() answers it
        if (
            self.slots is None
            or self.executor.registry.in_flight
            or not isinstance(model.batcher, Batcher)
        ):
            return False
        try:
            answer = model.batcher.run_now(self.slots.images(slot, count))
        except ServeError:
            self.answer(request_id, FAILED, Timing(0.0, 0.0, 0))
            return True
        if answer is None:
            return False
        probabilities, timing = answer
        self.slots.probabilities(slot, count)[:] = probabilities
        self.answer(request_id, OK, timing)
        return True

    def answer(self, request_id: int, status: int, timing: Timing) -> None:
        """Send a request's ANSWER."""
        self.write(
            ANSWER
            + ANSWER_STRUCT.pack(
                request_id, status, timing.batch_images, timing.queue_s, timing.model_s
            )
        )

    async def serve(self, request_id: int, index: int, count: int, slot: int) -> None:
        """Run one request's images (read in place) and answer with where its time went."""
        assert self.slots is not None, "a request before the hello"
        executor = self.executor
        status, timing = OK, Timing(0.0, 0.0, 0)
        try:
            model = executor.model_at(index)
        except ServeError:
            self.answer(request_id, UNAVAILABLE, timing)
            return
        if model.state != "ready" or model.batcher is None:
            status = UNAVAILABLE
        else:
            executor.registry.in_flight += 1
            model.active += 1
            try:
                probabilities, timing = await model.batcher.submit(self.slots.images(slot, count))
                self.slots.probabilities(slot, count)[:] = probabilities
            except Overloaded:
                status = OVERLOADED
            except ServeError:
                status = FAILED
            except Exception:  # the front end waits for an answer: always give one
                log.exception("serving a request on %s failed", model.name)
                status = FAILED
            finally:
                executor.registry.in_flight -= 1
                model.active -= 1
            if isinstance(model.batcher, Batcher):
                executor.shared.set_batch_s(index, model.batcher.batch_s)
        self.answer(request_id, status, timing)


def run_executor(settings: Settings, shared: SharedState, socket_path: str) -> None:
    """The executor process's entry point (started by ``service.supervisor``)."""
    from service.device import DeviceError
    from service.registry import ConfigError
    from service.server import configure_logging, event_loop

    configure_logging(settings, "executor")
    try:
        executor = Executor(settings, shared)
    except (ConfigError, DeviceError) as err:
        log.error("cannot serve: %s", err)
        raise SystemExit(2) from None
    event_loop().run_until_complete(executor.run(socket_path))
