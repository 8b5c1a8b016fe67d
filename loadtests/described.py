"""What the server under test said of itself, as records: each variant and its runtimes
(``/variants``: figures, state, device, how each model batched) and its engine (``/engine``).
:class:`~loadtests.results.RunRecord` keeps them in ``results.json``; against a server other
than mnist-serve only the variants' names are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from modelrepo.layout import ModelName
from modelrepo.metadata import SeedSummary


@dataclass(frozen=True)
class ServedBatching:
    """How a served model batched (mnist-serve's ``/variants``), with ``--tuned`` or not."""

    max_batch_size: int
    max_wait_ms: float
    merges: bool
    intra_op_threads: int
    tuned: bool

    def __str__(self) -> str:
        merged = (
            f"batch {self.max_batch_size}, wait {self.max_wait_ms:g} ms" if self.merges else "alone"
        )
        return f"{merged}, {self.intra_op_threads or 'default'} thread(s)" + " (tuned)" * self.tuned


@dataclass(frozen=True)
class ServedRuntime:
    """One runtime of a variant, as the server's ``/variants`` described it."""

    runtime: str
    model: str
    state: str
    device: str | None = None
    batch1_ms: float | None = None
    max_abs_diff: float | None = None
    batching: ServedBatching | None = None  # None: a version before /variants said


@dataclass(frozen=True)
class ServedVariant:
    """A variant as the server described it: its training figures and runtimes. Against a
    server other than mnist-serve only the name is known."""

    name: str
    version: int | None = None
    runtime: str | None = None  # the default runtime: what the bare name means
    device: str | None = None
    parameters: int | None = None
    macs: int | None = None
    test_accuracy: float | None = None
    epochs: int | None = None
    epoch_seconds: list[float] | None = None
    savedmodel_bytes: int | None = None
    seeds: SeedSummary | None = None  # when trained with --seeds
    runtimes: list[ServedRuntime] = field(default_factory=list)

    @classmethod
    def from_server(cls, entries: list[dict[str, Any]]) -> list[ServedVariant]:
        """``/variants`` JSON as records (the seed summary lifted out of the metadata)."""
        lifted = [
            {**e, "seeds": e.get("seeds") or (e.get("metadata") or {}).get("seeds")}
            for e in entries
        ]
        return TypeAdapter(list[ServedVariant]).validate_python(lifted)


@dataclass(frozen=True)
class ServedEngine:
    """How the server under test served (mnist-serve's ``/engine``)."""

    engine: str  # single, hybrid, executor or replicas
    workers: int
    max_in_flight: int

    def __str__(self) -> str:
        if self.engine == "single":
            return "one process"
        return f"{self.engine} engine, {self.workers} worker processes"


def runtime_of(model: str, served: list[ServedVariant]) -> str:
    """The runtime that answers ``model``: named in it, else the variant's default."""
    name = ModelName.parse(model)
    if name.runtime:
        return name.runtime
    entry = next((e for e in served if e.name == name.variant), None)
    return (entry.runtime if entry else None) or "default"
