"""CPU steal: the share of this machine's CPU time the hypervisor gave to someone else while a
measurement ran.

On a shared virtual machine another tenant can take the host's cores for a while; the guest
counts that time as "steal" (``/proc/stat``'s eighth figure on the ``cpu`` line, in clock
ticks over every CPU). It slows the server and the load generator alike, in bursts of
milliseconds, so a run measured under it reads slower and noisier than the machine is: on the
2-core KVM machine of docs/benchmarks.md, section AC, steal reached 30-44 % and our client then
missed p99 <= 20 ms against a server that does nothing even at 125 req/s. Every measured
window records its share (:class:`Sampler` for the closed loop's windows, :func:`read` around
each open-loop run), and the report warns above :data:`NOISY`. Where there is no
``/proc/stat`` (not Linux) there is no reading: None, never 0.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
NOISY = 0.05  # above this share of the CPU taken by the hypervisor, a figure is flagged
SAMPLE_S = 0.25  # how often the sampler reads /proc/stat (it ticks at 100 Hz per CPU)
ADVICE = "re-run when the st column of `vmstat 1` stays near 0"


@dataclass(frozen=True)
class Ticks:
    """The machine's CPU clock ticks so far, all CPUs together, read at ``at`` (time.time)."""

    at: float
    steal: int
    total: int


def read(path: Path = PROC_STAT) -> Ticks | None:
    """The ticks now (None where ``path`` cannot be read or has no steal figure)."""
    try:
        fields = path.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: the guest figures
    # are counted in user and nice already.
    ticks = [int(value) for value in fields[1:9]]
    return Ticks(time.time(), ticks[7], sum(ticks))


def share(before: Ticks | None, after: Ticks | None) -> float | None:
    """The share of CPU time stolen between two readings (None without both, or no tick)."""
    if before is None or after is None or after.total <= before.total:
        return None
    stolen = (after.steal - before.steal) / (after.total - before.total)
    return round(min(max(stolen, 0.0), 1.0), 4)


def noisy(stolen: float | None) -> bool:
    """Whether a figure measured with ``stolen`` of the CPU taken is to be flagged."""
    return stolen is not None and stolen > NOISY


def percent(stolen: float | None) -> str:
    """A share for a table: "31 %", or "-" without a reading."""
    return "-" if stolen is None else f"{stolen:.0%}".replace("%", " %")


def note(stolen: float | None) -> str:
    """A clause for a line of progress: ", CPU steal 31 %" when flagged, else nothing."""
    return f", CPU steal {percent(stolen)}" if noisy(stolen) else ""


def warning(shares: list[float | None], what: str) -> str:
    """The report's warning over measurements with ``shares`` stolen ("" when none is over
    :data:`NOISY`); ``what`` names them ("windows", "runs")."""
    stolen = [share for share in shares if share is not None and noisy(share)]
    if not stolen:
        return ""
    return (
        f"in {len(stolen)} of {len(shares)} {what} the hypervisor took over {percent(NOISY)} of "
        f"the CPU (CPU steal, up to {percent(max(stolen))}): those figures read slower and "
        f"noisier than the machine is; {ADVICE}"
    )


class Sampler:
    """Reads ``/proc/stat`` every ``interval_s`` from :meth:`start` to :meth:`stop` (or over a
    ``with`` block), so that the steal of any stretch inside can be told after the fact: the
    closed loop's windows are timed by Locust, in another process."""

    def __init__(self, path: Path = PROC_STAT, interval_s: float = SAMPLE_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self.samples: list[Ticks] = []
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Sampler:
        """Read now and keep reading (nothing, where there is no reading)."""
        if self._sample():
            self._thread = threading.Thread(target=self._run, name="steal-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading, after a last reading."""
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            self._thread = None
            self._sample()

    def share(self, start: float, end: float) -> float | None:
        """The steal from the last reading at or before ``start`` to the first at or after
        ``end`` (times as time.time; the ends of what was read when outside it)."""
        if len(self.samples) < 2:
            return None
        times = [s.at for s in self.samples]
        first = min(max(bisect.bisect_right(times, start) - 1, 0), len(times) - 2)
        last = min(bisect.bisect_left(times, end), len(times) - 1)
        return share(self.samples[first], self.samples[max(last, first + 1)])

    def _sample(self) -> bool:
        ticks = read(self.path)
        if ticks is not None:
            self.samples.append(ticks)
        return ticks is not None

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            self._sample()
