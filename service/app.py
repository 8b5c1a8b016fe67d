"""The FastAPI application: ``create_app(settings)`` and its routes.

Start-up returns at once and loads the models in the background: ``/healthz`` answers from the
first moment, ``/readyz`` says 503 until every variant is loaded and warm, and predict
requests get 503 with ``Retry-After`` until then. (With ``strict_models`` the models load
during start-up instead, and one that fails stops the server.)

:func:`guarded_app` wraps the app in ``service.admission.AdmissionGuard``, outermost, which
sheds inference requests at once when the server is full. The API docs (``/docs``,
``/redoc``) load their scripts from the ``fastapi-offline`` package, not a CDN, so they work
on an offline machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST

from modelrepo.metadata import Conversion
from service import __version__, kserve, kserve_repository, native, tfserving
from service.admission import AdmissionGuard
from service.batcher import Batcher
from service.decode import decode_request
from service.engine import WorkerContext, models_for
from service.errors import NotFound, ServeError, UnknownModel
from service.fastpath import FastPath, HotRoutes
from service.inference import registry_of
from service.metrics import Metrics
from service.native import error_response
from service.openapi import ERRORS, PREDICT_BODY
from service.protocol import hold_refused
from service.registry import ModelRegistry, ServedVariant, plan
from service.reports import find_runs
from service.schemas import (
    EngineInfo,
    PreparedImages,
    RefusedVersion,
    RunInfo,
    RuntimeInfo,
    VariantInfo,
)
from service.settings import Settings
from service.shared import InFlight

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).with_name("static")  # the web page: plain HTML, CSS and JS files

# The metadata.json fields that /variants lifts to the top level of each entry.
TRAINING_FIGURES = (
    "parameters", "macs", "test_accuracy", "test_loss", "epochs", "training_seconds",
    "epoch_seconds", "savedmodel_bytes", "created_at",
)  # fmt: skip
# metadata.json fields that describe the training machine, not the model: not for clients.
PRIVATE_METADATA = ("data_source",)


RegistryDep = Annotated[ModelRegistry, Depends(registry_of)]
router = APIRouter()


@router.get("/variants", response_model=list[VariantInfo], summary="Served variants")
async def list_variants(registry: RegistryDep) -> list[VariantInfo]:
    """Every served variant with its training figures and, per runtime, device and state."""
    return [variant_info(served) for served in registry.variants.values()]


@router.get(
    "/variants/{name}",
    response_model=VariantInfo,
    responses={404: ERRORS[404]},
    summary="A variant",
)
async def read_variant(name: str, registry: RegistryDep) -> VariantInfo:
    """One served variant with its training figures and, per runtime, device and state."""
    served = registry.variants.get(name)
    if served is None:
        raise UnknownModel(f"no variant named {name!r}", known=registry.names())
    return variant_info(served)


@router.get("/healthz", summary="Liveness")
async def read_health() -> JSONResponse:
    """200 while the process is alive (a model that failed to load does not make it unhealthy)."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness")
async def read_ready(request: Request, registry: RegistryDep) -> JSONResponse:
    """200 once every model has loaded or failed and at least one serves, in every worker
    process; 503 before."""
    models = registry.models()
    ready = [m.name for m in models if m.state == "ready"]
    failed = {m.name: m.reason for m in models if m.state == "failed"}
    worker: WorkerContext | None = request.app.state.worker
    body: dict[str, Any] = {"models": ready, "failed": failed}
    if worker is not None:
        body["processes"] = worker.shared.readiness()
    if registry.ready and (worker is None or worker.shared.all_ready()):
        return JSONResponse({"status": "ready", **body})
    loading = [m.name for m in models if m.state == "loading"]
    status = "loading" if registry.loading or worker is not None else "failed"
    body = {"status": status, **body, "loading": loading}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})


@router.get("/engine", response_model=EngineInfo, summary="The serving engine")
async def read_engine(request: Request, registry: RegistryDep) -> EngineInfo:
    """The engine, its worker processes and the admission limit they share."""
    worker: WorkerContext | None = request.app.state.worker
    limit = registry.settings.max_in_flight
    here = sorted(
        f"{m.name}:{m.model.version}" for m in registry.models() if isinstance(m.batcher, Batcher)
    )
    if worker is None:
        return EngineInfo(
            engine="single",
            workers=1,
            process=0,
            pids=[os.getpid()],
            executor_pid=None,
            max_in_flight=limit,
            in_process=here,
        )
    pids = worker.shared.pids()
    executor = pids[worker.workers] if worker.executor_socket is not None else None
    return EngineInfo(
        engine=worker.engine,
        workers=worker.workers,
        process=worker.process,
        pids=pids[: worker.workers],
        executor_pid=executor or None,
        max_in_flight=limit,
        in_process=here,
    )


@router.get("/metrics", summary="Prometheus metrics")
async def read_metrics(registry: RegistryDep) -> Response:
    """Request counts, latency histograms, batch sizes and in-flight requests."""
    return Response(await registry.metrics.scrape(), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/prepare",
    response_model=PreparedImages,
    responses={k: v for k, v in ERRORS.items() if k != 503},
    openapi_extra={"requestBody": PREDICT_BODY},
    summary="The 28x28 images a model would see",
)
async def prepare(request: Request, registry: RegistryDep) -> PreparedImages:
    """Decode and prepare a body exactly as predict does, and return the model input."""
    images = await decode_request(request, registry.limits)
    return PreparedImages(images=np.round(images[..., 0], 4).tolist())


@router.get("/reports", response_model=list[RunInfo], summary="Load-test, explore, tune reports")
async def list_reports(registry: RegistryDep) -> list[RunInfo]:
    """The runs with a report under the runs folder (load tests, explore, tune), newest first."""
    runs = find_runs(registry.settings.runs_dir)
    return [
        RunInfo(
            name=run.name,
            created_at=run.created_at,
            models=run.models,
            url=f"/reports/{run.name}/{run.report.name}",
            kind=run.kind,
        )
        for run in runs.values()
    ]


def listed_report(registry: ModelRegistry, name: str, page: str) -> FileResponse:
    """The run ``name``'s ``page``, only if the listing finds that run with that page."""
    run = find_runs(registry.settings.runs_dir).get(name)
    if run is None or run.report.name != page:
        raise NotFound(f"no report named {name!r} with a {page}")
    return FileResponse(run.report, media_type="text/html")


@router.get("/reports/{name}/report.html", response_class=FileResponse, summary="A report")
async def read_report(name: str, registry: RegistryDep) -> FileResponse:
    """One run's self-contained report.html (only runs the listing finds are served)."""
    return listed_report(registry, name, "report.html")


@router.get("/reports/{name}/explore.html", response_class=FileResponse, summary="An explore")
async def read_explore(name: str, registry: RegistryDep) -> FileResponse:
    """One explore run's self-contained explore.html (Pareto front, correlations)."""
    return listed_report(registry, name, "explore.html")


@router.get("/reports/{name}/tune.html", response_class=FileResponse, summary="A tune run")
async def read_tune(name: str, registry: RegistryDep) -> FileResponse:
    """One tune run's tune.html (each model's trials and best configuration)."""
    return listed_report(registry, name, "tune.html")


@router.get("/", include_in_schema=False)
@router.get("/ui", include_in_schema=False)
async def read_page() -> FileResponse:
    """The web page: draw a digit, see every model answer, browse the reports."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def variant_info(served: ServedVariant) -> VariantInfo:
    """A served variant as the API shows it: figures, and each runtime's state and device."""
    meta = served.metadata.to_json()
    figures = {key: meta[key] for key in TRAINING_FIGURES}
    public = {key: value for key, value in meta.items() if key not in PRIVATE_METADATA}
    runtimes = [
        RuntimeInfo(
            runtime=m.runtime_name,
            model=m.name,
            state=m.state,
            device=m.device,
            cpu_only=m.cpu_only,
            reason=m.reason,
            batch1_ms=m.batch1_ms,
            batching=m.batching,
            max_abs_diff=_max_abs_diff(served.metadata.conversion(m.runtime_name)),
        )
        for m in served.runtimes.values()
    ]
    default = served.default
    return VariantInfo(
        name=served.model.variant,
        version=served.model.version,
        ready=default.state == "ready",
        device=default.device,
        runtime=served.default_runtime,
        runtimes=runtimes,
        metadata=public,
        versions=[served.model.version, *sorted(served.older, reverse=True)],
        refused=[RefusedVersion(version=v, reason=r) for v, r in sorted(served.refused.items())],
        **figures,
    )


def _max_abs_diff(conversion: Conversion | None) -> float | None:
    return conversion.max_abs_diff if conversion is not None else None


async def handle_serve_error(request: Request, exc: Exception) -> Response:
    """Turn a ServeError into its status and JSON body (the same as ``/predict``'s)."""
    assert isinstance(exc, ServeError)
    return error_response(exc, request.url.path)


HOT_ROUTES = HotRoutes(
    predict=native.predict,
    tf_predict=tfserving.tf_predict,
    tf_predict_version=tfserving.tf_predict_version,
    v2_infer=kserve.v2_infer,
    v2_infer_version=kserve.v2_infer_version,
)


def guarded_app(app: FastAPI, in_flight: InFlight | None = None) -> AdmissionGuard:
    """``app`` behind its admission guard (shedding before any of FastAPI's layers run), with
    the inference routes' fast path (``service.fastpath``) just inside it. ``in_flight``: the
    server-wide count, when several processes serve."""
    registry: ModelRegistry = app.state.registry
    return AdmissionGuard(
        FastPath(app, HOT_ROUTES),
        registry.settings.max_in_flight,
        on_shed=registry.metrics.shed.labels("in_flight").inc,
        in_flight=in_flight,
        on_refused=hold_refused,
    )


def create_app(settings: Settings | None = None, worker: WorkerContext | None = None) -> FastAPI:
    """Build the app; ConfigError or DeviceError at once if the settings can't be met.

    ``worker``: this process is one of several serving the port (``service.supervisor``).
    """
    settings = settings or Settings()
    planned = plan(settings)
    models = models_for(settings, worker)
    registry = ModelRegistry(settings, Metrics(), planned, gpu=models.gpu)
    if worker is not None:
        shared = worker.shared
        registry.metrics.in_flight_count = lambda: shared.in_flight

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc_server = None
        if settings.grpc_port:
            from service import kserve_grpc

            grpc_server = await kserve_grpc.start(
                registry,
                settings.host,
                settings.grpc_port,
                lambda: models.control,
                shared=worker is not None,
            )
        await models.start(registry)
        try:
            yield
        finally:
            try:
                if grpc_server is not None:
                    await grpc_server.stop(grace=2)
                await models.stop(registry)
            finally:
                registry.metrics.flush()

    app = FastAPIOffline(
        title="mnist-serve",
        summary="Serve MNIST CNN variants side by side to measure which is faster when served.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.worker = worker
    app.state.models = models
    app.add_exception_handler(ServeError, handle_serve_error)
    app.include_router(native.router)
    app.include_router(router)
    app.include_router(tfserving.router)
    app.include_router(kserve.router)
    app.include_router(kserve_repository.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
