"""The window schedule one Locust run follows: which target is driven in which window.

A load test measures every target of one concurrency level in one Locust run, switching target
every ``window_s`` seconds in alternating order (A B C D, then D C B A, ...), so that targets are
measured back to back and the machine's drift cancels out of their ratios. The runner writes a
:class:`Schedule` as JSON; the Locust file (``--schedule FILE``) reads it back: this module is
the contract between the two, and imports neither.

Time zero is the end of the warm-up, in which every target gets an equal, unrecorded share. In
each window the first ``settle_s`` seconds are not counted: the previous target's requests are
still finishing and the new one's connections are warming up.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

# The share of a window (at most SETTLE_MAX_S) that is not counted while the switch settles.
SETTLE_SHARE = 0.1
SETTLE_MAX_S = 0.2
# After the last window, users idle this long so that its last requests finish inside the run.
TAIL_S = 0.5


@dataclass(frozen=True)
class Slot:
    """One target of the schedule: the model name as addressed, its protocol, and how its
    tensors are shaped (a :class:`loadtests.shaping.TensorLayout` as JSON; '' for native)."""

    model: str
    protocol: str
    layout: str = ""


@dataclass(frozen=True)
class Schedule:
    """The targets, and for each window the index of the target it drives."""

    targets: tuple[Slot, ...]
    windows: tuple[int, ...]
    window_s: float
    warmup_s: float

    @property
    def settle_s(self) -> float:
        """The uncounted start of every window."""
        return min(SETTLE_MAX_S, self.window_s * SETTLE_SHARE)

    @property
    def counted_s(self) -> float:
        """The counted time of one window."""
        return self.window_s - self.settle_s

    @property
    def end_s(self) -> float:
        """When the run is over, from time zero: the windows and the tail."""
        return len(self.windows) * self.window_s + TAIL_S

    @property
    def seconds(self) -> float:
        """The Locust run's whole length: warm-up, windows and tail."""
        return self.warmup_s + self.end_s

    def at(self, elapsed_s: float) -> tuple[int, int, bool]:
        """At ``elapsed_s`` from the end of the warm-up (negative during it): the target index
        to drive (-1: none, the run is over), the window index (-1 in the warm-up), and whether
        a request started now is counted."""
        if elapsed_s < 0:
            if self.warmup_s <= 0:
                return self.windows[0], -1, False
            share = (elapsed_s + self.warmup_s) / self.warmup_s * len(self.targets)
            return min(int(share), len(self.targets) - 1), -1, False
        window = int(elapsed_s // self.window_s)
        if window >= len(self.windows):
            return -1, -1, False
        counted = elapsed_s - window * self.window_s >= self.settle_s
        return self.windows[window], window, counted

    def next_switch(self, elapsed_s: float) -> float:
        """Seconds from ``elapsed_s`` to the next change of window (inf after the last)."""
        if elapsed_s < 0:
            return -elapsed_s
        window = math.floor(elapsed_s / self.window_s)
        if window >= len(self.windows):
            return math.inf
        return (window + 1) * self.window_s - elapsed_s

    def save(self, path: Path) -> None:
        """Write the schedule as JSON."""
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Schedule:
        """Read a schedule written by :meth:`save`."""
        data = json.loads(path.read_text())
        return cls(
            targets=tuple(Slot(**slot) for slot in data["targets"]),
            windows=tuple(int(w) for w in data["windows"]),
            window_s=float(data["window_s"]),
            warmup_s=float(data["warmup_s"]),
        )
