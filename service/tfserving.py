"""TensorFlow Serving's REST API (v1), on the same models and batchers as ``/predict``.

Follows TF Serving's published RESTful API text:

* ``POST /v1/models/<name>[/versions/<n>]:predict`` with ``{"signature_name"?, "instances":
  [...]}`` (row format, answered with ``{"predictions": [...]}``) or ``{"inputs": ...}``
  (columnar format, answered with ``{"outputs": ...}``). Our signature has one input
  (``image``) and one output (``probabilities``), so an instance is the image itself or
  ``{"image": ...}``, and ``inputs`` is the batch itself or ``{"image": [...]}``;
* ``GET /v1/models/<name>[/versions/<n>]``: the version status;
* ``GET /v1/models/<name>[/versions/<n>]/metadata``: the signature def.

Model names follow the service's rule (``depthwise``, ``depthwise@onnx``); versions are the
repository's numbered folders, and only the served one is found. Errors are
``{"error": "<message>"}`` with TF Serving's status codes: 400 for anything wrong with the
request (TF's INVALID_ARGUMENT, which our 415 and 422 also become), 404 for an unknown model or
version, 503 while loading.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import cache, lru_cache
from itertools import chain
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from modelrepo.contract import (
    CLASSES,
    INPUT_NAME,
    INPUT_SHAPE,
    OUTPUT_NAME,
    PIXELS,
    SIDE,
    SIGNATURE,
)
from service.adapter import Decoded, HttpAdapter, Result, Target, infer
from service.decode import Limits, read_body, validate_pixels
from service.errors import BadRequest, InvalidInput, ServeError
from service.inference import registry_of, url_version
from service.registry import ServedModel

router = APIRouter(prefix="/v1/models", tags=["TensorFlow Serving REST API"])
IMAGE_SHAPES = (INPUT_SHAPE, INPUT_SHAPE[:2], (PIXELS,))
SHAPES_TEXT = f"{SIDE}x{SIDE}x1, {SIDE}x{SIDE} or {PIXELS}"
# What TF Serving answers with for each of our statuses: its REST layer maps
# INVALID_ARGUMENT to 400, NOT_FOUND to 404 and UNAVAILABLE to 503 (a body over our size
# limit stays 413, which TF Serving has no equivalent for).
STATUS = {415: 400, 422: 400}


def tf_error(err: ServeError) -> JSONResponse:
    """A ServeError as TF Serving writes errors: ``{"error": message}``."""
    return JSONResponse(
        {"error": err.detail}, status_code=STATUS.get(err.status, err.status), headers=err.headers()
    )


async def answer(request: Request, work: Callable[[], Awaitable[Response]]) -> Response:
    """Run a handler's work, turning our errors into TF Serving's error body."""
    try:
        return await work()
    except ServeError as err:
        return tf_error(err)


def parse_predict(body: bytes, max_images: int) -> tuple[np.ndarray, bool]:
    """A predict request's images and whether it used the row (``instances``) format.

    The common body, numbers only, takes :func:`plain_images`; anything else, and every
    error, takes the general parse, so both give the same images and the same messages.
    """
    plain = plain_images(body, max_images)
    images, row = plain if plain is not None else general_images(body, max_images)
    try:
        return validate_pixels(images), row
    except InvalidInput as err:
        raise BadRequest(err.detail) from err


def general_images(body: bytes, max_images: int) -> tuple[np.ndarray, bool]:
    """Any predict body's images, (N, 784), and whether it used the row format."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"JSON Parse error: {err}") from err
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    signature = payload.get("signature_name", SIGNATURE) or SIGNATURE
    if signature != SIGNATURE:
        raise BadRequest(f'Serving signature name: "{signature}" not found in signature def')
    if ("instances" in payload) == ("inputs" in payload):
        raise BadRequest('the request must hold exactly one of "instances" or "inputs"')
    row = "instances" in payload
    data = payload["instances"] if row else payload["inputs"]
    if row and isinstance(data, list):
        data = [_named(item) for item in data]
    elif not row:
        data = _named(data)
    if not isinstance(data, list) or not data:
        raise BadRequest("the images must be a non-empty list")
    if len(data) > max_images:
        raise BadRequest(f"{len(data)} images in one request; the limit is {max_images}")
    return flat_images(data), row


# What is left of a JSON array of numbers once its numbers and blanks are removed.
NUMBER_AND_BLANK = b"0123456789.eE+- \t\n\r"
ENVELOPE_KEYS = {"signature_name", "instances", "inputs"}


@cache
def image_skeleton(shape: tuple[int, ...]) -> bytes:
    """One image of ``shape`` with its numbers removed: ``[[],[],...]`` for ``[28][28][1]``."""
    text = b""
    for size in reversed(shape):
        text = b"[" + b",".join([text] * size) + b"]"
    return text


@lru_cache(maxsize=4 * len(IMAGE_SHAPES))
def batch_skeleton(shape: tuple[int, ...], count: int) -> bytes:
    """``count`` images of ``shape`` with their numbers removed."""
    return b"[" + b",".join([image_skeleton(shape)] * count) + b"]"


def plain_images(body: bytes, max_images: int) -> tuple[np.ndarray, bool] | None:
    """The images of ``{"instances"|"inputs": <array of numbers>}``, without a nested parse.

    Parsing ``[28][28][1]`` builds 812 lists a digit, and flattening them again costs as much
    (57 µs, against 21 µs for ``/predict``'s whole decode). Here the array is located between
    the body's first ``[`` and last ``]`` and checked without being parsed: with its numbers and
    blanks removed, it must be exactly N images of one accepted shape, brackets and commas
    (:func:`batch_skeleton`; so nothing is ragged, and no string or object is inside). With
    its brackets removed, it is then the flat list of its numbers, which orjson parses and
    validates: an empty slot or two numbers in one would fail there. The rest of the body,
    with ``[]`` in the array's place, must be the envelope: an object holding that ``[]`` (the
    only list it can hold, since the array spans every bracket) under one of ``instances`` or
    ``inputs``, and the served signature if any. About 27 µs a
    digit. ``None`` whenever anything differs: the general parse then answers, or explains.
    """
    start, end = body.find(b"["), body.rfind(b"]")
    if start < 0 or end < start:
        return None
    array = body[start : end + 1]
    skeleton = array.translate(None, NUMBER_AND_BLANK)
    for shape in IMAGE_SHAPES:
        per_image = len(image_skeleton(shape)) + 1
        count, rest = divmod(len(skeleton) - 1, per_image)
        if rest == 0 and 0 < count <= max_images and skeleton == batch_skeleton(shape, count):
            break
    else:
        return None
    try:
        envelope = orjson.loads(body[:start] + b"[]" + body[end + 1 :])
        values = orjson.loads(b"[" + array.translate(None, b"[]") + b"]")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(envelope, dict) or not envelope.keys() <= ENVELOPE_KEYS:
        return None
    if (envelope.get("signature_name") or SIGNATURE) != SIGNATURE:  # as the general parse
        return None
    row = "instances" in envelope
    if row == ("inputs" in envelope) or envelope["instances" if row else "inputs"] != []:
        return None
    # One number per slot of the skeleton, so count * PIXELS of them: no need to count.
    return np.fromiter(values, dtype=np.float32, count=len(values)).reshape(count, PIXELS), row


def flat_images(data: list[Any]) -> np.ndarray:
    """N nested images ([28][28][1], [28][28] or [784] numbers) -> float32 (N, 784).

    The shape is read from the first element at each depth, and every list on the way must
    have that length, so a ragged image is refused even when its numbers add up to 784 (a row
    of 27 beside one of 29). The lists are flattened lazily, straight into ``np.fromiter``,
    with no list in between; NumPy converting the nested lists itself was 247 µs for the
    ``[28][28][1]`` form (over 800 small lists per digit). This way it is 47 µs, 21 µs of which
    are the length checks. Usual bodies never come here: :func:`plain_images` reads them.
    """
    dims, probe = [], data
    while isinstance(probe, list) and probe:
        dims.append(len(probe))
        probe = probe[0]
    if tuple(dims[1:]) not in IMAGE_SHAPES:
        raise BadRequest(f"each image must be {SHAPES_TEXT} numbers, not {dims[1:]}")
    flat: Iterable[Any] = data
    try:
        for size in dims[1:]:
            flat = chain.from_iterable(_sized(flat, size))
        values = np.fromiter(flat, dtype=np.float32)
        if values.size != len(data) * PIXELS:
            raise ValueError(f"{values.size} values for {len(data)} images")
        return values.reshape(len(data), PIXELS)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"each image must be {SHAPES_TEXT} numbers: {err}") from err


def _sized(lists: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Each of ``lists``, checked to be a list of ``size`` elements (ValueError if not)."""
    for item in lists:
        if type(item) is not list or len(item) != size:
            got = f"{len(item)} elements" if isinstance(item, list) else type(item).__name__
            raise ValueError(f"a list of {size} elements was expected, got {got}")
        yield item


def _named(item: Any) -> Any:
    """``{"image": x}`` -> ``x`` (the one named input); other objects are refused."""
    if isinstance(item, dict):
        if set(item) != {INPUT_NAME}:
            raise BadRequest(f"unknown inputs {sorted(item)}: the signature takes {INPUT_NAME!r}")
        return item[INPUT_NAME]
    return item


class TFServingAdapter(HttpAdapter[bool]):
    """TF Serving's predict: ``instances`` (row) or ``inputs`` (columnar) in, the same out."""

    async def decode(self, source: Request, limits: Limits) -> Decoded[bool]:
        """The images, and whether the request used the row format."""
        body = await read_body(source, limits)
        images, row = parse_predict(body, limits.max_images)
        return Decoded(images, row)

    def render(self, source: Request, result: Result[bool]) -> Response:
        """``{"predictions": [...]}`` (row) or ``{"outputs": [...]}`` (columnar)."""
        rows = result.probabilities.astype(float).tolist()
        answer = {"predictions": rows} if result.decoded.request else {"outputs": rows}
        return Response(orjson.dumps(answer), media_type="application/json")

    async def refuse(self, source: Request, err: ServeError) -> Response:
        """``{"error": message}`` with TF Serving's status."""
        return tf_error(err)


TF_SERVING = TFServingAdapter()


@router.post("/{name}:predict", summary="Predict (TF Serving REST API)")
async def tf_predict(name: str, request: Request) -> Response:
    """TF Serving's predict on the served version; instances (row) or inputs (columnar)."""
    return await infer(TF_SERVING, registry_of(request), request, Target(name))


@router.post("/{name}/versions/{version}:predict", summary="Predict, version pinned")
async def tf_predict_version(name: str, version: str, request: Request) -> Response:
    """TF Serving's predict, pinned to ``version`` (404 unless it is the served one)."""
    target = Target(name, version=url_version(version))
    return await infer(TF_SERVING, registry_of(request), request, target)


STATE = {
    "loading": "LOADING",
    "ready": "AVAILABLE",
    "failed": "END",
    "unloaded": "END",
    "retired": "END",
}


def version_status(model: ServedModel) -> dict[str, Any]:
    """A GetModelStatusResponse as JSON."""
    ok = model.state != "failed"
    return {
        "model_version_status": [
            {
                "version": str(model.model.version),
                "state": STATE[model.state],
                "status": {
                    "error_code": "OK" if ok else "UNKNOWN",
                    "error_message": "" if ok else f"failed to load: {model.reason}",
                },
            }
        ]
    }


def signature_def() -> dict[str, Any]:
    """The serving signature as TF Serving's metadata API shows a SignatureDef."""

    def tensor(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
        return {
            "dtype": "DT_FLOAT",
            "tensor_shape": {
                "dim": [{"size": str(size), "name": ""} for size in (-1, *shape)],
                "unknown_rank": False,
            },
            "name": f"{SIGNATURE}_{name}:0",
        }

    return {
        SIGNATURE: {
            "inputs": {INPUT_NAME: tensor(INPUT_NAME, INPUT_SHAPE)},
            "outputs": {OUTPUT_NAME: tensor(OUTPUT_NAME, (CLASSES,))},
            "method_name": "tensorflow/serving/predict",
        }
    }


async def _status(request: Request, name: str, version: int | None) -> Response:
    async def work() -> Response:
        return JSONResponse(version_status(registry_of(request).lookup(name, version=version)))

    return await answer(request, work)


async def _metadata(request: Request, name: str, version: int | None) -> Response:
    async def work() -> Response:
        model = registry_of(request).lookup(name, version=version)
        return JSONResponse(
            {
                "model_spec": {
                    "name": name,
                    "signature_name": "",
                    "version": str(model.model.version),
                },
                "metadata": {"signature_def": {"signature_def": signature_def()}},
            }
        )

    return await answer(request, work)


@router.get("/{name}", summary="Model version status (TF Serving REST API)")
async def tf_status(name: str, request: Request) -> Response:
    """The served version's state: LOADING, AVAILABLE or END (failed to load)."""
    return await _status(request, name, None)


@router.get("/{name}/versions/{version}", summary="Model version status, one version")
async def tf_status_version(name: str, version: str, request: Request) -> Response:
    """One version's state (404 unless it is the served one)."""
    return await _status(request, name, url_version(version))


@router.get("/{name}/metadata", summary="Model metadata (TF Serving REST API)")
async def tf_metadata(name: str, request: Request) -> Response:
    """The signature def of the served version."""
    return await _metadata(request, name, None)


@router.get("/{name}/versions/{version}/metadata", summary="Model metadata, one version")
async def tf_metadata_version(name: str, version: str, request: Request) -> Response:
    """The signature def of one version (404 unless it is the served one)."""
    return await _metadata(request, name, url_version(version))
