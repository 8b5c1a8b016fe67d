"""A hostile client sending pictures to a real server: every accepted format in every mode
classifies, anything else or anything broken is a clear 4xx (never a 5xx, no Python reprs or
machine paths), decompression bombs are refused, many large pictures at once keep memory
bounded, and the server is still serving (and back near its idle memory) at the end."""

from __future__ import annotations

import concurrent.futures
import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from service.imaging import FORMATS
from tests.helpers import Server
from tests.hostile_helpers import DIGIT, Hostile, assert_clean, encode, rss_mb, upload
from tests.hostile_helpers import hostile as hostile
from tests.hostile_helpers import hostile_run as hostile_run

pytestmark = pytest.mark.slow

MODES = (
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "F",
    "I;16",
    "LA",
    "PA",
    "RGBX",
)


def picture(mode: str) -> Image.Image | None:
    """DIGIT in ``mode`` (None if Pillow cannot make that mode from L)."""
    if mode == "I;16":
        return Image.fromarray(DIGIT.astype(np.uint16) * 200)
    try:
        return Image.fromarray(DIGIT).convert(mode)
    except ValueError:
        return None


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_accepted_format_in_every_mode_classifies(hostile: Server, fmt: str) -> None:
    """Each accepted format, in each mode Pillow can save it in, gives the digit 1."""
    tried = 0
    for mode in MODES:
        image = picture(mode)
        try:
            data = encode(image, fmt) if image is not None else None
        except (OSError, ValueError, KeyError):
            data = None  # Pillow cannot write this mode in this format: no client can send it
        if data is None:
            continue
        tried += 1
        response = upload(hostile, data, f"image/{fmt.lower()}")
        assert response.status_code == 200, (mode, response.text)
        assert response.json()["predictions"][0]["digit"] == 1, (mode, response.json())
    assert tried >= 3


def test_first_frame_of_an_animated_gif(hostile: Server) -> None:
    """An animated GIF: its first frame is the picture, not the second (a bar across, which
    does not read 1: checked, so that the test can tell the frames apart)."""
    bar = DIGIT.T.copy()
    frames = [Image.fromarray(DIGIT), Image.fromarray(bar)]
    second = upload(hostile, encode(frames[1], "PNG")).json()["predictions"][0]["digit"]
    assert second != 1, "the second frame reads 1 too: the test cannot tell them apart"
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    response = upload(hostile, buffer.getvalue(), "image/gif")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["digit"] == 1, response.json()


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX"])
def test_other_formats_are_415_naming_the_accepted_ones(hostile: Server, fmt: str) -> None:
    """A picture Pillow could read but we do not accept: 415, and the list of what we do."""
    response = upload(hostile, encode(Image.fromarray(DIGIT).convert("RGB"), fmt))
    assert_clean(response)
    assert response.status_code == 415 and "PNG, JPEG, WEBP" in response.json()["detail"]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"GIF89a garbage", b"%PDF-1.4 not an image",
     b"\xff\xd8\xff\xe0" + b"\0" * 100],
    ids=["empty", "png-header-only", "gif-garbage", "pdf", "jpeg-garbage"],
)  # fmt: skip
def test_garbage_and_truncated_pictures_are_400(hostile: Server, data: bytes) -> None:
    """Not a picture, or a broken one: 400, message without reprs."""
    response = upload(hostile, data)
    assert_clean(response)
    assert response.status_code == 400, response.text


def test_a_truncated_png_is_400(hostile: Server) -> None:
    """Half of a real PNG."""
    data = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), np.uint8)), "PNG"
    )
    response = upload(hostile, data[: len(data) // 2])
    assert_clean(response)
    assert response.status_code == 400, response.text


def test_a_decompression_bomb_is_refused_before_decoding(hostile: Server) -> None:
    """A tiny PNG that claims 20000x20000 pixels: 413 at once, memory untouched."""
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")
    assert len(bomb) < 100_000
    started = time.perf_counter()
    response = upload(hostile, bomb)
    assert_clean(response)
    assert response.status_code == 413 and time.perf_counter() - started < 1.0


def test_a_big_jpeg_photo_is_decoded_at_reduced_scale(hostile: Server) -> None:
    """A 12-megapixel JPEG (over the 4 MP limit as stored) decodes at 1/8 scale and serves."""
    big = Image.fromarray(DIGIT).resize((4000, 3000))
    response = upload(hostile, encode(big, "JPEG"), "image/jpeg")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["digit"] == 1, response.json()


def large_pictures_at_once(server: Server, count: int = 40) -> list[httpx.Response]:
    """``count`` concurrent 2048x2048 PNGs of DIGIT (small files, 4 MP each when decoded)."""
    big = encode(Image.fromarray(DIGIT).resize((2048, 2048)), "PNG")
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: upload(server, big), range(count)))


def test_many_large_pictures_at_once_keep_memory_bounded(hostile: Server) -> None:
    """40 concurrent 2048x2048 PNGs: all classified (40 is under --max-in-flight and the queue,
    and decoding two at a time keeps the model's queue short), memory bounded."""
    before = rss_mb(hostile.process.pid)
    responses = large_pictures_at_once(hostile)
    assert [r.status_code for r in responses] == [200] * 40, [r.text[:80] for r in responses]
    assert {r.json()["predictions"][0]["digit"] for r in responses} == {1}
    assert rss_mb(hostile.process.pid) - before < 300


def test_unsupported_content_type_names_the_accepted_ones(hostile: Server) -> None:
    """415 lists what is accepted."""
    response = upload(hostile, b"abc", "text/plain")
    assert response.status_code == 415 and "image/webp" in response.json()["detail"]


def test_still_serving_and_memory_back_near_idle(hostile_run: Hostile) -> None:
    """After large pictures and an oversized body (on top of whatever ran before): a
    prediction works and RSS is back within 100 MB of the server's idle memory."""
    server = hostile_run.server
    large_pictures_at_once(server)
    assert upload(server, b"0" * 12_000_000, "application/json").status_code == 413
    time.sleep(1.0)
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert upload(server, encode(Image.fromarray(DIGIT), "PNG")).status_code == 200
    assert rss_mb(server.process.pid) - hostile_run.idle_rss_mb < 100
