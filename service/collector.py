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
  freeze again.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 10_000  # objects allocated between young collections (CPython: 700)


def settle(what: str) -> None:
    """After start-up (``what`` finished): freeze what it made, and collect young ones rarer."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    log.debug("%s: %d objects frozen", what, gc.get_freeze_count())


def release(what: str) -> None:
    """After ``what`` dropped objects frozen at start-up (a model retired): collect them."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.debug("%s: %d objects frozen", what, gc.get_freeze_count())
