"""The model repository: ``ROOT/<variant>/<version>/`` holding a SavedModel, ``metadata.json``
and the other runtimes' artifacts (``model.onnx``, ``model.tflite``, ``openvino/model.xml``).

This is the layout TF Serving reads (integer version folders under a model name; it ignores the
extra files), so the same folder can be mounted into TF Serving unchanged. Training writes it,
the service reads it; both go through this module so the layout lives in one place.

Model names: a served model is ``<variant>@<runtime>`` (``depthwise@onnx``); a bare
``<variant>`` means that variant on the service's default runtime. Every protocol uses this rule.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from modelrepo.metadata import MetadataError, ModelMetadata, load_metadata, save_metadata

METADATA_FILE = "metadata.json"
# Variant names are also URL path segments and folder names: keep them to a safe alphabet so
# that nothing a client sends (``..``, slashes, NUL) can ever become a file-system path.
VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# The artifact each runtime loads, relative to a version folder. The SavedModel is the source:
# every other artifact is converted from it and checked against it (training/convert.py).
ARTIFACTS = {
    "savedmodel": "saved_model.pb",
    "onnx": "model.onnx",
    "litert": "model.tflite",
    "openvino": "openvino/model.xml",
}
RUNTIME_NAMES = tuple(ARTIFACTS)
CONVERTED_RUNTIMES = tuple(name for name in RUNTIME_NAMES if name != "savedmodel")
MODEL_SEPARATOR = "@"


class RepositoryError(Exception):
    """The model repository is missing, empty or malformed."""


def is_valid_variant_name(name: str) -> bool:
    """Whether ``name`` may be used as a variant (folder and URL segment)."""
    return bool(VARIANT_NAME.match(name))


def check_runtimes(names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` unchanged, or ValueError naming the unknown runtimes and the known ones."""
    unknown = [name for name in names if name not in ARTIFACTS]
    if unknown:
        raise ValueError(f"unknown runtimes {unknown}; known: {', '.join(RUNTIME_NAMES)}")
    return list(names)


@dataclass(frozen=True)
class ModelName:
    """A served model's name: a variant and, optionally, a runtime (``depthwise@onnx``)."""

    variant: str
    runtime: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """``variant`` or ``variant@runtime``; ValueError for anything else."""
        variant, sep, runtime = text.partition(MODEL_SEPARATOR)
        if not is_valid_variant_name(variant) or (sep and runtime not in ARTIFACTS):
            raise ValueError(
                f"{text!r} is not a model name: expected <variant> or <variant>@<runtime> "
                f"with a runtime among {', '.join(RUNTIME_NAMES)}"
            )
        return cls(variant, runtime or None)

    def __str__(self) -> str:
        return f"{self.variant}{MODEL_SEPARATOR}{self.runtime}" if self.runtime else self.variant


@dataclass(frozen=True)
class ModelVersion:
    """One exported version of one variant."""

    variant: str
    version: int
    path: Path

    @property
    def metadata_path(self) -> Path:
        """Where this version's ``metadata.json`` lives."""
        return self.path / METADATA_FILE

    def artifact(self, runtime: str) -> Path:
        """Where ``runtime``'s artifact lives in this version (present or not)."""
        return self.path / ARTIFACTS[runtime]

    def runtimes(self) -> list[str]:
        """The runtimes whose artifact this version holds, in :data:`RUNTIME_NAMES` order."""
        return [name for name in RUNTIME_NAMES if self.artifact(name).is_file()]

    def load_metadata(self) -> ModelMetadata:
        """The training metadata written at export time; RepositoryError if it's unreadable."""
        try:
            return load_metadata(self.metadata_path)
        except MetadataError as err:
            raise RepositoryError(str(err)) from err

    def save_metadata(self, metadata: ModelMetadata) -> None:
        """Replace ``metadata.json`` atomically (a reader never sees half a file)."""
        save_metadata(self.metadata_path, metadata)


class ModelRepository:
    """A folder of variants, each a folder of integer versions."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def variants(self) -> list[str]:
        """Names of the variants that have at least one complete version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and is_valid_variant_name(p.name) and self.versions(p.name)
        )

    def versions(self, variant: str) -> list[ModelVersion]:
        """Complete versions of ``variant`` (those with a SavedModel), oldest first."""
        source = ARTIFACTS["savedmodel"]
        folder = self._variant_dir(variant)
        if not folder.is_dir():
            return []
        found = [
            ModelVersion(variant, int(p.name), p)
            for p in folder.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / source).is_file()
        ]
        return sorted(found, key=lambda v: v.version)

    def get(self, variant: str, version: int | None = None) -> ModelVersion:
        """The pinned ``version`` of ``variant``, or its latest when ``version`` is None."""
        versions = self.versions(variant)
        if not versions:
            raise RepositoryError(f"no exported version of {variant!r} under {self.root}")
        if version is None:
            return versions[-1]
        for candidate in versions:
            if candidate.version == version:
                return candidate
        known = ", ".join(str(v.version) for v in versions)
        raise RepositoryError(f"{variant!r} has no version {version} (has {known})")

    def next_version(self, variant: str) -> int:
        """The version number the next export of ``variant`` gets (1 for the first)."""
        folder = self._variant_dir(variant)
        taken = (
            [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
        )
        return max(taken, default=0) + 1

    def publish(self, variant: str, staging: Path) -> ModelVersion:
        """Move a fully written ``staging`` folder into place as the next version.

        The rename is atomic, so a server scanning the repository never sees half a model.
        """
        version = self.next_version(variant)
        target = self._variant_dir(variant) / str(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
        return ModelVersion(variant, version, target)

    def _variant_dir(self, variant: str) -> Path:
        if not is_valid_variant_name(variant):
            raise RepositoryError(f"invalid variant name {variant!r}")
        return self.root / variant
