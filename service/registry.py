"""The served models, variant x runtime: which ones, from where, their state and batchers.

:func:`plan` runs at construction and checks the repository against the settings (so a typo
fails at start, not at the first request). :meth:`ModelRegistry.load` runs in the background
during start-up and loads, warms and starts each model on its own: one that fails is marked
``failed`` with a short reason and the others serve. The service is ready once every model has
either loaded or failed, and at least one serves.

Names: ``depthwise@onnx`` is the depthwise variant on ONNX Runtime; a bare ``depthwise`` is that
variant on its default runtime (the ``default_runtime`` setting when that runtime is served for
it, else the first one served, in :data:`~modelrepo.layout.RUNTIME_NAMES` order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from modelrepo.layout import ModelName, ModelRepository, ModelVersion, RepositoryError
from modelrepo.metadata import ModelMetadata
from modelrepo.runtimes import RUNTIMES, Runtime, RuntimeLoadError
from service.batcher import ModelQueue
from service.decode import Limits
from service.errors import BadRequest, ModelNotLoaded, Unavailable, UnknownModel
from service.loading import open_model
from service.metrics import Metrics
from service.schemas import Batching
from service.settings import Settings

log = logging.getLogger(__name__)

# retired: replaced by a newer version; unloaded: by the operator (the repository API)
State = Literal["loading", "ready", "failed", "retired", "unloaded"]


class ConfigError(Exception):
    """The settings do not match what the model repository holds."""


class ModelLoadError(Exception):
    """A model failed to load and ``strict_models`` makes that fatal."""


@dataclass
class ServedModel:
    """One variant on one runtime: where it comes from, its state and, once ready, its batcher."""

    model: ModelVersion
    runtime_name: str
    state: State = "loading"
    reason: str | None = None  # why it failed, short, for clients (no paths, no tracebacks)
    runtime: Runtime | None = None  # in this process (None in a front end: see device)
    batcher: ModelQueue | None = None
    batch1_ms: float | None = None  # median model time of one image, measured at warm-up
    batching: Batching | None = None  # how it batches, once loaded (here or in the executor)
    device: str | None = None  # where it runs, once loaded (here or in the executor)
    active: int = 0  # requests that resolved it and are not done (a retired one waits for 0)

    @property
    def name(self) -> str:
        """``<variant>@<runtime>``."""
        return str(ModelName(self.model.variant, self.runtime_name))

    @property
    def cpu_only(self) -> bool:
        """Whether the runtime runs on the CPU only, whatever the service's device."""
        return RUNTIMES[self.runtime_name].cpu_only


@dataclass
class ServedVariant:
    """One variant: its exported version, training metadata and its models per runtime."""

    model: ModelVersion
    metadata: ModelMetadata
    runtimes: dict[str, ServedModel]
    default_runtime: str
    refused: dict[int, str] = field(default_factory=dict)  # versions refused, with the reason
    # With --version-policy latest:N, the older versions serving beside it, by version.
    older: dict[int, dict[str, ServedModel]] = field(default_factory=dict)

    def models(self) -> list[ServedModel]:
        """Its models of every version served, the newest version first."""
        return [*self.runtimes.values(), *(m for rs in self.older.values() for m in rs.values())]

    @property
    def default(self) -> ServedModel:
        """The model a bare variant name means."""
        return self.runtimes[self.default_runtime]


def plan(settings: Settings) -> dict[str, ServedVariant]:
    """Which version of each variant, on which runtimes; ConfigError if that can't be met."""
    repository = ModelRepository(settings.models_dir)
    found = repository.variants()
    if not found:
        raise ConfigError(
            f"no exported models under {settings.models_dir}; "
            "train some first (mnist-serve train) or point --models at a model repository"
        )
    wanted = settings.variants or found
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ConfigError(
            f"variants {missing} are not in {settings.models_dir} (it has {', '.join(found)})"
        )
    stray_pins = [name for name in settings.pins if name not in wanted]
    if stray_pins:
        raise ConfigError(f"pins name variants that are not served: {stray_pins}")
    planned = {}
    for name in wanted:
        try:
            model = repository.get(name, settings.pins.get(name))
            metadata = model.load_metadata()
        except RepositoryError as err:
            raise ConfigError(str(err)) from err
        present = model.runtimes()
        if settings.runtimes:
            absent = [r for r in settings.runtimes if r not in present]
            if absent:
                raise ConfigError(
                    f"{name} version {model.version} has no {', '.join(absent)} artifact "
                    f"(it has {', '.join(present)}); convert it with "
                    f"`mnist-serve export {name} --runtime {','.join(absent)}` "
                    "or leave those runtimes out"
                )
        chosen = [r for r in present if not settings.runtimes or r in settings.runtimes]
        default = settings.default_runtime if settings.default_runtime in chosen else chosen[0]
        models = {runtime: ServedModel(model, runtime) for runtime in chosen}
        planned[name] = ServedVariant(
            model,
            metadata,
            models,
            default,
            older=older_versions(repository, model, chosen, settings),
        )
    return planned


def older_versions(
    repository: ModelRepository, newest: ModelVersion, runtimes: list[str], settings: Settings
) -> dict[int, dict[str, ServedModel]]:
    """With latest:N, the N-1 newest complete versions below ``newest`` (pinned: none)."""
    count = settings.versions_served - 1
    if count < 1 or newest.variant in settings.pins:
        return {}
    complete = [
        v
        for v in repository.versions(newest.variant)
        if v.version < newest.version and all(v.artifact(r).exists() for r in runtimes)
    ]
    return {v.version: {r: ServedModel(v, r) for r in runtimes} for v in complete[-count:]}


@dataclass
class ModelRegistry:
    """Every served model, looked up by variant and runtime, and the service's readiness."""

    settings: Settings
    metrics: Metrics
    variants: dict[str, ServedVariant]
    gpu: bool  # whether GPU-capable runtimes use the GPU, chosen by service.device.place
    in_flight: int = 0  # predict requests in the server now, all models (kept by the handler)
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.limits = Limits(
            s.max_body_bytes,
            s.max_images_per_request,
            s.max_image_pixels,
            body_timeout_s=s.body_timeout_s,
            decode_slots=s.decode_slots,
        )
        self.metrics.in_flight_count = lambda: self.in_flight

    def models(self) -> list[ServedModel]:
        """Every served model, variant by variant, every version served."""
        return [m for v in self.variants.values() for m in v.models()]

    @property
    def loading(self) -> bool:
        """Whether some model is still loading."""
        return any(m.state == "loading" for m in self.models())

    @property
    def ready(self) -> bool:
        """Loading is over and at least one model serves."""
        return not self.loading and any(m.state == "ready" for m in self.models())

    def lookup(
        self, name: str, runtime: str | None = None, version: int | None = None
    ) -> ServedModel:
        """The model for ``name`` (``variant`` or ``variant@runtime``), in whatever state.

        404 for a variant, runtime or version not served; 400 for two different runtimes.
        """
        served = self.variants.get(name)
        if served is None:
            try:
                parsed = ModelName.parse(name)
            except ValueError as err:
                raise UnknownModel(str(err), known=self.names()) from None
            served = self.variants.get(parsed.variant)
            if served is None:
                raise UnknownModel(f"no variant named {parsed.variant!r}", known=self.names())
            if runtime is not None and parsed.runtime is not None and runtime != parsed.runtime:
                raise BadRequest(f"{name!r} names runtime {parsed.runtime!r}, ?runtime {runtime!r}")
            runtime = runtime or parsed.runtime
        model = served.runtimes.get(runtime or served.default_runtime)
        if model is None:
            raise UnknownModel(
                f"runtime {runtime!r} is not served for {served.model.variant!r} "
                f"(served: {', '.join(served.runtimes)})",
                known=self.names(),
            )
        if version is not None and version != model.model.version:
            older = served.older.get(version, {}).get(model.runtime_name)
            if older is not None:
                return older
            serving = ", ".join(map(str, [model.model.version, *sorted(served.older)]))
            asked = f"version {version}" if version > 0 else "that version (not a number >= 1)"
            raise UnknownModel(
                f"{asked} of {name!r} is not served (serving version {serving})",
                known=self.names(),
            )
        return model

    def get(self, name: str, runtime: str | None = None, version: int | None = None) -> ServedModel:
        """:meth:`lookup`, for a model that serves: 503 while loading or if it failed to load."""
        model = self.lookup(name, runtime, version)
        if model.state == "ready":
            return model
        if model.state == "failed":
            raise ModelNotLoaded(f"{model.name} failed to load: {model.reason}")
        if model.state == "unloaded":
            raise ModelNotLoaded(
                f"{model.name} was unloaded; POST /v2/repository/models/"
                f"{model.model.variant}/load serves it again"
            )
        raise Unavailable(f"{model.name} is still loading; retry shortly", retry_after_s=2)

    def names(self) -> list[str]:
        """Every name a client may use: each variant, and each variant@runtime."""
        return [
            n for v, s in self.variants.items() for n in (v, *(m.name for m in s.runtimes.values()))
        ]

    async def load(self, on_change: Callable[[], None] | None = None) -> None:
        """Load, warm and start every model, each on its own; failures are kept, not raised
        (with ``strict_models``, the first one is raised as ModelLoadError). ``on_change`` is
        called each time a model's state changes."""
        for model in self.models():
            try:
                await self.load_model(model)
            except Exception as err:  # one model's fault must not stop the others
                model.state, model.reason = "failed", short_reason(err)
                log.error("%s failed to load: %s", model.name, model.reason, exc_info=err)
                if self.settings.strict_models:
                    raise ModelLoadError(f"{model.name} failed to load: {model.reason}") from err
            if on_change is not None:
                on_change()
        # Every caller then settles the collector (service.collector: collect, freeze what is
        # alive, rarer young collections), so TensorFlow's object graph is never walked again.
        ready = [m.name for m in self.models() if m.state == "ready"]
        failed = [m.name for m in self.models() if m.state == "failed"]
        log.info("ready: %s%s", ", ".join(ready) or "nothing", f"; failed: {failed}" * bool(failed))

    async def load_model(self, model: ServedModel) -> None:
        """Load, warm and start one model (ready when it returns; raises if it cannot)."""
        opened = await open_model(
            self.settings, model, gpu=self.gpu, metrics=self.metrics, in_flight=self.in_flight_now
        )
        runtime, batcher = opened.runtime, opened.batcher
        model.runtime, model.batcher, model.device = runtime, batcher, runtime.device
        model.batch1_ms, model.batching = opened.batch1_ms, opened.batching
        model.state = "ready"
        log.info(
            "serving %s version %d on %s (batch 1: %.3f ms%s)",
            model.name,
            model.model.version,
            runtime.device,
            model.batch1_ms,
            ", lone requests run inline" if batcher.inline else "",
        )

    def in_flight_now(self) -> int:
        """Predict requests in this process now (for its batchers)."""
        return self.in_flight

    async def close(self) -> None:
        """Stop every batcher."""
        for model in self.models():
            if model.batcher is not None:
                await model.batcher.stop()


def tuned_worker_counts(settings: Settings) -> set[int | None]:
    """With ``tuned``: the worker counts the served models' tuned configurations ask for (None
    for a model without one). Workers serve every model, so only one count can apply."""
    from modelrepo.tuned import tuned_config

    return {
        found.workers if found else None
        for variant in plan(settings).values()
        for model in variant.runtimes.values()
        for found in [tuned_config(settings.models_dir, model.model.variant, model.runtime_name)]
    }


def short_reason(err: BaseException) -> str:
    """A failure as a client may see it: the error's own words, first line, no paths."""
    if isinstance(err, RuntimeLoadError):
        return str(err)
    return f"{type(err).__name__} while loading"
