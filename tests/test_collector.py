"""service.collector: start-up frozen, young collections rarer (its effect: docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from service import collector


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_settle_freezes_start_up_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        kept = [[index] for index in range(1000)]  # alive at start-up: frozen
        collector.settle("test")
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class Cycle:
    """Garbage only the cyclic collector frees: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


def frozen_cycle() -> weakref.ref[Cycle]:
    """A cycle frozen at "start-up", then dropped (a retired model's leftovers): its ref."""
    cycle = Cycle()
    gc.freeze()
    ref = weakref.ref(cycle)
    del cycle
    return ref


def test_a_release_outside_a_loop_collects_at_once() -> None:
    ref = frozen_cycle()
    try:
        gc.collect()
        assert ref() is not None  # frozen: an ordinary collection leaves it
        collector.release("test")
        assert ref() is None
    finally:
        gc.unfreeze()


@pytest.mark.anyio
async def test_a_release_waits_for_a_moment_with_nothing_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While requests are served the full collection (0.4 s with TensorFlow) waits; it runs
    at the first poll that finds none, once for releases owed together."""
    monkeypatch.setattr(collector, "IDLE_POLL_S", 0.01)
    in_flight = [3]
    collector.serving(lambda: in_flight[0])
    ref = frozen_cycle()
    try:
        collector.release("a model retired")
        collector.release("another")  # owed together: the same collection
        await asyncio.sleep(0.1)
        assert ref() is not None  # still serving: not yet
        in_flight[0] = 0
        await asyncio.sleep(0.1)
        assert ref() is None
    finally:
        collector.serving(lambda: 0)
        gc.unfreeze()


@pytest.mark.anyio
async def test_a_release_runs_anyway_after_its_longest_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector, "IDLE_POLL_S", 0.01)
    monkeypatch.setattr(collector, "MAX_DEFER_S", 0.05)
    collector.serving(lambda: 1)  # never idle
    ref = frozen_cycle()
    try:
        collector.release("under constant load")
        await asyncio.sleep(0.2)
        assert ref() is None
    finally:
        collector.serving(lambda: 0)
        gc.unfreeze()
