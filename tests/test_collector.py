"""service.collector: start-up frozen, young collections rarer (its effect: docs/benchmarks.md)."""

from __future__ import annotations

import gc

from service import collector


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
