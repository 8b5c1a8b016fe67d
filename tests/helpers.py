"""Helpers shared by the tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from loadtests.procs import ServerProcess as Server
from loadtests.procs import run_server

REPO = Path(__file__).resolve().parent.parent

__all__ = ["REPO", "Server", "png_bytes", "run_server"]


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    """Encode a uint8 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()
