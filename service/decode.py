"""The one place where request bodies become model input: float32 (N, 28, 28, 1) in [0, 1].

Accepted bodies:

* ``application/json``: ``{"image": <28x28 nested or 784 flat list>}`` or ``{"images": [...]}``;
* ``multipart/form-data`` with the picture in the field ``file``;
* a raw ``image/png`` or ``image/jpeg`` body.

Every problem becomes a :class:`service.errors.ServeError` with a message for the client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.imaging import ImageError, decode_image

SIDE = 28
IMAGE_TYPES = ("image/png", "image/jpeg")
ACCEPTED = ("application/json", "multipart/form-data", *IMAGE_TYPES)


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    max_body_bytes: int
    max_images: int
    max_image_pixels: int


async def decode_request(request: Request, limits: Limits) -> np.ndarray:
    """Read and validate the body of a predict request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED:
        shown = content_type or "none"
        raise UnsupportedMediaType(
            f"Content-Type {shown!r} is not accepted; send one of {', '.join(ACCEPTED)}"
        )
    if content_type == "multipart/form-data":
        data = await _read_upload(request, limits)
        return await run_in_threadpool(_decode_picture, data, limits)
    body = await read_body(request, limits.max_body_bytes)
    if content_type == "application/json":
        return decode_json(body, limits.max_images)
    return await run_in_threadpool(_decode_picture, body, limits)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is {int(declared):,} bytes, over the {max_bytes:,} limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is over the {max_bytes:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes, max_images: int) -> np.ndarray:
    """``{"image": ...}`` or ``{"images": [...]}`` -> float32 (N, 28, 28, 1)."""
    try:
        payload = orjson.loads(body)  # 4x faster than json here; NaN/Infinity are not JSON
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from err
    if not isinstance(payload, dict) or len({"image", "images"} & payload.keys()) != 1:
        raise InvalidInput('send an object with exactly one of "image" or "images"')
    if "image" in payload:
        images = [payload["image"]]
    else:
        images = payload["images"]
        if not isinstance(images, list) or not images:
            raise InvalidInput('"images" must be a non-empty list of images')
    if len(images) > max_images:
        raise InvalidInput(f"{len(images)} images in one request; the limit is {max_images}")
    try:
        array = np.asarray(images, dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise InvalidInput(
            "each image must be a 28x28 nested list or a flat list of 784 numbers "
            f"(all images the same shape): {err}"
        ) from err
    return validate_pixels(array)


def validate_pixels(array: np.ndarray) -> np.ndarray:
    """(N, 784), (N, 28, 28) or (N, 28, 28, 1) numbers in [0, 1] -> float32 (N, 28, 28, 1)."""
    if array.shape[1:] not in ((SIDE * SIDE,), (SIDE, SIDE), (SIDE, SIDE, 1)):
        raise InvalidInput(
            f"an image has shape {array.shape[1:]}; expected 28x28 (nested) or 784 (flat)"
        )
    if not np.isfinite(array).all():
        raise InvalidInput("pixel values must be finite numbers (found NaN or infinity)")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise InvalidInput(
            f"pixel values must lie in [0, 1] (pixels / 255); found {low:g} to {high:g}"
        )
    return array.reshape(-1, SIDE, SIDE, 1)


async def _read_upload(request: Request, limits: Limits) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"the body is {int(declared):,} bytes, over the {limits.max_body_bytes:,} limit"
        )
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=limits.max_body_bytes)
    except Exception as err:  # Starlette raises several types for a malformed form
        raise BadRequest(f"the multipart body cannot be parsed: {err}") from err
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidInput('the multipart form needs the picture in a file field named "file"')
        data = await upload.read(limits.max_body_bytes + 1)
        if len(data) > limits.max_body_bytes:
            raise PayloadTooLarge(f"the file is over the {limits.max_body_bytes:,}-byte limit")
        return data
    finally:
        await form.close()


def _decode_picture(data: bytes, limits: Limits) -> np.ndarray:
    try:
        image = decode_image(data, limits.max_image_pixels)
    except ImageError as err:
        if err.reason == "too_large":
            raise PayloadTooLarge(str(err)) from err
        if err.reason == "no_ink":
            raise InvalidInput(str(err)) from err
        raise BadRequest(str(err)) from err
    return image.reshape(1, SIDE, SIDE, 1)
