"""The machine's power draw during a load test, read from RAPL where the system offers it.

Linux exposes the CPU packages' energy counters (Intel RAPL, and AMD's through the same
``intel-rapl`` powercap driver) as ``/sys/class/powercap/intel-rapl:N/energy_uj``: microjoules
since some point, wrapping at ``max_energy_range_uj``. :class:`PowerMeter` samples the package
domains (``intel-rapl:N``, not their core/uncore subdomains, which they include) every second
in a thread, adds up the increases (a wrap adds the range), and gives the mean power over the
time it ran. That is the whole package: the server, the load generator and anything else on the
machine together; DRAM and the rest of the machine are not counted.

On a VM or container there is usually no powercap, and since Linux 5.10 the counters are
readable by root only; then there is no reading and :attr:`PowerMeter.problem` says why (the
report asks for ``--watts``).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
PACKAGE = re.compile(r"^intel-rapl:\d+$")  # a package domain; intel-rapl:0:0 is a subdomain
SAMPLE_S = 1.0  # often enough that a counter wraps at most once between samples
NO_RAPL = "no power reading on this machine (no RAPL): give --watts"
UNREADABLE = (
    "no power reading on this machine (RAPL counters not readable: root only since Linux "
    "5.10): give --watts"
)


@dataclass(frozen=True)
class PowerReading:
    """Energy the CPU packages used while the meter ran."""

    joules: float
    seconds: float
    domains: tuple[str, ...]  # the RAPL domains summed, e.g. ("package-0",)

    @property
    def watts(self) -> float:
        """Mean power over the time measured."""
        return self.joules / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class _Domain:
    name: str
    counter: Path
    wrap_uj: int
    last_uj: int


class PowerMeter:
    """Samples the RAPL package counters under ``root`` from :meth:`start` to :meth:`stop`
    (or over a ``with`` block, leaving :attr:`reading`)."""

    def __init__(self, root: Path | None = None, interval_s: float = SAMPLE_S) -> None:
        self.root = root or POWERCAP
        self.interval_s = interval_s
        self.problem = ""  # why there is no reading, when there is none
        self.reading: PowerReading | None = None  # as a context manager: set on exit
        self._domains: list[_Domain] = []
        self._energy_uj = 0
        self._started = 0.0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PowerMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.reading = self.stop()

    def start(self) -> PowerMeter:
        """Read the counters once and keep sampling them; without any, note the problem."""
        self._domains = self._find()
        if not self._domains:
            return self
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="rapl-meter", daemon=True)
        self._thread.start()
        return self

    def sample(self) -> None:
        """Add each counter's increase since the last sample."""
        with self._lock:
            for domain in self._domains:
                now = int(domain.counter.read_text())
                delta = now - domain.last_uj
                self._energy_uj += delta if delta >= 0 else delta + domain.wrap_uj
                domain.last_uj = now

    def stop(self) -> PowerReading | None:
        """The energy used since :meth:`start` (None without RAPL)."""
        if self._thread is None:
            return None
        self._done.set()
        self._thread.join()
        self._thread = None
        self.sample()
        seconds = time.perf_counter() - self._started
        names = tuple(d.name for d in self._domains)
        return PowerReading(self._energy_uj / 1e6, seconds, names)

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            self.sample()

    def _find(self) -> list[_Domain]:
        folders = sorted(p for p in self.root.glob("intel-rapl:*") if PACKAGE.match(p.name))
        if not folders:
            self.problem = NO_RAPL
            return []
        try:
            return [
                _Domain(
                    (folder / "name").read_text().strip(),
                    folder / "energy_uj",
                    int((folder / "max_energy_range_uj").read_text()),
                    int((folder / "energy_uj").read_text()),
                )
                for folder in folders
            ]
        except PermissionError:
            self.problem = UNREADABLE
        except (OSError, ValueError) as err:
            self.problem = (
                f"no power reading on this machine (RAPL unreadable: {err}): give --watts"
            )
        return []
