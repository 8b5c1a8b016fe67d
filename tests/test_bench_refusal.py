"""scripts/bench_refusal.py: the bound it prints, the CPU time it reads, and its refusal to
measure without the CPU split (the load would land on the measured core)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import run_script, script_module


def test_the_bound_at_4x_is_the_cores_budget() -> None:
    """g + (4 - g) r <= 1 with the served cost 1: refusals at 1/16 of a served request leave
    80 %; free refusals leave 100 %; at a quarter, refusing takes the whole core."""
    bound = script_module("bench_refusal").bound
    assert bound(1.0, 16.0) == pytest.approx(0.8)
    assert bound(0.0, 500.0) == pytest.approx(1.0)
    assert bound(125.0, 500.0) == pytest.approx(0.0)
    assert bound(200.0, 500.0) == 0.0 and bound(500.0, 500.0) == 0.0  # past it: none, no error


def test_busy_time_counts_only_the_processes_pinned_to_the_cpus() -> None:
    """A process pinned to the measured CPU spinning for 0.6 s of CPU adds about that; one
    pinned elsewhere (when there is another CPU) adds nothing."""
    bench = script_module("bench_refusal")
    usable = sorted(os.sched_getaffinity(0))
    spin = (
        "import sys, time\nend = time.process_time() + 0.6\n"
        "while time.process_time() < end: pass\nprint('spun', flush=True)\ntime.sleep(30)"
    )

    def added(pinned: int, measured: int) -> float:
        before = bench.busy_s({measured})
        child = subprocess.Popen(
            ["taskset", "-c", str(pinned), sys.executable, "-c", spin],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "spun\n"
            return float(bench.busy_s({measured}) - before)  # the child still alive
        finally:
            child.kill()
            child.wait()

    assert 0.55 <= added(usable[-1], usable[-1]) <= 1.5  # its spin and its start-up
    if len(usable) > 1:
        assert added(usable[0], usable[-1]) < 0.2  # not pinned to the measured CPU


@pytest.mark.slow
def test_it_refuses_to_measure_without_the_split() -> None:
    done = run_script("bench_refusal", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "give --server-cpus and --load-cpus" in done.stderr
    assert "machine:" not in done.stdout


@pytest.mark.slow
def test_mosec_on_another_runtime_is_refused_at_once() -> None:
    """The peer serves the ONNX file: asked beside LiteRT (the default --model), it says which
    --model to pass, before anything is measured."""
    done = run_script("bench_refusal", "--servers", "ours,mosec", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "mosec serves ONNX; pass --model depthwise@onnx" in done.stderr
    assert "machine:" not in done.stdout
