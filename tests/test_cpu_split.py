"""The benchmarks' CPU split (``--server-cpus``, ``--load-cpus``; ``loadtests.procs``): the CPU
lists read, a half or overlapping split refused, and a server pinned by
``run_server(cpus=...)``, whose every process keeps the pin and whose default ``--workers``
counts only those CPUs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import httpx
import psutil
import pytest

from loadtests.procs import add_cpu_split, check_cpu_split, cpu_list, run_server
from modelrepo.contract import INPUT_NAME, SIDE


def test_cpu_lists_are_read_as_taskset_writes_them() -> None:
    usable = sorted(os.sched_getaffinity(0))
    first = usable[0]
    assert cpu_list(str(first)) == {first}
    assert cpu_list(",".join(map(str, usable))) == set(usable)
    if usable == list(range(first, usable[-1] + 1)):
        assert cpu_list(f"{first}-{usable[-1]}") == set(usable)


def test_a_cpu_that_is_not_usable_here_is_refused() -> None:
    missing = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(argparse.ArgumentTypeError, match="not all of these CPUs are usable"):
        cpu_list(str(missing))
    with pytest.raises(argparse.ArgumentTypeError, match="not all of these CPUs are usable"):
        cpu_list(f"0-{missing + 4_000_000_000}")  # refused before any range is built


@pytest.mark.parametrize("text", ["", ",", "0-", "-1", "a", "0-1-2", "0,,1", "1-0"])
def test_a_list_that_names_no_cpu_clearly_is_refused(text: str) -> None:
    """An empty or malformed list would leave a benchmark silently unpinned."""
    with pytest.raises(argparse.ArgumentTypeError):
        cpu_list(text)


def parse(*argv: str) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """A parser with the split, and what it reads from ``argv``."""
    parser = argparse.ArgumentParser()
    add_cpu_split(parser)
    return parser, parser.parse_args(argv)


def test_a_split_is_described_and_no_split_is_empty() -> None:
    cpu = min(os.sched_getaffinity(0))
    assert check_cpu_split(*parse()) == ""
    others = os.sched_getaffinity(0) - {cpu}
    if others:
        other = min(others)
        described = check_cpu_split(*parse("--server-cpus", str(cpu), "--load-cpus", str(other)))
        assert described == f"servers on CPUs [{cpu}], load on [{other}]"


@pytest.mark.parametrize("half", ["--server-cpus", "--load-cpus"])
def test_half_a_split_is_refused(half: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        check_cpu_split(*parse(half, str(min(os.sched_getaffinity(0)))))
    assert "go together" in capsys.readouterr().err


def test_an_overlapping_split_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    cpu = str(min(os.sched_getaffinity(0)))
    with pytest.raises(SystemExit):
        check_cpu_split(*parse("--server-cpus", cpu, "--load-cpus", cpu))
    assert "must not overlap" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "expected"), [((), 1), (("--workers", "2"), 2)], ids=["default", "two-workers"]
)
def test_a_pinned_server_runs_only_on_its_cpus(
    models_dir: Path, tmp_path: Path, workers: tuple[str, ...], expected: int
) -> None:
    usable = os.sched_getaffinity(0)
    if len(usable) < 2:
        pytest.skip("pinning to one CPU of one changes nothing to check")
    cpu = max(usable)
    args = ("--variants", "original", "--runtimes", "onnx", *workers)
    with run_server(models_dir, tmp_path / "server.log", *args, cpus={cpu}) as server:
        server.wait_ready()
        engine = httpx.get(f"{server.url}/engine", timeout=10).json()
        # The default counts the one CPU it has, not the machine's
        assert engine["workers"] == expected, engine
        top = psutil.Process(server.process.pid)
        processes = [top, *top.children(recursive=True)]
        assert {p.pid for p in processes} >= set(engine["pids"])
        assert len(processes) >= expected  # with two workers: supervisor, front ends, executor
        for process in processes:
            assert process.cpu_affinity() == [cpu], process.cmdline()
        digit = [[0.0] * SIDE] * SIDE
        answer = httpx.post(f"{server.url}/predict/original@onnx", json={INPUT_NAME: digit})
        assert answer.status_code == 200, answer.text


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "listening"), [("1", True), ("2", False)])
def test_a_port_taken_before_the_bind_starts_the_server_again(
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
    listening: bool,
) -> None:
    """``free_port()`` releases the port it found; another socket may take it before the
    server binds it: a client's (bound, not listening), or another server's (listening: a
    connection to the port then succeeds, but reaches it, not ours). Ours then cannot listen,
    and ``run_server`` starts it on new ports (the single process and the supervisor say so in
    their own words)."""
    import socket

    from loadtests import procs

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        if listening:
            taken.listen()
        ports = iter([taken.getsockname()[1]])
        real = procs.free_port
        monkeypatch.setattr(procs, "free_port", lambda: next(ports, None) or real())
        args = ("--variants", "original", "--runtimes", "onnx", "--workers", workers)
        with run_server(models_dir, tmp_path / "server.log", *args) as server:
            assert server.url != f"http://127.0.0.1:{taken.getsockname()[1]}"
            server.wait_ready()
            assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
