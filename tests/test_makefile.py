"""The Makefile's main job runs on the CPU unless asked (``make -n``: nothing is run)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from service.settings import Settings
from tests.helpers import REPO


def demo_command(*args: str) -> str:
    """The command ``make demo`` would run, with these variables."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed: the README's two commands need it")
    # Run from `make test` too: the outer make's flags (MAKEFLAGS, MAKELEVEL) are not ours.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(
        [make, "--no-print-directory", "-n", "demo", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if "mnist-serve demo" in line][-1]


def test_demo_hides_every_gpu_by_default() -> None:
    command = demo_command()
    assert "CUDA_VISIBLE_DEVICES=-1 MNIST_SERVE_DEVICE=cpu " in command, command
    assert command.endswith("mnist-serve demo")


@pytest.mark.parametrize("device", ["auto", "gpu"])
def test_demo_on_a_gpu_when_asked(device: str) -> None:
    command = demo_command(f"DEVICE={device}")
    assert "CUDA_VISIBLE_DEVICES" not in command and f"MNIST_SERVE_DEVICE={device} " in command
    assert Settings(device=device).device == device  # a value the service takes
