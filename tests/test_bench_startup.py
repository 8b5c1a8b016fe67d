"""scripts/bench_startup.py: one round on the quick models times both ways and prints their
ratios (one design here, to keep the suite short: the default engine's row is the same code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import run_script


@pytest.mark.slow
def test_one_round_times_both_ways(models_dir: Path, mnist_path: Path) -> None:
    done = run_script(
        "bench_startup",
        *("--models", models_dir, "--variant", "original", "--rounds", "1"),
        *("--designs", "single"),
        mnist=mnist_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(
        r"^\| (one process|default engine) \| ([\d.]+) s, [\d,]+ MB \| ([\d.]+) s, [\d,]+ MB "
        r"\| ([\d.]+)x \| ([\d.]+)x \|$",
        done.stdout,
        re.M,
    )
    assert [row[0] for row in rows] == ["one process"], done.stdout
    for _, light, heavy, time_ratio, memory_ratio in rows:
        assert float(light) > 0 and float(heavy) > 0
        assert 0 < float(memory_ratio) < 1  # TensorFlow's memory, for certain; time is noisier
        assert float(time_ratio) > 0
