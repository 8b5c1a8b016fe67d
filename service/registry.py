"""The served variants: which ones, from where, and their loaded runtimes and batchers.

:func:`plan` runs at construction and checks the repository against the settings (so a typo
fails at start, not at the first request); :meth:`VariantRegistry.load` runs in the background
during start-up, loading and warming each model, and only then marks the service ready.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelrepo.layout import ModelRepository, ModelVersion, RepositoryError
from service.batcher import Batcher
from service.decode import Limits
from service.errors import Unavailable, UnknownVariant
from service.metrics import Metrics
from service.runtime import RUNTIMES, Runtime
from service.settings import Settings

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """The settings do not match what the model repository holds."""


@dataclass
class ServedVariant:
    """One variant as served: where it came from, and once loaded, its runtime and batcher."""

    model: ModelVersion
    metadata: dict[str, Any]
    runtime: Runtime | None = None
    batcher: Batcher | None = None


def plan(settings: Settings) -> dict[str, ServedVariant]:
    """Which version of which variant to serve; ConfigError if the settings can't be met."""
    repository = ModelRepository(settings.models_dir)
    found = repository.variants()
    if not found:
        raise ConfigError(
            f"no exported models under {settings.models_dir.resolve()}; "
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
            planned[name] = ServedVariant(model, model.read_metadata())
        except RepositoryError as err:
            raise ConfigError(str(err)) from err
    return planned


@dataclass
class VariantRegistry:
    """All served variants and the service's readiness."""

    settings: Settings
    metrics: Metrics
    variants: dict[str, ServedVariant]
    device: str  # where the models run, chosen by service.device.configure
    ready: bool = False
    failure: str | None = None
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.limits = Limits(s.max_body_bytes, s.max_images_per_request, s.max_image_pixels)

    def get(self, name: str) -> ServedVariant:
        """A ready variant; 404 for a name not served, 503 while loading."""
        served = self.variants.get(name)
        if served is None:
            raise UnknownVariant(f"no variant named {name!r}", known=sorted(self.variants))
        if served.batcher is None:
            raise Unavailable("the models are still loading; retry shortly", retry_after_s=2)
        return served

    async def load(self) -> None:
        """Load, warm and start every variant; then report ready. Failures are kept, not raised."""
        try:
            settings = self.settings
            for name, served in self.variants.items():
                runtime = await asyncio.to_thread(
                    RUNTIMES["savedmodel"].load, served.model, self.device
                )
                await asyncio.to_thread(warm_up, runtime, settings.max_batch_size)
                batcher = Batcher(
                    runtime.predict,
                    max_batch_size=settings.max_batch_size,
                    max_wait_s=settings.max_wait_ms / 1000,
                    max_queue=settings.max_queue,
                    merge=settings.batching,
                    on_batch=self.metrics.batch_size.labels(name).observe,
                )
                batcher.start()
                served.runtime, served.batcher = runtime, batcher
                log.info("serving %s version %d on %s", name, served.model.version, self.device)
            # Requests allocate many short-lived objects (784 floats each), which triggers
            # garbage collections; a full one would walk TensorFlow's large, permanent object
            # graph (a ~100 ms pause, seen as p99). Freezing moves everything alive now out of
            # the collector's way.
            gc.collect()
            gc.freeze()
            self.ready = True
            log.info("ready: %s", ", ".join(self.variants))
        except Exception as err:
            self.failure = f"{type(err).__name__}: {err}"
            log.exception("loading the models failed")

    async def close(self) -> None:
        """Stop every batcher."""
        for served in self.variants.values():
            if served.batcher is not None:
                await served.batcher.stop()


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """Every batch size up to 64, then powers of two and the maximum (large sizes are rarer)."""
    sizes = set(range(1, min(max_batch_size, 64) + 1))
    sizes |= {2**k for k in range(7, 11) if 2**k <= max_batch_size} | {max_batch_size}
    return sorted(sizes)


def warm_up(runtime: Runtime, max_batch_size: int) -> None:
    """Run one batch of each size the batcher forms, so no request pays for a first call."""
    for size in warm_up_sizes(max_batch_size):
        runtime.predict(np.zeros((size, 28, 28, 1), dtype=np.float32))
