"""``tuned.json``: the best serving configuration ``mnist-serve tune`` found for a model, kept
beside it (``<models>/<variant>/tuned.json``, one entry per runtime) and applied by a service
started with ``--tuned``.

The file sits in the variant's folder, not in a version folder: TF Serving and the repository
ignore it, and a new version keeps serving with the configuration tuned for the one before it
until it is tuned again (each entry records the version it was tuned on).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TUNED_FILE = "tuned.json"


class TunedError(ValueError):
    """A ``tuned.json`` that cannot be read."""


class ServingConfig(BaseModel):
    """The settings ``tune`` searches: per model (batching, threads) and per service (workers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_size: int = Field(ge=1, le=1024)
    max_wait_ms: float = Field(ge=0, le=1000)
    intra_op_threads: int = Field(ge=0)
    workers: int = Field(ge=0, description="0: one front end per core")

    def args(self) -> tuple[str, ...]:
        """As ``mnist-serve serve`` options."""
        return (
            "--max-batch-size", str(self.max_batch_size),
            "--max-wait-ms", f"{self.max_wait_ms:g}",
            "--intra-op-threads", str(self.intra_op_threads),
            "--workers", str(self.workers),
        )  # fmt: skip

    def __str__(self) -> str:
        return (
            f"batch {self.max_batch_size}, wait {self.max_wait_ms:g} ms, "
            f"{self.intra_op_threads or 'default'} intra-op thread(s), "
            f"{self.workers or 'one per core'} worker(s)"
        )


class TunedEntry(BaseModel):
    """One runtime's tuned configuration and what it achieved when tuned."""

    model_config = ConfigDict(frozen=True)

    config: ServingConfig
    version: int  # the version it was tuned on
    slo: str
    max_rate: float  # highest Poisson rate within the SLO, at this configuration
    p50_ms: float  # at one client
    tuned_at: str


class TunedFile(BaseModel):
    """``tuned.json``: per runtime, the best configuration."""

    runtimes: dict[str, TunedEntry] = {}


def tuned_path(models_dir: Path, variant: str) -> Path:
    """Where ``variant``'s tuned configurations live."""
    return Path(models_dir) / variant / TUNED_FILE


def load_tuned(models_dir: Path, variant: str) -> TunedFile:
    """``variant``'s tuned configurations (none when there is no file); TunedError if the file
    cannot be read."""
    path = tuned_path(models_dir, variant)
    if not path.is_file():
        return TunedFile()
    try:
        return TunedFile.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as err:
        raise TunedError(f"{path} is not a tuned configuration: {err}") from err


def tuned_config(models_dir: Path, variant: str, runtime: str) -> ServingConfig | None:
    """The tuned configuration of ``variant@runtime``, or None."""
    entry = load_tuned(models_dir, variant).runtimes.get(runtime)
    return entry.config if entry else None


def tuned_configs(models_dir: Path, models: Iterable[tuple[str, str]]) -> dict[str, ServingConfig]:
    """The tuned configuration of each ``(variant, runtime)`` that has one, by
    ``variant@runtime``: what a service started with ``--tuned`` runs them with (an unreadable
    file is left out: ``serve --tuned`` refuses to start on one, naming it)."""
    found = {}
    for variant, runtime in models:
        try:
            config = tuned_config(models_dir, variant, runtime)
        except TunedError:
            continue
        if config is not None:
            found[f"{variant}@{runtime}"] = config
    return found


def save_tuned(models_dir: Path, variant: str, runtime: str, entry: TunedEntry) -> Path:
    """Set ``runtime``'s entry in ``variant``'s ``tuned.json`` (atomically), keeping the others."""
    path = tuned_path(models_dir, variant)
    try:
        found = load_tuned(models_dir, variant)
    except TunedError:
        found = TunedFile()  # an unreadable file is replaced
    updated = TunedFile(runtimes={**found.runtimes, runtime: entry})
    staging = path.with_suffix(".json.tmp")
    staging.write_text(updated.model_dump_json(indent=2) + "\n")
    return staging.replace(path)
