"""The MNIST loader reads both shipped formats and rejects broken files clearly."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from modelrepo.contract import SIDE
from training.data import DataError, load_mnist

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_npz_has_known_label_counts(mnist_path: Path) -> None:
    data = load_mnist(mnist_path)
    assert np.bincount(data.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(data.y_test).tolist() == TEST_COUNTS
    assert data.x_train.shape == (60_000, SIDE, SIDE) and data.x_train.dtype == np.uint8


def test_idx_folder_gives_the_same_arrays(mnist_path: Path) -> None:
    from_npz = load_mnist(mnist_path)
    from_idx = load_mnist(mnist_path.parent)
    assert np.bincount(from_idx.y_test).tolist() == TEST_COUNTS
    assert from_idx.checksum == from_npz.checksum


def test_env_variable_is_the_default_path(
    mnist_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNIST_DATA", str(mnist_path))
    assert load_mnist().source == str(mnist_path)


def test_truncated_npz_is_rejected_with_its_name(mnist_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "mnist.npz"
    broken.write_bytes(mnist_path.read_bytes()[:1_000_000])
    with pytest.raises(DataError, match=r"mnist\.npz: not a readable \.npz"):
        load_mnist(broken)


def test_wrong_shape_npz_is_rejected(mnist_path: Path, tmp_path: Path) -> None:
    with np.load(mnist_path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["x_train"] = arrays["x_train"][:, :, :27]
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays)
    with pytest.raises(DataError, match=r"wrong\.npz: x_train has shape \(60000, 28, 27\)"):
        load_mnist(wrong)


def test_too_few_images_are_rejected(mnist_path: Path, tmp_path: Path) -> None:
    with np.load(mnist_path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["x_test"], arrays["y_test"] = arrays["x_test"][:10], arrays["y_test"][:10]
    small = tmp_path / "small.npz"
    np.savez(small, **arrays)
    with pytest.raises(DataError, match="test split has 10 images, MNIST has 10,000"):
        load_mnist(small)


def test_truncated_idx_file_is_rejected(mnist_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    shutil.copytree(mnist_path.parent, folder, ignore=shutil.ignore_patterns("*.npz"))
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw[:5000]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: header promises 10,000"):
        load_mnist(folder)


def test_corrupt_gzip_is_rejected(mnist_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    shutil.copytree(mnist_path.parent, folder, ignore=shutil.ignore_patterns("*.npz"))
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100_000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: not a readable gzip"):
        load_mnist(folder)


def test_missing_path_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_mnist(tmp_path / "nowhere.npz")
