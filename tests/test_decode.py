"""Pixel validation and JSON decoding, without a server."""

import numpy as np
import pytest

from modelrepo.contract import INPUT_SHAPE, PIXELS, SIDE
from service.decode import decode_json, validate_pixels
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
