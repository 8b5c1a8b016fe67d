"""scripts/bench_http_path.py: a short run on the quick models prints both ways' CPU per round
and their ratio, having checked that every answer was a 200 both ways."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_a_short_run_measures_both_ways(models_dir: Path, mnist_path: Path) -> None:
    command = [sys.executable, str(REPO / "scripts" / "bench_http_path.py")]
    command += ["--models", str(models_dir), "--concurrency", "4", "--requests", "60"]
    command += ["--rounds", "2"]
    env = {**os.environ, "MNIST_DATA": str(mnist_path)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rounds = re.findall(r"^round \d+: lean ([\d.]+) µs, asgi ([\d.]+) µs$", done.stdout, re.M)
    assert len(rounds) == 2 and all(float(a) > 0 and float(b) > 0 for a, b in rounds), done.stdout
    assert re.search(r"asgi / lean, by round: [\d.]+ [\d.]+; median [\d.]+", done.stdout)
