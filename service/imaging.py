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
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from modelrepo.contract import SIDE

BOX = 20
# The picture formats accepted (Pillow's names), each tested with every common image mode in
# tests/test_hostile_pictures.py. Anything else Pillow could open (ICO, PPM, PSD, ...) is refused.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
# Downscale big uploads first: the digit ends up 20 px tall, so 256 px keeps plenty of detail.
WORKING_SIDE = 256
# A picture whose ink is fainter than this (0-1 contrast against its background) has no digit.
MIN_CONTRAST = 0.15
# Pixels fainter than this share of the ink's peak are ignored when finding the bounding box,
# so paper texture and JPEG noise do not stretch it.
BOX_THRESHOLD = 0.2
# Modes whose pixels are not 8-bit: scaled to 0-255 by their own range before anything else.
WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")
# Modes the steps below handle as they are; any other is converted to RGB(A) first.
PLAIN_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")


class ImageError(ValueError):
    """The bytes are not a usable picture of a digit; ``reason`` says which problem."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # "undecodable", "unsupported", "too_large" or "no_ink"


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of a picture in one of FORMATS -> float32 (28, 28) in [0, 1], white ink on black.

    Memory stays small whatever the file claims: dimensions are checked against ``max_pixels``
    before any pixel is decoded (for a JPEG, after ``draft`` has chosen a reduced decoding
    scale, so a big photo is decoded at 1/2 to 1/8 size), and the picture is shrunk to 256 px
    before any copy (colour conversion, EXIF rotation) is made.
    """
    if not data:
        raise ImageError("the image is empty", "undecodable")
    image = open_image(data)
    what = f"the {image.format} image ({image.mode}, {image.width}x{image.height})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.draft("L", (WORKING_SIDE, WORKING_SIDE))  # JPEG: decode at reduced size
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"the image is {width}x{height}, over the {max_pixels:,}-pixel limit",
                    "too_large",
                )
            image.load()
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            if image.mode in WIDE_MODES:
                image = to_8bit(image)
            elif image.mode not in PLAIN_MODES:  # CMYK, YCbCr, LAB, HSV, RGBa, ...
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
            if orientation != 1:
                image = ImageOps.exif_transpose(image)
            return mnistify(ink_map(image))
    except ImageError:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        # Truncated or corrupt data, or a mode Pillow cannot convert: the client's picture.
        raise ImageError(f"{what} cannot be decoded: {describe(err)}", "undecodable") from err


def open_image(data: bytes) -> Image.Image:
    """Identify the picture from its header (no pixels decoded); only FORMATS are tried."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked after
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        pass
    except Image.DecompressionBombError as err:  # so many pixels that Pillow will not open it
        raise ImageError(f"the image is too large: {describe(err)}", "too_large") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"the image cannot be decoded: {describe(err)}", "undecodable") from err
    try:  # not one we accept: say what it is, if Pillow knows it
        other = Image.open(io.BytesIO(data)).format
    except Exception:
        other = None
    accepted = ", ".join(FORMATS)
    if other:
        raise ImageError(f"{other} pictures are not accepted; send {accepted}", "unsupported")
    raise ImageError(f"the body is not a picture in an accepted format ({accepted})", "undecodable")


def describe(err: BaseException) -> str:
    """An exception's message for a client: no reprs of Python objects (``<... at 0x...>``)."""
    text = str(err).split("\n")[0]
    return text if text and " at 0x" not in text else type(err).__name__


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float picture scaled by its own range to 8-bit grey."""
    pixels = np.asarray(image, dtype=np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


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
