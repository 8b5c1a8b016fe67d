"""The FastAPI application: ``create_app(settings)`` and its routes.

Start-up returns at once and loads the models in the background: ``/healthz`` answers from the
first moment, ``/readyz`` says 503 until every variant is loaded and warm, and predict
requests get 503 with ``Retry-After`` until then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import device as devices
from service.batcher import Timing
from service.decode import decode_request
from service.errors import ServeError, UnknownVariant
from service.metrics import Metrics
from service.registry import ServedVariant, VariantRegistry, plan
from service.schemas import ErrorResponse, PredictResponse, VariantInfo
from service.settings import Settings

log = logging.getLogger(__name__)

# A "1": a vertical stroke. Pasted into the docs' "Try it out", it gets a real answer.
EXAMPLE_IMAGE = [
    [1.0 if 4 <= r < 24 and 13 <= c < 15 else 0.0 for c in range(28)] for r in range(28)
]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "Malformed JSON or an undecodable image"),
        (404, "Unknown variant (the body lists the known ones)"),
        (413, "Body or image over the size limit"),
        (415, "Content-Type is not JSON, multipart, PNG or JPEG"),
        (422, "Wrong shape, values outside [0, 1], NaN, no ink, or too many images"),
        (503, "Still loading, or the variant's queue is full (see Retry-After)"),
    )
}
PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "image": {"description": "28x28 nested list or 784 flat list, in [0, 1]"},
                    "images": {"type": "array", "description": "several such images"},
                },
            },
            "examples": {
                "one image": {"value": {"image": EXAMPLE_IMAGE}},
                "flat 784": {"value": {"image": [0.0] * 300 + [1.0] * 184 + [0.0] * 300}},
            },
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    },
}


# The metadata.json fields that /variants lifts to the top level of each entry.
TRAINING_FIGURES = (
    "parameters", "macs", "test_accuracy", "test_loss", "epochs", "training_seconds",
    "epoch_seconds", "savedmodel_bytes", "created_at",
)  # fmt: skip


def get_registry(request: Request) -> VariantRegistry:
    """The app's variant registry."""
    registry: VariantRegistry = request.app.state.registry
    return registry


RegistryDep = Annotated[VariantRegistry, Depends(get_registry)]
router = APIRouter()


@router.post(
    "/predict/{variant}",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra={"requestBody": PREDICT_BODY},
    summary="Classify digits with one variant",
)
async def predict(variant: str, request: Request) -> Response:
    """Classify JSON pixels or an uploaded digit picture with the named variant."""
    started = time.perf_counter()
    registry = get_registry(request)  # not a Depends: dependency solving costs on the hot path
    metrics = registry.metrics
    label = variant if variant in registry.variants else "unknown"
    status = 500
    metrics.in_flight.labels(label).inc()
    try:
        served = registry.get(variant)
        assert served.batcher is not None and served.runtime is not None  # get() checked
        images = await decode_request(request, registry.limits)
        probabilities, timing = await served.batcher.submit(images)
        metrics.queue_seconds.labels(label).observe(timing.queue_s)
        metrics.model_seconds.labels(label).observe(timing.model_s)
        response = render_predictions(
            variant, served.runtime.version, probabilities, timing, started
        )
        status = 200
        return response
    except ServeError as err:
        status = err.status
        raise
    finally:
        metrics.in_flight.labels(label).dec()
        metrics.requests.labels(label, str(status)).inc()
        metrics.request_seconds.labels(label).observe(time.perf_counter() - started)


def render_predictions(
    variant: str, version: int, probabilities: np.ndarray, timing: Timing, started: float
) -> Response:
    """The predict response: one entry per image, and the server's timing in body and header."""
    queue_ms, model_ms = timing.queue_s * 1000, timing.model_s * 1000
    body = {
        "variant": variant,
        "version": version,
        "predictions": [
            {
                "digit": int(row.argmax()),
                "confidence": float(row.max()),
                "probabilities": row.tolist(),
            }
            for row in probabilities.astype(float)
        ],
        "timing": {
            "queue_ms": round(queue_ms, 4),
            "model_ms": round(model_ms, 4),
            "batch_images": timing.batch_images,
        },
    }
    app_ms = (time.perf_counter() - started) * 1000
    server_timing = f"queue;dur={queue_ms:.4f}, model;dur={model_ms:.4f}, app;dur={app_ms:.4f}"
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"Server-Timing": server_timing}
    )


@router.get("/variants", response_model=list[VariantInfo], summary="Served variants")
async def list_variants(registry: RegistryDep) -> list[VariantInfo]:
    """Every served variant with its training figures and device."""
    return [variant_info(name, served, registry) for name, served in registry.variants.items()]


@router.get(
    "/variants/{name}",
    response_model=VariantInfo,
    responses={404: ERRORS[404]},
    summary="A variant",
)
async def read_variant(name: str, registry: RegistryDep) -> VariantInfo:
    """One served variant with its training figures and device."""
    served = registry.variants.get(name)
    if served is None:
        raise UnknownVariant(f"no variant named {name!r}", known=sorted(registry.variants))
    return variant_info(name, served, registry)


@router.get("/healthz", summary="Liveness")
async def read_health(registry: RegistryDep) -> JSONResponse:
    """200 while the process is alive and its models have not failed to load."""
    if registry.failure:
        return JSONResponse({"status": "failed", "detail": registry.failure}, status_code=500)
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness")
async def read_ready(registry: RegistryDep) -> JSONResponse:
    """200 once every variant is loaded and warm; 503 before (or if loading failed)."""
    if registry.ready:
        return JSONResponse({"status": "ready", "variants": sorted(registry.variants)})
    status = "failed" if registry.failure else "loading"
    body = {"status": status, "detail": registry.failure or "loading and warming the models"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})


@router.get("/metrics", summary="Prometheus metrics")
async def read_metrics(registry: RegistryDep) -> Response:
    """Request counts, latency histograms, batch sizes and in-flight requests."""
    return Response(generate_latest(registry.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def read_root() -> RedirectResponse:
    """Send people who open the bare address to the API docs."""
    return RedirectResponse("/docs")


def variant_info(name: str, served: ServedVariant, registry: VariantRegistry) -> VariantInfo:
    """A served variant as the API shows it."""
    meta = served.metadata
    figures = {key: meta[key] for key in TRAINING_FIGURES if key in meta}
    return VariantInfo(
        name=name,
        version=served.model.version,
        ready=served.batcher is not None,
        device=devices.describe(registry.device) if served.runtime is not None else None,
        runtime="savedmodel",
        metadata=meta,
        **figures,
    )


async def handle_serve_error(request: Request, exc: Exception) -> JSONResponse:
    """Turn a ServeError into its status and JSON body; log the server-side ones."""
    assert isinstance(exc, ServeError)
    if exc.status >= 500 and exc.status != 503:
        log.error("%s on %s: %s", exc.code, request.url.path, exc.detail)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ConfigError or DeviceError at once if the settings can't be met."""
    settings = settings or Settings()
    planned = plan(settings)
    device = devices.configure(
        settings.device, settings.intra_op_threads, settings.inter_op_threads
    )
    log.info("models will run on %s", devices.describe(device))
    registry = VariantRegistry(settings, Metrics(), planned, device)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(registry.load(), name="load-models")
        try:
            yield
        finally:
            loading.cancel()
            await registry.close()

    app = FastAPI(
        title="mnist-serve",
        summary="Serve MNIST CNN variants side by side to measure which is faster when served.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.add_exception_handler(ServeError, handle_serve_error)
    app.include_router(router)
    return app
