"""Turn an uploaded picture of a digit into an MNIST-like 28x28 image.

MNIST digits were made this way: white ink on black, the ink's bounding box scaled so its
longer side is 20 px (aspect ratio kept, anti-aliased), then placed in a 28x28 field so that
its centre of mass sits at the centre. Doing the same to an upload (a photo of paper, a canvas
drawing with a transparent background, any size or mode) makes it classify like MNIST.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIDE = 28
BOX = 20
# Downscale big uploads first: the digit ends up 20 px tall, so 256 px keeps plenty of detail.
WORKING_SIDE = 256
# A picture whose ink is fainter than this (0-1 contrast against its background) has no digit.
MIN_CONTRAST = 0.15
# Pixels fainter than this share of the ink's peak are ignored when finding the bounding box,
# so paper texture and JPEG noise do not stretch it.
BOX_THRESHOLD = 0.2


class ImageError(ValueError):
    """The bytes are not a usable picture of a digit; ``reason`` says which problem."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # "undecodable", "too_large" or "no_ink"


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of a PNG/JPEG/... picture -> float32 (28, 28) in [0, 1], white ink on black."""
    if not data:
        raise ImageError("the image is empty", "undecodable")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"the image is {width}x{height}, over the {max_pixels:,}-pixel limit",
                    "too_large",
                )
            image.draft("L", (WORKING_SIDE, WORKING_SIDE))  # JPEG: decode at reduced size
            image = ImageOps.exif_transpose(image)
            image.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:  # fmt: skip
        raise ImageError(f"the image cannot be decoded ({err})", "undecodable") from err
    image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
    return mnistify(ink_map(image))


def ink_map(image: Image.Image) -> np.ndarray:
    """The picture as float32 ink intensity in [0, 1]: 1 where the digit is, 0 elsewhere."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3]
        if alpha.min() < 0.99:
            # A drawing on a transparent canvas: where it is opaque is where the ink is,
            # whatever its colour.
            return alpha
        image = image.convert("RGB")
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray = 1.0 - gray  # dark ink on light paper: invert to MNIST's white on black
    # Paper is rarely pure white: take the typical (median) level as background.
    background = float(np.median(gray))
    peak = float(gray.max())
    if peak - background < MIN_CONTRAST:
        return np.zeros_like(gray)
    return np.clip((gray - background) / (peak - background), 0.0, 1.0)


def mnistify(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale its longer side to 20 px, centre its mass in 28x28."""
    if float(ink.max(initial=0.0)) < MIN_CONTRAST:
        raise ImageError("the image has no ink: no digit stands out from the background", "no_ink")
    rows = np.flatnonzero((ink > BOX_THRESHOLD * ink.max()).any(axis=1))
    cols = np.flatnonzero((ink > BOX_THRESHOLD * ink.max()).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if (width, height) != size:
        crop = np.asarray(
            Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
        )
    crop = np.clip(crop, 0.0, 1.0)
    # Place the box so that its centre of mass lands on the field's centre (14, 14),
    # without letting any of it fall outside the field.
    ys, xs = np.indices(crop.shape)
    mass = float(crop.sum())
    cy, cx = float((ys * crop).sum()) / mass, float((xs * crop).sum()) / mass
    top = int(np.clip(round(SIDE / 2 - cy), 0, SIDE - crop.shape[0]))
    left = int(np.clip(round(SIDE / 2 - cx), 0, SIDE - crop.shape[1]))
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    field[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    return field
