"""scripts/bench_overload.py's choice of servers, refused before any server starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_script, script_module


def test_every_named_server_is_known() -> None:
    bench = script_module("bench_overload")
    assert list(bench.SERVERS) == ["defaults", "resends", "off", "nginx", "mosec"]
    assert bench.SERVERS["resends"][1] == ("--shed-hold", "resends")
    assert bench.DEFAULT_SERVERS == ("defaults", "resends", "off")  # nginx, mosec when asked


@pytest.mark.slow
def test_an_unknown_server_is_refused_at_once() -> None:
    done = run_script("bench_overload", "--servers", "defaults,fast", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    known = "defaults, resends, off, nginx, mosec"
    assert f"--servers: unknown fast; choose from {known}" in done.stderr
    assert "machine:" not in done.stdout  # nothing was measured


@pytest.mark.slow
def test_no_server_is_refused() -> None:
    done = run_script("bench_overload", "--servers", " , ", timeout=60)
    assert done.returncode == 2 and "(none given)" in done.stderr, done.stderr


@pytest.mark.slow
def test_a_front_without_room_is_refused_at_once() -> None:
    done = run_script("bench_overload", "--servers", "nginx", "--front-limit", "0", timeout=60)
    assert done.returncode == 2 and "--front-limit must be at least 1" in done.stderr, done.stderr


@pytest.mark.slow
def test_front_flags_without_the_front_are_refused() -> None:
    done = run_script("bench_overload", "--servers", "defaults", "--front-nice", "-5", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "apply only with --servers ...,nginx" in done.stderr


@pytest.mark.slow
def test_a_negative_storm_is_refused_at_once() -> None:
    done = run_script("bench_overload", "--storm", "-1", timeout=60)
    assert done.returncode == 2 and "0 skips the retry storm" in done.stderr, done.stderr


MOSEC = ("--servers", "mosec", "--model", "depthwise@onnx")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "said"),
    [
        # mosec serves the ONNX file: beside LiteRT (the default --model), it names the --model
        (("--servers", "defaults,mosec"), "mosec serves ONNX; pass --model depthwise@onnx"),
        (("--mosec-capacity", "1024"), "apply only with --servers ...,mosec"),  # its default
        ((*MOSEC, "--mosec-capacity", "0"), "--mosec-capacity: 0; at least 1"),
        (
            ("--servers", "mosec,defaults", "--model", "depthwise@onnx", "--mosec-rates", "ours"),
            "name a server of ours before mosec",
        ),
    ],
)
def test_mosec_asked_wrongly_is_refused_at_once(args: tuple[str, ...], said: str) -> None:
    done = run_script("bench_overload", *args, timeout=60)
    assert done.returncode == 2 and said in done.stderr, done.stdout + done.stderr
    assert "machine:" not in done.stdout  # nothing was measured


@pytest.mark.slow
def test_mosec_without_a_trained_model_is_refused_at_once(tmp_path: Path) -> None:
    done = run_script("bench_overload", *MOSEC, "--models", tmp_path, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no exported version of 'depthwise'" in done.stderr and "make demo" in done.stderr
