"""The C open-loop generator (``scripts/openloop.c``): built on demand, run, its JSON typed.

The asyncio generator (:mod:`loadtests.openloop`) saturates its own core at a few thousand
requests per second on a 2-core machine; the C one, single-threaded on epoll, keeps to its
schedule well past 30,000/s there. :func:`build` compiles it with ``cc`` into ``runs/.bin/``
when the binary is missing or older than the source; :func:`run` runs one :class:`Plan` and
returns an :class:`OpenLoopRun`. The tool's own module comment defines every figure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "scripts" / "openloop.c"
CACHE = ROOT / "runs" / ".bin"
FLAGS = ("-O2", "-Wall", "-Wextra")


class CompilerNotFound(RuntimeError):
    """No C compiler (``cc`` or ``gcc``) on PATH."""


def compiler() -> str:
    """The C compiler's path; :class:`CompilerNotFound` if there is none."""
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        raise CompilerNotFound("no C compiler (cc or gcc) on PATH: apt-get install gcc")
    return found


def build(cache: Path = CACHE, source: Path = SOURCE) -> Path:
    """The generator's binary, compiled first if missing or older than its source."""
    binary = cache / source.stem
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")  # then renamed: a reader never sees half a binary
    done = subprocess.run(
        [compiler(), *FLAGS, "-o", str(partial), str(source), "-lm"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or done.stderr.strip():  # warnings count: the source has none
        raise RuntimeError(f"compiling {source.name} failed:\n{done.stderr}")
    partial.replace(binary)
    return binary


@dataclass(frozen=True)
class Plan:
    """One run: what to send where, at what rate and for how long (see ``openloop --help``)."""

    port: int
    rate: float
    seconds: float
    path: str = "/"
    body: Path | None = None  # POST this file; None: GET
    content_type: str = "application/json"
    arrival: Literal["constant", "poisson"] = "constant"
    seed: int = 1
    max_connections: int = 1024
    preopen: int = 64
    timeout_s: float = 5.0
    reuse: Literal["fifo", "lifo"] = "fifo"  # which idle connection takes the next request

    def command(self, binary: Path) -> list[str]:
        """The tool's command line."""
        return [
            str(binary),
            *("--port", str(self.port), "--path", self.path, "--rate", str(self.rate)),
            *("--duration", str(self.seconds), "--arrival", self.arrival, "--seed", str(self.seed)),
            *("--max-connections", str(self.max_connections), "--preopen", str(self.preopen)),
            *("--timeout", str(self.timeout_s), "--content-type", self.content_type),
            *("--reuse", self.reuse),
            *(("--body", str(self.body)) if self.body else ()),
        ]


@dataclass(frozen=True)
class Latency:
    """Exact percentiles (ms, from the scheduled time) over ``count`` values; None if none."""

    count: int
    p50: float | None
    p99: float | None
    max: float | None
    p90: float | None = None  # not reported for the generator's lag


@dataclass(frozen=True)
class OpenLoopRun:
    """The tool's JSON object, typed; every count is over the whole run."""

    offered_rate: float
    duration_s: float
    arrival: str
    scheduled: int
    sent: int
    completed: int
    status_counts: dict[int, int]
    ok: Latency  # 2xx answers
    shed: Latency  # 503 answers
    other: Latency  # any other status
    timeouts: int  # no answer within the timeout of its scheduled time
    # requests lost to a broken connection (or one that did not open), malformed answers too
    connection_errors: int
    bad_responses: int  # malformed answers (each also counted in ``connection_errors``)
    connect_errors: int
    connections_opened: int
    waited: int  # requests that found every connection busy at the maximum
    lag: Latency  # how late the generator got to each request
    elapsed_s: float
    cpu_s: float  # the generator's own CPU time

    @property
    def failed(self) -> int:
        """Requests that got no answer: timed out, or lost to a connection error (a malformed
        answer among them: counted once)."""
        return self.timeouts + self.connection_errors

    def per_second(self, status: int) -> float:
        """Answers of ``status`` per second of scheduled arrivals."""
        return self.status_counts.get(status, 0) / self.duration_s

    @classmethod
    def from_json(cls, text: str) -> OpenLoopRun:
        """Parse the tool's output."""
        raw: dict[str, Any] = json.loads(text)
        classes = raw.pop("latency_ms")
        return cls(
            **{k: v for k, v in raw.items() if k not in ("status_counts", "lag_ms")},
            status_counts={int(k): v for k, v in raw["status_counts"].items()},
            ok=Latency(**classes["2xx"]),
            shed=Latency(**classes["503"]),
            other=Latency(**classes["other"]),
            lag=Latency(**raw["lag_ms"]),
        )


def run(plan: Plan, binary: Path | None = None) -> OpenLoopRun:
    """Run the generator (built if needed) for one plan; its result."""
    binary = binary or build()
    done = subprocess.run(
        plan.command(binary),
        capture_output=True,
        text=True,
        timeout=plan.seconds + plan.timeout_s + 60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"openloop failed ({done.returncode}): {done.stderr.strip()}")
    return OpenLoopRun.from_json(done.stdout)
