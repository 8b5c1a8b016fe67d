"""Open-loop load against a latency target: latency per arrival rate, and the highest rate each
model sustains within the target (MLPerf's Server scenario; Triton Model Analyzer's "best
config under p99 <= X").

``mnist-serve loadtest --arrival poisson --rates 200,400,800 --slo p99=20ms`` runs
:func:`run_sweep`: for each model, requests arrive at each rate (Poisson gaps, real MNIST test
digits as JSON, sent by :mod:`loadtests.openloop`, latency from the scheduled send time), then
:func:`find_max_rate` narrows the highest rate meeting the SLO down by bisection. A request that
fails (any status but 200, or no answer) counts as infinitely slow, so a server cannot meet the
target by refusing work. Results go to ``openloop.json`` and ``openloop.md`` in the run folder.

Why our own generator and not Locust or MLPerf LoadGen: Locust's users are closed loop (a user
waits for its answer; even ``constant_throughput`` only paces each user), so an overloaded
server slows its own load and the queueing goes unmeasured; LoadGen does the scheduling right but
drives a callback in-process, so the HTTP client around it would be ours anyway, and its
C++ package adds a build for little. ``loadtests/openloop.py`` is 250 lines of asyncio, tested
against a server with a known delay (tests/test_openloop.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from loadtests.openloop import OpenLoopResult, run_open_loop
from loadtests.protocols import encode

SLO_PATTERN = re.compile(r"^p(\d+(?:\.\d+)?)=(\d+(?:\.\d+)?)ms$")
DIGITS = 256  # distinct test digits cycled through


@dataclass(frozen=True)
class Slo:
    """A latency target: the ``percentile`` of all requests within ``limit_ms``."""

    percentile: float
    limit_ms: float

    @classmethod
    def parse(cls, text: str) -> Slo:
        """``p99=20ms`` -> Slo(99, 20); ValueError naming the expected form otherwise."""
        match = SLO_PATTERN.match(text.strip())
        if not match or not 0 < float(match.group(1)) < 100 or float(match.group(2)) <= 0:
            raise ValueError(f"SLO {text!r} is not of the form p99=20ms")
        return cls(float(match.group(1)), float(match.group(2)))

    def __str__(self) -> str:
        return f"p{self.percentile:g} <= {self.limit_ms:g} ms"

    def latency_ms(self, result: OpenLoopResult) -> float:
        """The SLO's percentile over every request, failures counting as infinitely slow."""
        values = [s.latency * 1000 if s.status == 200 else math.inf for s in result.samples]
        # "higher": an actual sample, so an infinite one stays infinite (no inf - inf = NaN).
        return (
            float(np.percentile(values, self.percentile, method="higher")) if values else math.inf
        )

    def met(self, result: OpenLoopResult) -> bool:
        """Whether the run kept the target."""
        return self.latency_ms(result) <= self.limit_ms


@dataclass(frozen=True)
class RatePoint:
    """One open-loop run of one model at one rate."""

    model: str
    rate: float
    requests: int
    ok: int
    goodput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    slo_ms: float  # the SLO's percentile, failures as infinity
    met: bool
    lag_p99_ms: float

    @classmethod
    def of(cls, model: str, result: OpenLoopResult, slo: Slo) -> RatePoint:
        """Summarize a run."""
        return cls(
            model=model,
            rate=result.rate,
            requests=len(result.samples),
            ok=result.statuses()[200],
            goodput_rps=round(result.per_second(200), 1),
            p50_ms=round(result.latency_ms(200, 50), 3),
            p90_ms=round(result.latency_ms(200, 90), 3),
            p99_ms=round(result.latency_ms(200, 99), 3),
            p999_ms=round(result.latency_ms(200, 99.9), 3),
            slo_ms=round(slo.latency_ms(result), 3),
            met=slo.met(result),
            lag_p99_ms=round(result.lag_ms(99), 3),
        )


def find_max_rate(
    measure: Callable[[float], RatePoint], rates: Sequence[float], bisections: int = 4
) -> tuple[float, list[RatePoint]]:
    """The highest rate whose run meets the SLO, and every run made to find it.

    The given rates are tried in increasing order until one fails; then the gap between the
    last that met the SLO (0 if none) and the first that failed is halved ``bisections``
    times. If every given rate meets it, the answer is the highest (a lower bound).
    """
    runs: list[RatePoint] = []
    passed, failed = 0.0, math.inf
    for rate in sorted(rates):
        point = measure(rate)
        runs.append(point)
        if not point.met:
            failed = rate
            break
        passed = rate
    if math.isinf(failed):
        return passed, runs
    for _ in range(bisections):
        middle = round((passed + failed) / 2, 1)
        if middle in (passed, failed):
            break
        point = measure(middle)
        runs.append(point)
        passed, failed = (middle, failed) if point.met else (passed, middle)
    return passed, runs


def bodies(mnist: str | None, model: str) -> list[bytes]:
    """JSON bodies of real MNIST test digits for ``model`` (the same digits for every model)."""
    from training.data import load_mnist

    data = load_mnist(mnist or None)
    picks = np.random.default_rng(0).choice(len(data.x_test), size=DIGITS, replace=False)
    return [encode("native", "json", model, data.x_test[i]).body for i in picks]


def run_sweep(
    url: str,
    models: Sequence[str],
    rates: Sequence[float],
    seconds: float,
    slo: Slo,
    out_dir: Path,
    mnist: str | None = None,
    on_point: Callable[[RatePoint], None] | None = None,
) -> dict[str, object]:
    """Every model at every rate, then its SLO search; writes openloop.json and openloop.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    points: list[RatePoint] = []
    best: dict[str, float] = {}
    for model in models:
        payloads = bodies(mnist, model)

        def measure(rate: float, model: str = model, payloads: list[bytes] = payloads) -> RatePoint:
            result = asyncio.run(
                run_open_loop(f"{url}/predict/{model}", payloads, rate, seconds, poisson=True)
            )
            point = RatePoint.of(model, result, slo)
            if on_point is not None:
                on_point(point)
            return point

        best[model], runs = find_max_rate(measure, rates)
        points += runs
    record: dict[str, object] = {
        "slo": str(slo),
        "seconds_per_run": seconds,
        "rates": list(rates),
        "max_rate": best,
        "points": [asdict(p) for p in points],
    }
    (out_dir / "openloop.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "openloop.md").write_text(markdown(record, models, slo))
    return record


def markdown(record: dict[str, object], models: Sequence[str], slo: Slo) -> str:
    """The open-loop report: the highest rate under the SLO per model, then every run."""
    best: dict[str, float] = record["max_rate"]  # type: ignore[assignment]
    base = models[0]
    lines = [
        f"# Open-loop load: the highest Poisson arrival rate meeting {slo}",
        "",
        "Latency is measured from each request's scheduled send time (no coordinated omission); "
        "a failed request counts as infinitely slow.",
        "",
        "| model | max rate under SLO (req/s) | vs " + base + " |",
        "|---|---|---|",
    ]
    for model in models:
        ratio = best[model] / best[base] if best[base] else math.nan
        lines.append(f"| {model} | {best[model]:,.0f} | {ratio:.2f}x |")
    lines += [
        "",
        "| model | rate | answered 200 | goodput/s | p50 ms | p90 ms | p99 ms | p99.9 ms "
        f"| SLO p{slo.percentile:g} ms | met | generator lag p99 ms |",
        "|---" * 11 + "|",
    ]
    for p in record["points"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {p['model']} | {p['rate']:,.1f} | {p['ok']}/{p['requests']} "
            f"| {p['goodput_rps']:,.1f} | {p['p50_ms']:.2f} | {p['p90_ms']:.2f} "
            f"| {p['p99_ms']:.2f} | {p['p999_ms']:.2f} | {p['slo_ms']:.2f} "
            f"| {'yes' if p['met'] else 'no'} | {p['lag_p99_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"
