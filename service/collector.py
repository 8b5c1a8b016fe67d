"""Python's garbage collector, set for a server: what start-up made is frozen, and young
collections come less often.

CPython runs a full collection every 100 young ones (at its default thresholds, 700 objects
allocated each), and a full one walks every tracked object: the ~75,000 a front end holds after
its imports, or the millions TensorFlow leaves in a process that loaded models. A request that
builds many containers (TF Serving's nested ``[28][28][1]`` JSON makes 812 lists a digit) set off
a young collection every request and a full one every hundred: parsing it took 166 µs with the
defaults, 82 µs with start-up frozen and 65 µs with both changes below (in one process, a front
end's imports loaded; `docs/benchmarks.md`, section G). So, once start-up is done:

* :func:`settle` collects once, then freezes every object alive (``gc.freeze``: the permanent
  generation, never walked again) and raises the young generation's threshold to
  :data:`YOUNG_THRESHOLD`. The request path makes no reference cycles of its own; the
  threshold only bounds how long one made by a library waits.
* :func:`release` frees what was frozen and is now dropped (a retired model): thaw, collect,
  freeze again. That full collection walks every object, and holds the interpreter for
  0.4-0.5 s in a process with TensorFlow and two SavedModels (`docs/benchmarks.md`, section
  V), long enough to shed requests past the 300 ms queue deadline during a version swap. So
  it waits for a moment when the process serves nothing (:func:`serving` says how to tell),
  at most :data:`MAX_DEFER_S`. Most of a retired model is freed at once anyway, by reference
  counting: what waits is its cyclic garbage (a few MB for our models).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 10_000  # objects allocated between young collections (CPython: 700)
IDLE_POLL_S = 0.1  # how often a deferred collection looks for an idle moment
MAX_DEFER_S = 60.0  # then it runs anyway: garbage must not pile up under constant load


def _none_in_flight() -> int:
    return 0


_in_flight: Callable[[], int] = _none_in_flight  # replaced by serving(), at start-up
_owed: asyncio.Task[None] | None = None


def serving(in_flight: Callable[[], int]) -> None:
    """How this process counts the requests it serves now (at start-up: the registry's)."""
    global _in_flight
    _in_flight = in_flight


def settle(what: str) -> None:
    """After start-up (``what`` finished): freeze what it made, and collect young ones rarer."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    log.debug("%s: %d objects frozen", what, gc.get_freeze_count())


def release(what: str) -> None:
    """After ``what`` dropped objects frozen at start-up (a model retired): collect them at the
    first moment nothing is served, on the running loop (at once without one). Releases owed
    together are collected once."""
    global _owed
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _collect(what)
        return
    if _owed is None or _owed.done() or _owed.get_loop() is not loop:
        _owed = loop.create_task(_when_idle(what), name="release")


async def _when_idle(what: str) -> None:
    deadline = time.monotonic() + MAX_DEFER_S
    while _in_flight() > 0 and time.monotonic() < deadline:
        await asyncio.sleep(IDLE_POLL_S)
    _collect(what)


def _collect(what: str) -> None:
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    took_ms = (time.perf_counter() - started) * 1000
    log.debug("%s: collected in %.0f ms, %d objects frozen", what, took_ms, gc.get_freeze_count())
