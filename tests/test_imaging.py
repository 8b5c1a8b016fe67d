"""Any reasonable picture of an MNIST digit prepares back into that digit's 28x28."""

import io

import numpy as np
import pytest
from PIL import Image

from modelrepo.contract import SIDE
from service.imaging import ImageError, decode_image
from training.data import Mnist

LIMIT = 16_000_000
# Mean absolute pixel difference allowed between the prepared upload and the MNIST original.
SAME_SIZE_TOLERANCE = 0.01
# Rescaling blurs edges, and subtracting the paper's grey trims the faintest edge pixels, which
# can move a digit by one pixel: a looser bound per image, a tighter one on the average.
RESCALED_TOLERANCE = 0.1
RESCALED_MEAN_TOLERANCE = 0.04


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits(mnist: Mnist) -> list[np.ndarray]:
    return [mnist.x_test[i] for i in range(20)]


def mean_error(prepared: np.ndarray, digit: np.ndarray) -> float:
    return float(np.abs(prepared - digit / 255.0).mean())


def test_mnist_png_prepares_to_itself(digits: list[np.ndarray]) -> None:
    for digit in digits:
        assert (
            mean_error(decode_image(encode(Image.fromarray(digit)), LIMIT), digit)
            < SAME_SIZE_TOLERANCE
        )


def test_black_on_white_rgb_is_inverted(digits: list[np.ndarray]) -> None:
    for digit in digits:
        paper = Image.fromarray(255 - digit).convert("RGB")
        assert mean_error(decode_image(encode(paper), LIMIT), digit) < SAME_SIZE_TOLERANCE


def test_transparent_canvas_drawing_uses_alpha_as_ink(digits: list[np.ndarray]) -> None:
    for digit in digits:
        rgba = np.zeros((SIDE, SIDE, 4), dtype=np.uint8)  # black strokes; opacity is the ink
        rgba[..., 3] = digit
        prepared = decode_image(encode(Image.fromarray(rgba, mode="RGBA")), LIMIT)
        assert mean_error(prepared, digit) < SAME_SIZE_TOLERANCE


def test_large_offcentre_jpeg_photo_like_upload(digits: list[np.ndarray]) -> None:
    errors = []
    for digit in digits:
        # A 10x larger, off-centre digit on grey-ish paper, saved as JPEG.
        big = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BICUBIC)
        paper = Image.new("L", (640, 480), 235)
        paper.paste(big, (40, 150))
        prepared = decode_image(encode(paper.convert("RGB"), "JPEG", quality=90), LIMIT)
        errors.append(mean_error(prepared, digit))
    assert max(errors) < RESCALED_TOLERANCE
    assert float(np.mean(errors)) < RESCALED_MEAN_TOLERANCE


def test_blank_image_has_no_ink() -> None:
    with pytest.raises(ImageError, match="no ink") as info:
        decode_image(encode(Image.new("L", (50, 50), 255)), LIMIT)
    assert info.value.reason == "no_ink"


NOISE_PNG = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)))


@pytest.mark.parametrize("data", [b"", b"not an image", NOISE_PNG[: len(NOISE_PNG) // 2]])
def test_undecodable_bytes(data: bytes) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(data, LIMIT)
    assert info.value.reason == "undecodable"


def test_oversized_image_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(encode(Image.new("L", (5000, 4000))), LIMIT)
    assert info.value.reason == "too_large"
