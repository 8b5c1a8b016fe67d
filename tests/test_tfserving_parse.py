"""TF Serving predict bodies: the numbers-only shortcut agrees with the general parse.

``service.tfserving.plain_images`` reads the common body without parsing its nested lists.
It must take that body in every usual spelling (or the shortcut is dead code), and for any
other body either step aside (``None``) or give exactly what the general parse gives.
"""

import json

import numpy as np
import pytest

from modelrepo.contract import INPUT_SHAPE, PIXELS, SIDE
from service.errors import BadRequest
from service.tfserving import general_images, parse_predict, plain_images

RNG = np.random.default_rng(7)
IMAGES = np.round(RNG.random((3, *INPUT_SHAPE)), 4)
ONE = IMAGES[:1].tolist()


def spellings() -> dict[str, bytes]:
    """Bodies a TF Serving client sends: both formats, every shape, any whitespace."""
    return {
        "json.dumps": json.dumps({"instances": ONE}).encode(),
        "compact": json.dumps({"instances": ONE}, separators=(",", ":")).encode(),
        "indented": json.dumps({"instances": ONE}, indent=2).encode(),
        "columnar": json.dumps({"inputs": ONE}).encode(),
        "signature": json.dumps({"signature_name": "serving_default", "instances": ONE}).encode(),
        "signature after": json.dumps({"instances": ONE, "signature_name": ""}).encode(),
        "three images": json.dumps({"instances": IMAGES.tolist()}).encode(),
        "28x28": json.dumps({"instances": IMAGES.reshape(3, SIDE, SIDE).tolist()}).encode(),
        "flat": json.dumps({"inputs": IMAGES.reshape(3, PIXELS).tolist()}).encode(),
        "exponents": json.dumps({"instances": [[1e-3] * PIXELS, [0] * PIXELS]}).encode(),
    }


@pytest.mark.parametrize("name", list(spellings()))
def test_usual_bodies_take_the_shortcut_and_agree(name: str) -> None:
    body = spellings()[name]
    plain = plain_images(body, max_images=8)
    assert plain is not None, "the shortcut stepped aside"
    general = general_images(body, max_images=8)
    assert plain[1] == general[1]
    np.testing.assert_array_equal(plain[0], general[0])
    images, row = parse_predict(body, max_images=8)
    assert images.shape[1:] == INPUT_SHAPE and row == ("instances" in json.loads(body))


def _row(values: str) -> str:
    return "[" + ",".join([values] * SIDE) + "]"


PIXEL_ROW = _row("[0.5]")
IMAGE = "[" + ",".join([PIXEL_ROW] * SIDE) + "]"
RAGGED = "[" + ",".join([PIXEL_ROW] * (SIDE - 1) + ["[" + ",".join(["[0.5]"] * 27) + "]"]) + "]"
# Rows of 27 and 29 pixels: ragged, but 784 numbers in all.
ROW_27, ROW_29 = ("[" + ",".join(["[0.5]"] * n) + "]" for n in (27, 29))
RAGGED_784 = "[" + ",".join([PIXEL_ROW] * (SIDE - 2) + [ROW_27, ROW_29]) + "]"


def put(template: str, image: str) -> str:
    """``template`` with ``image`` where its ``@`` is."""
    return template.replace("@", image)


# The last pixel loses its brackets and the one before gets two: same length, same numbers.
MOVED = IMAGE[: -len("[0.5],[0.5]]]")] + "[[0.5]],0.5]]"
OTHERS = {
    "nesting moved": put('{"instances": [@]}', MOVED),
    "ragged row": put('{"instances": [@]}', RAGGED),
    "ragged rows, 784 in all": put('{"instances": [@]}', RAGGED_784),
    "lists and numbers mixed": put('{"instances": [@]}', "[0.5]," * 20 + ",".join(["0.5"] * 764)),
    "two numbers in a pixel": put('{"instances": [@]}', IMAGE.replace("[0.5]", "[0.5, 0.5]", 1)),
    "blank-separated numbers": put('{"instances": [@]}', IMAGE.replace("[0.5]", "[0.5 0.5]", 1)),
    "empty pixel": put('{"instances": [@]}', IMAGE.replace("[0.5]", "[]", 1)),
    "NaN": put('{"instances": [@]}', IMAGE.replace("[0.5]", "[NaN]", 1)),
    "string pixel": put('{"instances": [@]}', IMAGE.replace("[0.5]", '["0.5"]', 1)),
    "out of range": put('{"instances": [@]}', IMAGE.replace("[0.5]", "[2]", 1)),
    "plus sign": put('{"instances": [@]}', IMAGE.replace("[0.5]", "[+0.5]", 1)),
    "named input": put('{"instances": [{"image": @}]}', IMAGE),
    "columnar named": put('{"inputs": {"image": [@]}}', IMAGE),
    "wrong signature": put('{"signature_name": "other", "instances": [@]}', IMAGE),
    "array as signature": put('{"signature_name": [@], "instances": 0}', IMAGE),
    "array in the signature": put('{"signature_name": "a[1]b", "instances": [@]}', IMAGE),
    "both formats": put('{"instances": [@], "inputs": 0}', IMAGE),
    "extra key": put('{"instances": [@], "extra": 1}', IMAGE),
    "duplicate key, array first": put('{"instances": [@], "instances": 0}', IMAGE),
    "duplicate key, array last": put('{"instances": 0, "instances": [@]}', IMAGE),
    "not an object": put("[@]", IMAGE),
    "trailing garbage": put('{"instances": [@]} x', IMAGE),
    "too many images": put('{"instances": [@]}', ",".join([IMAGE] * 9)),
    "no images": '{"instances": []}',
}


@pytest.mark.parametrize("name", list(OTHERS))
def test_other_bodies_get_the_general_answer(name: str) -> None:
    body = OTHERS[name].encode()
    try:
        expected: tuple[np.ndarray, bool] | str = general_images(body, max_images=8)
    except BadRequest as err:
        expected = err.detail
    plain = plain_images(body, max_images=8)
    if plain is not None:  # it may answer, but only what the general parse answers
        assert not isinstance(expected, str), f"the shortcut took a body refused: {expected}"
        np.testing.assert_array_equal(plain[0], expected[0])
        assert plain[1] == expected[1]
    try:
        images, _ = parse_predict(body, max_images=8)
    except BadRequest as err:
        assert isinstance(expected, str) or "pixel values" in err.detail
        return
    assert not isinstance(expected, str)
    np.testing.assert_array_equal(images.reshape(-1, PIXELS), expected[0])


def test_shortcut_refuses_what_the_general_parse_refuses() -> None:
    """The cases above that must fail do fail, each with the general parse's message."""
    for name in (
        "ragged row",
        "ragged rows, 784 in all",
        "nesting moved",
        "two numbers in a pixel",
        "empty pixel",
    ):
        with pytest.raises(BadRequest):
            parse_predict(OTHERS[name].encode(), max_images=8)
        assert plain_images(OTHERS[name].encode(), max_images=8) is None, name
