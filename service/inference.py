"""One inference, whatever the protocol: find the model, run images through its batcher, and
count the request (in flight, status, time, queue and model time) in one place.

Every protocol (our ``/predict``, TF Serving's REST API, KServe V2 over REST and gRPC) goes
through :class:`Inference`, so they share the batchers, the metrics and the inline path's view
of how busy the server is::

    with Inference(registry) as call:
        model = call.resolve("depthwise@onnx", version=1)  # 404/503 before the body is read
        images = ...  # read and decode the body
        probabilities, timing = await call.run(images, gone=client_gone(request))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType

import numpy as np
from starlette.requests import Request

from service.batcher import Timing, never
from service.errors import ClientGone, ServeError, Unavailable
from service.registry import ModelRegistry, ServedModel


class Inference:
    """One request's inference, counted from ``with`` to its end."""

    __slots__ = ("model", "registry", "started", "status")

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.started = time.perf_counter()
        self.model: ServedModel | None = None
        self.status = 500

    def __enter__(self) -> Inference:
        self.registry.in_flight += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.registry.in_flight -= 1
        if self.model is not None:
            self.model.active -= 1
        if isinstance(exc, ServeError):
            self.status = exc.status
        elif isinstance(exc, asyncio.CancelledError):
            self.status = ClientGone.status  # a gRPC call its client cancelled: 499, not 500
        model = self.model
        series = self.registry.metrics.model(
            *((model.model.variant, model.runtime_name) if model else ("unknown", "unknown"))
        )
        series.answered(self.status, time.perf_counter() - self.started)

    def resolve(
        self, name: str, runtime: str | None = None, version: int | None = None
    ) -> ServedModel:
        """The ready model called ``name`` (on ``runtime``, at ``version``): ModelRegistry.get.

        Also admission: 503 at once if the model's queue would miss its deadline, so that a
        request to be refused is refused before its body is read.
        """
        model = self.model = self.registry.get(name, runtime, version)
        model.active += 1  # a version being replaced waits for this request (service.versions)
        assert model.batcher is not None  # ready models have one
        model.batcher.admit()
        return model

    async def run(
        self, images: np.ndarray, gone: Callable[[], bool] = never
    ) -> tuple[np.ndarray, Timing]:
        """``images`` through the resolved model's batcher: probabilities and where time went."""
        model = self.model
        assert model is not None, "resolve() first"
        if model.batcher is None:  # unloaded, or its executor restarted, since resolve()
            raise Unavailable(f"{model.name} stopped serving; retry shortly")
        probabilities, timing = await model.batcher.submit(images, gone)
        series = self.registry.metrics.model(model.model.variant, model.runtime_name)
        series.served(timing.queue_s, timing.model_s)
        self.status = 200
        return probabilities, timing


def registry_of(request: Request) -> ModelRegistry:
    """The app's model registry (set by ``create_app``)."""
    registry: ModelRegistry = request.app.state.registry
    return registry


def url_version(text: str | None) -> int | None:
    """A version from a URL (None: the served one); -1, never served, if not a number."""
    if text is None:
        return None
    return int(text) if text.isascii() and text.isdigit() else -1
