"""``metadata.json``, typed: every figure training records beside an exported model version.

Training builds a :class:`ModelMetadata` and saves it; the service, the scripts and the tests
load it through :func:`load_metadata`. The JSON layout is the one training has always written
(field names and order; ``runtimes`` maps each converted runtime to its figures or its
``error``; ``seeds`` only with ``train --seeds``), so existing files and ``/variants`` stay the
same. A file that lacks a field or holds the wrong type is refused with a
:class:`MetadataError` naming the file and the field. Files from before the runtimes were
converted lack ``runtimes`` (read as none) and their conversions may lack ``batch1_ms``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

# NaN (a spread over one seed) is written as JSON's NaN, as json.dumps has always done.
_CONFIG = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="constants")


class MetadataError(ValueError):
    """A ``metadata.json`` that is missing, not JSON, or not the shape this version writes."""


class _Record(BaseModel):
    """A metadata section: optional fields that are unset are left out of the JSON."""

    model_config = _CONFIG
    _omit_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if not (k in self._omit_when_none and v is None)}


class Signature(_Record):
    """The serving signature of the exported SavedModel."""

    name: str
    input: str
    output: str


class Conversion(_Record):
    """One runtime's artifact, converted from the SavedModel and checked against it."""

    artifact: str  # relative to the version folder
    bytes: int
    convert_seconds: float
    max_abs_diff: float  # against the SavedModel, over the whole test set
    test_accuracy: float
    batch1_ms: float | None = None  # median of a short in-process timing, one thread
    # A later re-conversion failed; this earlier, checked artifact was kept.
    last_conversion_error: str | None = None
    _omit_when_none: ClassVar[tuple[str, ...]] = ("batch1_ms", "last_conversion_error")


class FailedConversion(_Record):
    """A runtime whose conversion failed: no artifact, the reason."""

    error: str


class SeedSummary(_Record):
    """Test accuracy over seeds: each seed's, their mean, spread and 95 % interval of the mean."""

    seeds: list[int]
    test_accuracy: list[float]
    mean: float
    std: float  # sample standard deviation (NaN with one seed)
    low: float
    high: float
    epoch_seconds_median: list[float]


class ModelMetadata(_Record):
    """Everything training records about one exported version (``metadata.json``)."""

    variant: str
    version: int
    family: str
    description: str
    reference: str
    parameters: int
    macs: int
    test_accuracy: float
    test_loss: float
    epochs: int
    batch_size: int
    learning_rate: float
    rho: float
    optimizer: str
    seed: int
    train_images: int
    training_seconds: float
    epoch_seconds: list[float]
    history: dict[str, list[float]]
    savedmodel_bytes: int
    signature: Signature
    tensorflow_version: str
    keras_version: str
    python_version: str
    data_source: str  # a path on the training machine: not shown to clients
    data_sha256: str
    created_at: str
    runtimes: dict[str, Conversion | FailedConversion] = {}
    seeds: SeedSummary | None = None  # with ``train --seeds``
    _omit_when_none: ClassVar[tuple[str, ...]] = ("seeds",)

    def conversion(self, runtime: str) -> Conversion | None:
        """``runtime``'s checked conversion, None if it was not converted or failed."""
        entry = self.runtimes.get(runtime)
        return entry if isinstance(entry, Conversion) else None

    def usable_runtimes(self) -> list[str]:
        """The converted runtimes whose conversion succeeded, in recorded order."""
        return [name for name, entry in self.runtimes.items() if isinstance(entry, Conversion)]

    def median_epoch_seconds(self) -> float:
        """Median seconds per epoch (robust to one disturbed epoch)."""
        return statistics.median(self.epoch_seconds)

    def to_json(self) -> dict[str, Any]:
        """The JSON object as written to ``metadata.json`` (NaN kept as a float)."""
        data: dict[str, Any] = self.model_dump(mode="python")
        return data


def parse_metadata(data: object, source: str = "metadata") -> ModelMetadata:
    """Validate a JSON value as metadata; MetadataError naming ``source`` and the bad fields."""
    if not isinstance(data, dict):
        raise MetadataError(f"{source} must hold a JSON object, not {type(data).__name__}")
    try:
        return ModelMetadata.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in err.errors()[:5]
        )
        more = f" (and {err.error_count() - 5} more)" if err.error_count() > 5 else ""
        raise MetadataError(
            f"{source} is not metadata this version of mnist-serve can read: {problems}{more}; "
            "it was probably written by an older version: train or export this model again"
        ) from None


def load_metadata(path: Path) -> ModelMetadata:
    """Read and validate a ``metadata.json``; MetadataError naming the file if it can't be."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise MetadataError(f"{path} is missing") from err
    except json.JSONDecodeError as err:
        raise MetadataError(f"{path} is not valid JSON: {err}") from err
    return parse_metadata(data, str(path))


def save_metadata(path: Path, metadata: ModelMetadata) -> None:
    """Write ``metadata.json`` atomically (a reader never sees half a file)."""
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(metadata.to_json(), indent=2) + "\n")
    staging.replace(path)
