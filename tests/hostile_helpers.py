"""What the hostile-client tests (test_hostile_*.py) share: a real server with short timeouts
(a module-scoped fixture: each module gets its own server, warmed, its idle memory measured, and
checked for tracebacks at the end), the digit they send, and how they send it and judge the
answer. A test module uses the fixtures by importing them: ``from tests.hostile_helpers import
hostile as hostile, hostile_run as hostile_run``."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from tests.helpers import Server, run_server

LIMITS = (
    "--header-timeout-s",
    "1",
    "--body-timeout-s",
    "1",
    "--keep-alive-s",
    "2",
    "--max-header-bytes",
    "8192",
    "--max-headers",
    "50",
)
# A "1" on black, 64x64: every format and mode (test_hostile_pictures) must classify it.
DIGIT = np.zeros((64, 64), dtype=np.uint8)
DIGIT[10:54, 28:36] = 255
# What no answer may contain: a Python object's repr, a traceback, a path on this machine.
LEAKS = re.compile(r" at 0x[0-9a-f]+|Traceback|/(?:tmp|work|home|root|usr)/")


def rss_mb(pid: int) -> float:
    """Resident memory of a server, MB: the process and its children (the workers and the
    model executor of a multi-process server)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in (process, *process.children(recursive=True))) / 2**20


@dataclass(frozen=True)
class Hostile:
    """The module's server, and its resident memory once warm, before any hostile request."""

    server: Server
    idle_rss_mb: float


@pytest.fixture(scope="module")
def hostile_run(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """A real server with short timeouts, and its memory after a few ordinary requests, before
    any test; after the module, it must still serve."""
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with run_server(models_dir, log, "--runtimes", "savedmodel", *LIMITS) as server:
        server.wait_ready()
        for _ in range(20):
            assert upload(server, encode(Image.fromarray(DIGIT), "PNG")).status_code == 200
        yield Hostile(server, rss_mb(server.process.pid))
        assert "Traceback" not in log.read_text(), "the server logged a traceback"


@pytest.fixture(scope="module")
def hostile(hostile_run: Hostile) -> Server:
    """The module's server."""
    return hostile_run.server


def encode(image: Image.Image, fmt: str) -> bytes:
    """``image`` saved in ``fmt`` (a JPEG at quality 95, as a camera or scanner saves one)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def upload(server: Server, data: bytes, content_type: str = "image/png") -> httpx.Response:
    """A raw picture body to the depthwise model."""
    return httpx.post(
        f"{server.url}/predict/depthwise", content=data, headers={"content-type": content_type}
    )


def assert_clean(response: httpx.Response) -> None:
    """A 4xx with a JSON error and detail, and nothing leaked."""
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["error"] and body["detail"], body
    assert not LEAKS.search(response.text), response.text
