"""scripts/bench_overload.py's CPU split: the CPU lists it reads, and a server pinned by
``run_server(cpus=...)``, whose every process keeps the pin and whose default ``--workers``
counts only those CPUs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import ModuleType

import httpx
import psutil
import pytest

from loadtests.procs import run_server
from modelrepo.contract import INPUT_NAME, SIDE
from tests.helpers import script_module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The script as a module."""
    return script_module("bench_overload")


def test_cpu_lists_are_read_as_taskset_writes_them(bench: ModuleType) -> None:
    usable = sorted(os.sched_getaffinity(0))
    first = usable[0]
    assert bench.cpu_list(str(first)) == {first}
    assert bench.cpu_list(",".join(map(str, usable))) == set(usable)
    if usable == list(range(first, usable[-1] + 1)):
        assert bench.cpu_list(f"{first}-{usable[-1]}") == set(usable)


def test_a_cpu_that_is_not_usable_here_is_refused(bench: ModuleType) -> None:
    missing = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(argparse.ArgumentTypeError, match="not all of these CPUs are usable"):
        bench.cpu_list(str(missing))


@pytest.mark.slow
def test_a_pinned_server_runs_only_on_its_cpus(models_dir: Path, tmp_path: Path) -> None:
    usable = os.sched_getaffinity(0)
    if len(usable) < 2:
        pytest.skip("pinning to one CPU of one changes nothing to check")
    cpu = max(usable)
    args = ("--variants", "original", "--runtimes", "onnx")
    with run_server(models_dir, tmp_path / "server.log", *args, cpus={cpu}) as server:
        server.wait_ready()
        engine = httpx.get(f"{server.url}/engine", timeout=10).json()
        assert engine["workers"] == 1, engine  # counted on its one CPU, not the machine's
        top = psutil.Process(server.process.pid)
        processes = [top, *top.children(recursive=True)]
        assert {p.pid for p in processes} >= set(engine["pids"])
        for process in processes:
            assert process.cpu_affinity() == [cpu], process.cmdline()
        digit = [[0.0] * SIDE] * SIDE
        answer = httpx.post(f"{server.url}/predict/original@onnx", json={INPUT_NAME: digit})
        assert answer.status_code == 200, answer.text
