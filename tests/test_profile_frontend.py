"""scripts/profile_frontend.py (``make profile``): a short run without py-spy measures the floor's
and our CPU per request round by round against real servers and gives their median ratio; the
rounds alternate their order and name the runs steal spoiled; a run with errors gives no figure."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_script, script_module


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
        # A run the hypervisor took CPU from is named after the ratio: " (ours, CPU steal 10 %)".
        r"^round (\d): floor ([\d.]+) µs, ours ([\d.]+) µs CPU per request: ([\d.]+)x"
        r"(?: \((?:floor|ours), CPU steal \d+ %\))*$",
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


def test_rounds_alternate_and_name_the_runs_steal_spoiled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = script_module("profile_frontend")
    calls: list[str] = []
    cost = {"floor": 200.0, "ours": 250.0}

    def measured(target: Any, concurrency: int, seconds: int, script: Path, what: str) -> Any:
        calls.append(what)
        return cost[target.url], (0.11 if what == "ours in round 2" else 0.01)

    monkeypatch.setattr(profile, "cpu_per_request", measured)
    targets = {name: profile.Target(name, 0) for name in cost}
    found = profile.measure_rounds(targets, 3, 32, 10, Path("post.lua"))
    assert calls == [
        *("floor in round 1", "ours in round 1", "ours in round 2", "floor in round 2"),
        *("floor in round 3", "ours in round 3"),
    ]
    assert found.ratios() == [1.25, 1.25, 1.25]
    assert (
        "round 2: floor 200.0 µs, ours 250.0 µs CPU per request: 1.25x (ours, CPU steal 11 %)"
        in (capsys.readouterr().err)
    )
    profile.print_rounds(found)
    said = capsys.readouterr().out
    assert "| 3 | 200.0 | 250.0 | 1.25x |" in said and "Median over the rounds: 1.25x." in said
    assert "Warning: in 1 of 6 runs the hypervisor took over 5 % of the CPU" in said


def test_a_run_with_errors_gives_no_cpu_per_request() -> None:
    profile = script_module("profile_frontend")
    got = {"requests": 900.0, "errors": 3.0, "socket_errors": 0.0, "rps": 90.0}
    with pytest.raises(profile.MeasureError, match="ours in round 1: 900 answered, 3 not 2xx"):
        profile.per_request_us(0.0, os.getpid(), got, "ours in round 1")
    with pytest.raises(profile.MeasureError, match="0 answered"):
        profile.per_request_us(0.0, os.getpid(), got | {"requests": 0.0, "errors": 0.0}, "x")
    assert profile.per_request_us(0.0, os.getpid(), got | {"errors": 0.0}, "x") > 0
