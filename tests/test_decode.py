"""Pixel validation and JSON decoding, without a server."""

import numpy as np
import pytest

from modelrepo.contract import INPUT_SHAPE, PIXELS, SIDE
from service.decode import decode_json, nested_digits, validate_pixels
from service.errors import BadRequest, InvalidInput


@pytest.mark.parametrize("shape", [(2, PIXELS), (2, SIDE, SIDE), (2, *INPUT_SHAPE)])
def test_accepted_shapes_become_model_input(shape: tuple[int, ...]) -> None:
    assert validate_pixels(np.zeros(shape, np.float32)).shape == (2, *INPUT_SHAPE)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_rejected(bad: float) -> None:
    pixels = np.zeros((1, PIXELS), np.float32)
    pixels[0, 5] = bad
    with pytest.raises(InvalidInput, match="finite"):
        validate_pixels(pixels)


def test_non_json_numbers_are_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        decode_json(b'{"image": [NaN]}', max_images=4)


def test_batch_limit_is_enforced_before_conversion() -> None:
    with pytest.raises(InvalidInput, match="5 images in one request; the limit is 4"):
        decode_json(b'{"images": [[0],[0],[0],[0],[0]]}', max_images=4)


def digit_rows(value: object) -> list[list[object]]:
    """A [28][28] image of ``value``, with a 0.5 in its corner."""
    rows: list[list[object]] = [[value] * SIDE for _ in range(SIDE)]
    rows[0][0] = 0.5
    return rows


@pytest.mark.parametrize("value", [0.25, 1, 0, True, False, "0.5", None, 1e-300])
def test_nested_digits_read_what_asarray_reads(value: object) -> None:
    """Whenever the short way reads a [28][28] body, it is exactly np.asarray's array (floats,
    ints, bools and numeric strings alike); what it cannot convert is left to np.asarray."""
    images = [digit_rows(value), digit_rows(0.75)]
    read = nested_digits(images)
    try:
        expected = np.asarray(images, dtype=np.float32)
    except (TypeError, ValueError):
        assert read is None
        return
    if read is not None:
        np.testing.assert_array_equal(read, expected)
        assert read.dtype == np.float32 and read.shape == (2, SIDE, SIDE)
    else:  # only what fromiter refuses: asarray's NaN for None, then validate_pixels' 422
        assert value is None


@pytest.mark.parametrize(
    "images",
    [
        [[[0.5]] * SIDE] * SIDE,  # [28][28][1]: asarray's case
        [[0.5] * PIXELS],  # flat
        [[[0.5] * SIDE] * (SIDE - 1)],  # a row short
        [[[0.5] * SIDE] * (SIDE - 1) + [[0.5] * (SIDE + 1)]],  # ragged
        [[[[0.5]] * SIDE] * SIDE],  # a list where a number goes
        [[["x"] * SIDE] * SIDE],  # not a number
    ],
    ids=["28x28x1", "flat", "short", "ragged", "nested-too-deep", "text"],
)
def test_other_shapes_are_left_to_asarray(images: list[object]) -> None:
    assert nested_digits(images) is None


def test_a_bad_digit_still_gets_its_message() -> None:
    """A digit fromiter cannot read goes on to np.asarray and its explanation."""
    body = b'{"image": ' + str([["x"] * SIDE] * SIDE).replace("'", '"').encode() + b"}"
    with pytest.raises(InvalidInput, match="each image must be a 28x28 nested list"):
        decode_json(body, max_images=4)
