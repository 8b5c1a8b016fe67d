"""The one place where request bodies become model input: float32 (N, 28, 28, 1) in [0, 1].

Accepted bodies:

* ``application/json``: ``{"image": <28x28 nested or 784 flat list>}`` or ``{"images": [...]}``;
* ``multipart/form-data`` with the picture in the field ``file``;
* a raw picture body (``image/png``, ``image/jpeg``, ``image/webp``, ``image/bmp``,
  ``image/gif``, ``image/tiff``); which formats are accepted is :data:`service.imaging.FORMATS`.

Every problem becomes a :class:`service.errors.ServeError` with a message for the client.
Memory stays bounded whatever arrives: bodies (multipart included) are counted while they
stream and refused past the limit, so nothing larger ever reaches memory or disk; a body that
stalls part-way is refused after a timeout (408); and at most ``decode_slots`` pictures are
decoded at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TypeVar

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from modelrepo.contract import INPUT_NAME, INPUT_SHAPE, PIXELS, SIDE
from service.cycle import complete_body
from service.errors import (
    BadRequest,
    ClientGone,
    InvalidInput,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from service.imaging import FORMATS, ImageError, decode_image

T = TypeVar("T")
IMAGE_TYPES = tuple(f"image/{name.lower()}" for name in FORMATS)
ACCEPTED = ("application/json", "multipart/form-data", *IMAGE_TYPES)


@dataclass(frozen=True)
class Limits:
    """What one request may hold, and how many pictures decode at once."""

    max_body_bytes: int
    max_images: int
    max_image_pixels: int
    body_timeout_s: float = 30.0
    decode_slots: int = 2
    slots: asyncio.Semaphore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", asyncio.Semaphore(self.decode_slots))


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
    else:
        data = await read_body(request, limits)
        if content_type == "application/json":
            return decode_json(data, limits.max_images)
    async with limits.slots:  # bounded: each decode may briefly hold a few megapixels
        return await run_in_threadpool(_decode_picture, data, limits)


async def read_body(request: Request, limits: Limits) -> bytes:
    """The whole body, under the size limit and the body timeout."""
    body = complete_body(request)
    if body is None:
        stream = limited_stream(request, limits.max_body_bytes)
        return await within_body_timeout(_collect(stream), limits)
    # All in already (the usual case): no stream, no timer; the same limits.
    check_declared(request, limits.max_body_bytes)
    check_size(len(body), limits.max_body_bytes)
    return body


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def within_body_timeout(awaitable: Awaitable[T], limits: Limits) -> T:
    """``awaitable`` (reading a body), or 408 if the client takes longer than the timeout."""
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            return await awaitable
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive within {limits.body_timeout_s:g} s"
        ) from None


async def limited_stream(request: Request, max_bytes: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive: 413 past ``max_bytes`` (declared or counted), and a
    client that leaves part-way is ClientGone (499).

    After a 413 the HTTP server (uvicorn's httptools protocol) reads and discards the rest of
    the body, so a client that writes its whole body before reading still gets the 413.
    """
    check_declared(request, max_bytes)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            check_size(size, max_bytes)
            yield chunk
    except ClientDisconnect:
        raise ClientGone("the client closed the connection while sending the body") from None


def check_declared(request: Request, max_bytes: int) -> None:
    """413 if the request's Content-Length is over ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is {int(declared):,} bytes, over the {max_bytes:,} limit")


def check_size(size: int, max_bytes: int) -> None:
    """413 if ``size`` bytes of body (so far) are over ``max_bytes``."""
    if size > max_bytes:
        raise PayloadTooLarge(f"the body is over the {max_bytes:,}-byte limit")


def decode_json(body: bytes, max_images: int) -> np.ndarray:
    """``{"image": ...}`` or ``{"images": [...]}`` -> float32 (N, 28, 28, 1)."""
    try:
        payload = orjson.loads(body)  # 4x faster than json here; NaN/Infinity are not JSON
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from err
    if not isinstance(payload, dict) or len({INPUT_NAME, "images"} & payload.keys()) != 1:
        raise InvalidInput('send an object with exactly one of "image" or "images"')
    if INPUT_NAME in payload:
        images = [payload[INPUT_NAME]]
    else:
        images = payload["images"]
        if not isinstance(images, list) or not images:
            raise InvalidInput('"images" must be a non-empty list of images')
    if len(images) > max_images:
        raise InvalidInput(f"{len(images)} images in one request; the limit is {max_images}")
    array = nested_digits(images)
    if array is not None:
        return validate_pixels(array)
    try:
        array = np.asarray(images, dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise InvalidInput(
            f"each image must be a {SIDE}x{SIDE} nested list or a flat list of {PIXELS} numbers "
            f"(all images the same shape): {err}"
        ) from err
    return validate_pixels(array)


def nested_digits(images: list[Any]) -> np.ndarray | None:
    """Images that are all ``[28][28]`` lists -> float32 (N, 28, 28), else None.

    The usual body, read in half the time ``np.asarray`` takes (which must discover the
    shape): the lists' lengths are checked, and their numbers go straight into ``np.fromiter``.
    Anything else, or anything ``fromiter`` cannot convert, is None: ``np.asarray`` then reads
    it, or explains what is wrong with it."""
    for image in images:
        if type(image) is not list or len(image) != SIDE:
            return None
        for row in image:
            if type(row) is not list or len(row) != SIDE:
                return None
    numbers = chain.from_iterable(chain.from_iterable(images))
    try:
        array = np.fromiter(numbers, dtype=np.float32, count=len(images) * PIXELS)
    except (ValueError, TypeError):
        return None
    return array.reshape(len(images), SIDE, SIDE)


def validate_pixels(array: np.ndarray) -> np.ndarray:
    """(N, 784), (N, 28, 28) or (N, 28, 28, 1) numbers in [0, 1] -> float32 (N, 28, 28, 1)."""
    if array.shape[1:] not in ((PIXELS,), (SIDE, SIDE), INPUT_SHAPE):
        raise InvalidInput(
            f"an image has shape {array.shape[1:]}; "
            f"expected {SIDE}x{SIDE} (nested) or {PIXELS} (flat)"
        )
    low, high = float(array.min()), float(array.max())
    if not (low >= 0.0 and high <= 1.0):  # NaN fails both (min and max propagate it)
        if not np.isfinite(array).all():
            raise InvalidInput("pixel values must be finite numbers (found NaN or infinity)")
        raise InvalidInput(
            f"pixel values must lie in [0, 1] (pixels / 255); found {low:g} to {high:g}"
        )
    return array.reshape(-1, *INPUT_SHAPE)


async def _read_upload(request: Request, limits: Limits) -> bytes:
    """The ``file`` field of a multipart body, parsed while it streams under the body limit."""
    stream = limited_stream(request, limits.max_body_bytes)
    parser = MultiPartParser(
        request.headers, stream, max_files=1, max_fields=4, max_part_size=limits.max_body_bytes
    )
    try:
        form = await within_body_timeout(parser.parse(), limits)
    except MultiPartException as err:
        raise BadRequest(f"the multipart body cannot be parsed: {err.message}") from err
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
        error = {
            "too_large": PayloadTooLarge,
            "no_ink": InvalidInput,
            "unsupported": UnsupportedMediaType,
        }.get(err.reason, BadRequest)
        raise error(str(err)) from err
    return image.reshape(1, *INPUT_SHAPE)
