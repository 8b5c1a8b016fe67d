"""One path for every inference API: resolve, decode, infer, render, and map errors.

Each API the service speaks (our ``/predict``, TF Serving's REST predict, KServe V2 over REST
and over gRPC) is one :class:`Adapter` subclass, as LitServe's ``LitSpec`` is: how its request
becomes images (``decode``), how the probabilities become its answer (``render``) and how an
error becomes its kind of error (``refuse``). :func:`infer` is the path they all take, so the
order of the steps, the admission check, the metrics and the client-gone check are written
once::

    answer = await infer(TF_SERVING, registry, request, Target("depthwise", version=2))

1. resolve the model (404, or 503 while loading or when its queue would miss its deadline:
   before the body is read, so a refused request costs nothing more);
2. decode the request (the adapter reads and checks its body: 400/413/415/422 with a message);
3. run the images through the model's batcher (the one shared by every protocol and, with
   several front ends, every process);
4. render the answer; any :class:`~service.errors.ServeError` on the way becomes the
   adapter's error answer, here and nowhere else (anything else, a bug, is logged and becomes
   a 500 in the API's own error shape: a V2 client reads ``{"error": ...}``, a gRPC one
   INTERNAL) (and a refusal for overload also tells the
   adapter to make the client's retry cheap: over HTTP, its connection is not read for a
   while, as when the admission guard sheds).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from service.batcher import Timing, never
from service.cycle import client_gone
from service.decode import Limits
from service.errors import INTERNAL_DETAIL, Overloaded, ServeError
from service.inference import Inference
from service.protocol import hold_refused
from service.registry import ModelRegistry, ServedModel

log = logging.getLogger(__name__)

Source = TypeVar("Source")  # what the API hands over: a Starlette Request, a gRPC call
Parsed = TypeVar("Parsed")  # what rendering needs of the request besides the images
Answer = TypeVar("Answer")  # what the API sends back: a Response, a protobuf message


@dataclass(frozen=True, slots=True)
class Target:
    """The model a request names: ``name`` (``depthwise``, ``depthwise@onnx``), at ``runtime``
    and ``version`` when given (None: the default runtime, the served version)."""

    name: str
    runtime: str | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Decoded(Generic[Parsed]):
    """A decoded request: the model input and what the adapter keeps for its answer."""

    images: np.ndarray
    request: Parsed


@dataclass(frozen=True, slots=True)
class Result(Generic[Parsed]):
    """What rendering gets: the model that answered, its outputs and where the time went."""

    target: Target  # as the request named it
    model: ServedModel
    probabilities: np.ndarray
    timing: Timing
    decoded: Decoded[Parsed]
    started: float  # perf_counter() when the request came in


class Adapter(ABC, Generic[Source, Parsed, Answer]):
    """One inference API's request and answer shapes."""

    @abstractmethod
    async def decode(self, source: Source, limits: Limits) -> Decoded[Parsed]:
        """Read and check the request: the images, or a ServeError saying what is wrong."""

    @abstractmethod
    def render(self, source: Source, result: Result[Parsed]) -> Answer:
        """The API's answer."""

    @abstractmethod
    async def refuse(self, source: Source, err: ServeError) -> Answer:
        """The API's error answer (or, for gRPC, end the call with its status)."""

    def gone(self, source: Source) -> Callable[[], bool]:
        """A cheap "has the client left?", so a batch skips its work (default: never)."""
        return never

    def back_off(self, source: Source) -> None:
        """The request is refused for overload: make its client's retry cost little
        (default: nothing)."""


class HttpAdapter(Adapter[Request, Parsed, Response]):
    """An API over HTTP: a Starlette request in, a response out, a gone client noticed."""

    def gone(self, source: Request) -> Callable[[], bool]:
        """The connection's own "disconnected" flag (service.protocol)."""
        return client_gone(source)

    def back_off(self, source: Request) -> None:
        """Read nothing more from the connection for a while (service.protocol)."""
        hold_refused(source.receive)


async def infer(
    adapter: Adapter[Source, Parsed, Answer],
    registry: ModelRegistry,
    source: Source,
    target: Target,
) -> Answer:
    """One inference request through ``adapter``: the path every API shares."""
    try:
        with Inference(registry) as call:
            model = call.resolve(target.name, target.runtime, target.version)
            decoded = await adapter.decode(source, registry.limits)
            probabilities, timing = await call.run(decoded.images, adapter.gone(source))
            return adapter.render(
                source, Result(target, model, probabilities, timing, decoded, call.started)
            )
    except ServeError as err:
        if isinstance(err, Overloaded):
            adapter.back_off(source)
        return await adapter.refuse(source, err)
    except Exception:  # a bug: logged, and answered 500 in the API's own error shape
        log.exception("unexpected error serving %s", target.name)
        return await adapter.refuse(source, ServeError(INTERNAL_DETAIL))
