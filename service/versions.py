"""Model versions go live without a restart, and a bad one never replaces a good one.

Like TF Serving's file-system source and its availability-preserving policy: every ``poll_s``
seconds the process that owns the models (the single process, the executor, or each replica)
looks at the model repository. For each served variant that is not pinned (``--pins``: TF
Serving's "specific" policy) the version wanted is the latest *complete* one:

* an integer folder with its SavedModel, ``metadata.json`` and the artifact of every runtime
  served (``mnist-serve train`` writes all of them in a staging folder and publishes it by one
  rename); a version whose served artifacts are not all there yet is waited for;
* unchanged between two polls (file count, bytes and newest modification time), so a folder
  still being copied in by hand is never read.

The new version is loaded for every served runtime, warmed, and checked: the runtimes must
agree on a probe batch (within ``AGREEMENT``), as the export checked them against the SavedModel.
Only then is it swapped in, atomically per variant: requests already holding the old model
finish on it, the next ones get the new one, and the old one is stopped (and its memory given
back) once its last request is done. A version that fails to load, to warm or to agree is
refused: the serving version stays, ``/variants`` shows the refusal and its reason, and
``mnist_serve_version_refusals_total`` counts it. Removing the serving version's folder makes
the latest remaining one wanted again, which is swapped in the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from modelrepo.contract import INPUT_SHAPE
from modelrepo.layout import ModelRepository, ModelVersion, RepositoryError
from service import collector
from service.registry import (
    ModelRegistry,
    ServedModel,
    ServedVariant,
    older_versions,
    short_reason,
)

log = logging.getLogger(__name__)
AGREEMENT = 1e-3  # largest probability difference allowed between a version's runtimes
RETIRE_TIMEOUT_S = 60.0  # an old model still busy after this is stopped anyway
# Before counting a replaced model's requests: a front end may have resolved one just before the
# swap that has not reached the executor yet; it still finds the old model serving.
RETIRE_GRACE_S = 0.25


def signature(folder: Path) -> tuple[int, int, float]:
    """(files, bytes, newest mtime) of a version folder: unchanged means nothing is writing."""
    files = [p.stat() for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(s.st_size for s in files), max((s.st_mtime for s in files), default=0)


def probe() -> np.ndarray:
    """A small batch every runtime of a version must answer alike: blank, a stroke, noise."""
    batch = np.zeros((3, *INPUT_SHAPE), dtype=np.float32)
    batch[1, 4:24, 13:15, 0] = 1.0
    batch[2] = np.random.default_rng(0).random(INPUT_SHAPE, dtype=np.float32)
    return batch


class VersionWatcher:
    """Polls the repository and swaps versions in (see the module docstring)."""

    def __init__(
        self, registry: ModelRegistry, on_change: Callable[[], None] | None = None
    ) -> None:
        self.registry = registry
        self.repository = ModelRepository(registry.settings.models_dir)
        self.on_change = on_change or (lambda: None)
        self._seen: dict[tuple[str, int], tuple[int, int, float]] = {}
        self.unloaded: set[str] = set()  # by the operator: not polled until loaded again
        # One change of the served versions at a time (polling, start-up recovery and the
        # operator's loads and unloads would otherwise build on each other's stale state).
        self.changing = asyncio.Lock()

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.registry.settings.poll_s)
            try:
                await self.poll()
            except Exception:  # a bad poll must not end polling
                log.exception("polling the model repository failed")

    def wanted(self, served: ServedVariant) -> ModelVersion | None:
        """The version ``served`` should move to now, or None (stay)."""
        name = served.model.variant
        try:
            latest = self.repository.get(name)
        except RepositoryError:
            return None  # no version left at all: keep serving what is loaded
        if latest.version == served.model.version or latest.version in served.refused:
            return None
        if not all(latest.artifact(r).exists() for r in served.runtimes):
            return None  # its converted artifacts are not all written yet
        if not latest.metadata_path.is_file():
            return None
        key = (name, latest.version)
        now = signature(latest.path)
        settled = self._seen.get(key) == now
        self._seen[key] = now
        return latest if settled else None

    async def poll(self) -> None:
        """One look at the repository; swap what should be swapped."""
        settings = self.registry.settings
        if settings.version_policy == "specific":
            return
        for name, served in list(self.registry.variants.items()):
            if name in settings.pins or name in self.unloaded or not served.runtimes:
                continue
            async with self.changing:
                if name in self.unloaded:
                    continue
                await self.forget_removed(self.registry.variants[name])
                candidate = self.wanted(self.registry.variants[name])
                if candidate is not None:
                    await self.swap(self.registry.variants[name], candidate)

    async def forget_removed(self, served: ServedVariant) -> None:
        """Stop serving older versions (latest:N) whose folders were removed."""
        present = {v.version for v in self.repository.versions(served.model.variant)}
        gone = [v for v in served.older if v not in present]
        if not gone:
            return
        kept = {v: models for v, models in served.older.items() if v not in gone}
        self.registry.variants[served.model.variant] = replace(served, older=kept)
        log.info(
            "%s: version(s) %s removed from the repository: unloaded", served.model.variant, gone
        )
        self.on_change()
        await retire([m for v in gone for m in served.older[v].values()])

    async def recover(self) -> None:
        """After start-up loading: a variant whose wanted version did not load serves the newest
        older version that does (the failed one is listed as refused), as a swap would have
        kept it. Pinned variants stay as they are."""
        async with self.changing:
            await self._recover()

    async def _recover(self) -> None:
        for name, served in list(self.registry.variants.items()):
            failed = [m for m in served.runtimes.values() if m.state == "failed"]
            if not failed or name in self.registry.settings.pins:
                continue
            served.refused[served.model.version] = failed[0].reason or "it did not load"
            older = [v for v in self.repository.versions(name) if v.version < served.model.version]
            for candidate in reversed(older):
                complete = all(candidate.artifact(r).exists() for r in served.runtimes)
                if complete and await self.swap(self.registry.variants[name], candidate):
                    break

    async def unload(self, name: str) -> None:
        """Stop serving variant ``name`` (after its requests in flight) until :meth:`load`."""
        async with self.changing:
            await self._unload(name)

    async def _unload(self, name: str) -> None:
        served = self.registry.variants[name]
        self.unloaded.add(name)
        reason = "unloaded by the operator (the repository API)"
        placeholders = {
            r: ServedModel(served.model, r, "unloaded", reason) for r in served.runtimes
        }
        self.registry.variants[name] = ServedVariant(
            served.model, served.metadata, placeholders, served.default_runtime, served.refused
        )
        log.info("%s unloaded", name)
        self.on_change()
        await retire(served.models())  # latest:N's older versions too

    async def load(self, name: str) -> str | None:
        """Serve variant ``name`` again (its pinned or latest version) if it is not serving:
        None once it serves, else why it cannot (the serving state is kept)."""
        async with self.changing:
            return await self._load(name)

    async def _load(self, name: str) -> str | None:
        self.unloaded.discard(name)
        served = self.registry.variants[name]
        if all(m.state == "ready" for m in served.runtimes.values()):
            return None
        try:
            candidate = self.repository.get(name, self.registry.settings.pins.get(name))
        except RepositoryError as err:
            return str(err)
        served.refused.pop(candidate.version, None)  # asked for explicitly: try it again
        if not await self.swap(served, candidate):
            return served.refused.get(candidate.version, "it did not load")
        await self._load_older(name)
        return None

    async def _load_older(self, name: str) -> None:
        """With latest:N, the older versions an unload retired serve again beside the newest
        (one that cannot load is logged and left out, as at start-up)."""
        served, registry = self.registry.variants[name], self.registry
        wanted = older_versions(
            self.repository, served.model, list(served.runtimes), registry.settings
        )
        for version, models in wanted.items():
            if version in served.older:
                continue
            try:
                for model in models.values():
                    await registry.load_model(model)
            except Exception as err:
                log.error("%s version %d stays out: %s", name, version, short_reason(err))
                await retire(list(models.values()), timeout_s=0)
                continue
            served.older[version] = models
        self.on_change()

    async def swap(self, served: ServedVariant, candidate: ModelVersion) -> bool:
        """Load, warm and check ``candidate``; swap it in (True), or refuse it (False). A
        version already serving as an older one (latest:N) is promoted as it is."""
        name, registry = served.model.variant, self.registry
        started = time.perf_counter()
        promoted = served.older.get(candidate.version)
        fresh = promoted or {r: ServedModel(candidate, r) for r in served.runtimes}
        try:
            metadata = candidate.load_metadata()
            if promoted is None:
                for model in fresh.values():
                    await registry.load_model(model)
                # On this thread while no request can reach them yet. A promoted version is
                # serving (its model threads busy): LiteRT and OpenVINO cannot run a second
                # call at once, and it has been serving as it is.
                check_agreement(list(fresh.values()))
        except Exception as err:
            reason = short_reason(err) if not isinstance(err, VersionRejected) else str(err)
            served.refused[candidate.version] = reason
            registry.metrics.version_refusals.labels(name).inc()
            log.error("refused %s version %d: %s", name, candidate.version, reason)
            log.debug("why %s version %d was refused", name, candidate.version, exc_info=err)
            if promoted is None:
                await retire(list(fresh.values()), timeout_s=0)
            self.on_change()
            return False
        older, dropped = self.keep_older(served, candidate.version)
        registry.variants[name] = ServedVariant(
            candidate, metadata, fresh, served.default_runtime, served.refused, older
        )
        registry.metrics.version_swaps.labels(name).inc()
        took_ms = (time.perf_counter() - started) * 1000
        old = served.model.version
        log.info(
            "%s: version %d replaces %d (ready in %.0f ms)", name, candidate.version, old, took_ms
        )
        self.on_change()
        await retire(dropped)
        return True

    def keep_older(
        self, served: ServedVariant, newest: int
    ) -> tuple[dict[int, dict[str, ServedModel]], list[ServedModel]]:
        """Which versions keep serving beside ``newest`` (latest:N: the N-1 newest below it
        that are still in the repository), and the models to retire."""
        serving = {served.model.version: served.runtimes, **served.older}
        present = {v.version for v in self.repository.versions(served.model.variant)}
        below = sorted(v for v in serving if v < newest and v in present)
        keep = below[max(0, len(below) - (self.registry.settings.versions_served - 1)) :]
        older = {v: serving[v] for v in keep}
        dropped = [
            m
            for v, models in serving.items()
            if v not in keep and v != newest
            for m in models.values()
        ]
        return older, dropped


class VersionRejected(Exception):
    """A version loaded but cannot serve (its runtimes disagree)."""


def check_agreement(models: list[ServedModel]) -> None:
    """Every runtime of a new version answers the probe alike; VersionRejected if not."""
    batch = probe()
    answers = {m.runtime_name: m.runtime.predict(batch) for m in models if m.runtime is not None}
    if not answers:
        return
    reference_name = "savedmodel" if "savedmodel" in answers else next(iter(answers))
    reference = answers[reference_name]
    for runtime, answer in answers.items():
        if answer.shape != reference.shape or not np.isfinite(answer).all():
            raise VersionRejected(f"{runtime} answers {answer.shape}, not {reference.shape}")
        diff = float(np.abs(answer - reference).max())
        if diff > AGREEMENT:
            raise VersionRejected(
                f"{runtime} disagrees with {reference_name} by {diff:.2g} (limit {AGREEMENT:g})"
            )


async def retire(models: list[ServedModel], timeout_s: float = RETIRE_TIMEOUT_S) -> None:
    """Stop ``models`` once their last request is done (or after ``timeout_s``); free them."""
    if timeout_s > 0:
        await asyncio.sleep(RETIRE_GRACE_S)
    deadline = time.monotonic() + timeout_s
    while any(m.active for m in models) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for model in models:
        if model.state != "unloaded":
            model.state = "retired"  # first: a straggler now goes to the successor
        batcher, model.batcher = model.batcher, None
        if batcher is not None:
            with contextlib.suppress(Exception):
                await batcher.stop()
        model.runtime = None
    collector.release("models retired")  # they were frozen out of the collector's way
