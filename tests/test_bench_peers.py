"""scripts/bench_peers.py's arithmetic and table, without starting any server."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.helpers import script_module


@pytest.fixture(scope="module")
def peers() -> ModuleType:
    """The script as a module."""
    return script_module("bench_peers")


def runs(peers: ModuleType) -> list:
    """Two rounds at c=1 and c=32 with figures chosen so each ratio is distinct."""
    figures = {  # (server, c, round): req/s
        ("mosec", 1, 1): 500,
        ("ours", 1, 1): 1000,
        ("floor", 1, 1): 2000,
        ("mosec", 1, 2): 400,
        ("ours", 1, 2): 1200,
        ("floor", 1, 2): 1500,
        ("mosec", 32, 1): 3000,
        ("ours", 32, 1): 1500,
        ("floor", 32, 1): 6000,
        ("mosec", 32, 2): 2500,
        ("ours", 32, 2): 2000,
        ("floor", 32, 2): 4000,
    }
    return [peers.Run(s, c, n, rps, 1.0 + c / 100, 0.0) for (s, c, n), rps in figures.items()]


def test_ratios_are_taken_within_each_round(peers: ModuleType) -> None:
    found = peers.ratios(runs(peers))
    assert found == {
        (1, 1): {"ours/mosec": 2.0, "ours/floor": 0.5},
        (1, 2): {"ours/mosec": 3.0, "ours/floor": 0.8},
        (32, 1): {"ours/mosec": 0.5, "ours/floor": 0.25},
        (32, 2): {"ours/mosec": 0.8, "ours/floor": 0.5},
    }


def test_table_shows_every_run_and_both_rounds_ratios(peers: ModuleType) -> None:
    text = peers.table(runs(peers))
    lines = text.splitlines()
    assert "| ours | 32 | 1,500 | 1.320 | 2,000 | 1.320 |" in lines
    assert "| mosec | 1 | 500 | 1.010 | 400 | 1.010 |" in lines
    assert "| 1 | 2.00x | 3.00x | 0.50x | 0.80x |" in lines
    assert "| 32 | 0.50x | 0.80x | 0.25x | 0.50x |" in lines
    assert "non-2xx" not in text and "socket errors" not in text and "steal" not in text


def test_table_warns_of_errors(peers: ModuleType) -> None:
    bad = [*runs(peers)[:-1], peers.Run("floor", 32, 2, 4000, 1.0, 7.0)]
    assert "Warning: 7 non-2xx answers" in peers.table(bad)


def test_rounds_alternate_the_order(peers: ModuleType) -> None:
    assert peers.order(1) == ("mosec", "ours", "floor")
    assert peers.order(2) == ("floor", "ours", "mosec")


def test_table_names_the_runs_a_stall_or_the_hypervisor_spoiled(peers: ModuleType) -> None:
    """A run whose wrk timed out (a stall: 1,197 req/s at p50 10 ms, seen once) or that ran
    while the hypervisor took the CPU is named, so its ratios are not taken for the servers'."""
    stalled = peers.Run("ours", 32, 1, 1197, 10.5, 0.0, socket_errors=128, steal=0.01)
    stolen = peers.Run("mosec", 1, 2, 400, 1.0, 0.0, steal=0.17)
    figures = [r for r in runs(peers) if (r.server, r.concurrency, r.round) not in
               {("ours", 32, 1), ("mosec", 1, 2)}] + [stalled, stolen]  # fmt: skip
    text = peers.table(figures)
    assert "socket errors (timeouts: no answer in 2 s) in ours c=32 round 1 (128)" in text
    assert "CPU steal over 5% in mosec c=1 round 2 (17 %)" in text
