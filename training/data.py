"""Load and validate MNIST from a Keras-layout ``.npz``, a folder of IDX files, or the internet.

The path comes from ``--data`` or the ``MNIST_DATA`` environment variable. Every way in ends in
:func:`validate`, so a wrong or truncated file fails here with the file's name and the problem,
not later with a traceback from deep inside numpy or Keras.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelrepo.contract import CLASSES, SIDE, TEST_SIZE

ENV_VAR = "MNIST_DATA"
TRAIN_SIZE = 60_000
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
# IDX magic numbers: two zero bytes, the type code (0x08 = unsigned byte), the number of dims.
IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}


class DataError(Exception):
    """The MNIST source is missing, unreadable, or does not hold MNIST."""


@dataclass(frozen=True)
class Mnist:
    """The four MNIST arrays, as uint8, plus where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the arrays' bytes: the same for the npz and the IDX copy of MNIST."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def limited(self, limit: int | None) -> Mnist:
        """The first ``limit`` training images (all when None); the test set is kept whole."""
        if limit is None:
            return self
        return Mnist(
            self.x_train[:limit], self.y_train[:limit], self.x_test, self.y_test, self.source
        )


def resolve_source(path: str | Path | None = None) -> Path | None:
    """The path given, else ``$MNIST_DATA``, else None (meaning: download with Keras)."""
    chosen = path if path not in (None, "") else os.environ.get(ENV_VAR) or None
    return Path(chosen).expanduser() if chosen is not None else None


def load_mnist(path: str | Path | None = None) -> Mnist:
    """Load MNIST from ``path`` (npz file or IDX folder), ``$MNIST_DATA``, or Keras' downloader."""
    source = resolve_source(path)
    if source is None:
        return validate(_download_with_keras(), "keras.datasets.mnist")
    if source.is_dir():
        return validate(_read_idx_folder(source), str(source))
    if source.is_file():
        return validate(_read_npz(source), str(source))
    raise DataError(f"{source}: no such file or folder (expected an .npz or a folder of IDX .gz)")


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) images to the models' input: float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype("float32") / 255.0)[..., np.newaxis]


def validate(arrays: dict[str, np.ndarray], source: str) -> Mnist:
    """Check shapes, dtypes, sizes and label range; return the data or raise DataError."""
    expected_sizes = {"train": TRAIN_SIZE, "test": TEST_SIZE}
    for split, size in expected_sizes.items():
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise DataError(
                f"{source}: x_{split}/y_{split} must be uint8, found {images.dtype}/{labels.dtype}"
            )
        if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
            raise DataError(
                f"{source}: x_{split} has shape {images.shape}, expected (N, {SIDE}, {SIDE}) images"
            )
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"{source}: y_{split} has shape {labels.shape}, expected one label per image "
                f"({images.shape[0]},)"
            )
        if images.shape[0] != size:
            raise DataError(
                f"{source}: {split} split has {images.shape[0]:,} images, MNIST has {size:,}"
            )
        if labels.size and int(labels.max()) >= CLASSES:
            raise DataError(f"{source}: y_{split} holds label {int(labels.max())}, expected 0-9")
    return Mnist(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], source)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = sorted(set(IDX_FILES) - set(npz.files))
            if missing:
                raise DataError(f"{path}: missing arrays {missing} (has {sorted(npz.files)})")
            return {key: npz[key] for key in IDX_FILES}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from err


def _read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for key, name in IDX_FILES.items():
        file = folder / name
        if not file.is_file():
            raise DataError(
                f"{folder}: missing {name} (an IDX folder needs {sorted(IDX_FILES.values())})"
            )
        arrays[key] = _read_idx(file, ndim=3 if key.startswith("x") else 1)
    return arrays


def _read_idx(file: Path, ndim: int) -> np.ndarray:
    """Parse one gzipped IDX file of unsigned bytes with ``ndim`` dimensions."""
    try:
        with gzip.open(file, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{file}: not a readable gzip file ({err})") from err
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{file}: only {len(raw)} bytes, too short for an IDX header")
    magic, *dims = struct.unpack(f">I{ndim}I", raw[:header_size])
    if magic != IDX_MAGIC[ndim]:
        raise DataError(f"{file}: IDX magic {magic:#010x}, expected {IDX_MAGIC[ndim]:#010x}")
    expected = int(np.prod(dims))
    body = len(raw) - header_size
    if body != expected:
        raise DataError(
            f"{file}: header promises {expected:,} bytes of data {tuple(dims)}, found {body:,}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def _download_with_keras() -> dict[str, np.ndarray]:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as err:  # network errors come in many types; all mean the same here
        raise DataError(
            f"no MNIST path given (--data or ${ENV_VAR}) and the download failed: {err}"
        ) from err
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
