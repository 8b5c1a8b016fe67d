"""Opening one model: the settings it runs with, its artifact loaded and warmed, its batcher.

:class:`~service.registry.ModelRegistry` opens the models a process serves with
:func:`open_model`; a front end's copy of a light model (:mod:`service.copies`) opens its own the
same way. With ``--tuned`` a model runs with the batching and threads ``mnist-serve tune`` saved
for it (:func:`model_settings`); :class:`~service.schemas.Batching` records which, for
``/variants``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from modelrepo.contract import INPUT_SHAPE
from modelrepo.runtimes import LoadOptions, Runtime, load_runtime, median_call_ms
from service.batcher import Batcher
from service.metrics import Metrics
from service.schemas import Batching
from service.settings import Settings

if TYPE_CHECKING:
    from service.registry import ServedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opened:
    """A model loaded, warmed and batching."""

    runtime: Runtime
    batcher: Batcher
    batch1_ms: float  # median model time of one image, measured at warm-up
    batching: Batching  # how it batches: the service's settings or its tuned configuration


def model_settings(settings: Settings, model: ServedModel) -> Settings:
    """The settings ``model`` runs with: the service's, or with ``tuned``, the batching and
    threads ``mnist-serve tune`` saved for it (modelrepo.tuned)."""
    if not settings.tuned:
        return settings
    from modelrepo.tuned import tuned_config

    found = tuned_config(settings.models_dir, model.model.variant, model.runtime_name)
    if found is None:
        log.info("%s has no tuned configuration: the service's settings apply", model.name)
        return settings
    log.info("%s runs with its tuned configuration: %s", model.name, found)
    return settings.model_copy(
        update={
            "max_batch_size": found.max_batch_size,
            "max_wait_ms": found.max_wait_ms,
            "intra_op_threads": found.intra_op_threads,
        }
    )


async def open_model(
    settings: Settings,
    model: ServedModel,
    *,
    gpu: bool,
    metrics: Metrics,
    in_flight: Callable[[], int],
) -> Opened:
    """Load ``model``'s artifact, warm it and start a batcher on it (the model itself is left
    unchanged: a front end's copy of a model the executor serves opens it too)."""
    tuned = model_settings(settings, model)
    options = LoadOptions(gpu=gpu and not model.cpu_only, threads=tuned.intra_op_threads)
    artifact = model.model.artifact(model.runtime_name)
    runtime = await asyncio.to_thread(load_runtime, model.runtime_name, artifact, options)
    batch1_ms = await asyncio.to_thread(warm_up, runtime, tuned.max_batch_size)
    labels = (model.model.variant, model.runtime_name)
    batcher = Batcher(
        runtime.predict,
        max_batch_size=tuned.max_batch_size,
        max_wait_s=tuned.max_wait_ms / 1000,
        max_queue=tuned.max_queue,
        merge=tuned.batching,
        inline=batch1_ms <= tuned.inline_max_model_ms,
        in_flight=in_flight,  # the process's requests: inline only alone, wait only for more
        deadline_s=tuned.max_queue_wait_ms / 1000,
        batch_s=batch1_ms / 1000,
        max_request_images=settings.max_images_per_request,
        on_batch=metrics.batch_size.labels(*labels).observe,
    )
    batcher.start()
    batching = Batching(
        max_batch_size=tuned.max_batch_size,
        max_wait_ms=tuned.max_wait_ms,
        merges=tuned.batching,
        intra_op_threads=tuned.intra_op_threads,
        tuned=tuned is not settings,
    )
    return Opened(runtime, batcher, batch1_ms, batching)


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """Every batch size up to 64, then powers of two and the maximum (large sizes are rarer)."""
    sizes = set(range(1, min(max_batch_size, 64) + 1))
    sizes |= {2**k for k in range(7, 11) if 2**k <= max_batch_size} | {max_batch_size}
    return sorted(sizes)


def warm_up(runtime: Runtime, max_batch_size: int) -> float:
    """Run one batch of each size the batcher forms; return the median batch-1 time in ms."""
    for size in warm_up_sizes(max_batch_size):
        runtime.predict(np.zeros((size, *INPUT_SHAPE), dtype=np.float32))
    return median_call_ms(runtime, np.zeros((1, *INPUT_SHAPE), dtype=np.float32), 50, 0)
