"""scripts/bench_http_path.py: a short run on the quick models prints both ways' CPU per round
and their ratio, having checked that every answer was a 200 both ways."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import run_script


@pytest.mark.slow
def test_a_short_run_measures_both_ways(models_dir: Path, mnist_path: Path) -> None:
    done = run_script(
        "bench_http_path",
        *("--models", models_dir, "--concurrency", "4", "--requests", "60", "--rounds", "2"),
        mnist=mnist_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rounds = re.findall(r"^round \d+: lean ([\d.]+) µs, asgi ([\d.]+) µs$", done.stdout, re.M)
    assert len(rounds) == 2 and all(float(a) > 0 and float(b) > 0 for a, b in rounds), done.stdout
    assert re.search(r"asgi / lean, by round: [\d.]+ [\d.]+; median [\d.]+", done.stdout)
