"""scripts/profile_frontend.py (``make profile``): a short run without py-spy measures the floor's
and our CPU per request round by round, in alternating order, and gives their median ratio."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_script


def test_a_bad_round_count_is_refused_at_once() -> None:
    done = run_script("profile_frontend", "--rounds", "0", "--no-sample")
    assert done.returncode == 2
    assert "--rounds must be at least 1" in done.stderr


@pytest.mark.slow
def test_a_short_run_measures_both_servers_round_by_round(
    models_dir: Path, mnist_path: Path
) -> None:
    if not shutil.which("wrk"):
        pytest.fail("wrk is not installed: make wrk")
    done = run_script(
        "profile_frontend",
        *("--models", models_dir, "--rounds", "2", "--duration", "3", "--concurrency", "4"),
        "--no-sample",
        mnist=mnist_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    progress = re.findall(
        r"^round (\d): floor ([\d.]+) µs, ours ([\d.]+) µs CPU per request: ([\d.]+)x$",
        done.stderr,
        re.M,
    )
    assert [p[0] for p in progress] == ["1", "2"], done.stderr
    rows = re.findall(r"^\| (\d) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|$", done.stdout, re.M)
    assert rows == [p for p in progress], done.stdout  # the table says what each round measured
    ratios = []
    for _, floor, ours, ratio in rows:
        assert float(floor) > 0 and float(ours) > 0
        assert float(ratio) == pytest.approx(float(ours) / float(floor), abs=0.01)
        ratios.append(float(ratio))
    median = re.search(r"^Median over the rounds: ([\d.]+)x\.$", done.stdout, re.M)
    assert median and float(median.group(1)) == pytest.approx(sum(ratios) / 2, abs=0.01)
    assert "Where ours goes" not in done.stdout  # --no-sample: no py-spy run
