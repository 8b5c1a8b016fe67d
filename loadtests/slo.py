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
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from loadtests.openloop import OpenLoopResult, run_open_loop
from loadtests.protocols import encode
from loadtests.results import OpenLoopRecord, Percentiles, RatePoint, Slo
from loadtests.runner import machine

DIGITS = 256  # distinct test digits cycled through


def rate_point(model: str, result: OpenLoopResult, slo: Slo) -> RatePoint:
    """Summarize one open-loop run."""
    answered = [sample.latency * 1000 for sample in result.samples if sample.status == 200]
    return RatePoint(
        model=model,
        rate=result.rate,
        requests=len(result.samples),
        ok=result.statuses()[200],
        goodput_rps=round(result.per_second(200), 1),
        latency_ms=Percentiles.of(answered),
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
) -> OpenLoopRecord:
    """Every model at every rate, then its SLO search; writes openloop.json and openloop.md."""
    points: list[RatePoint] = []
    best: dict[str, float] = {}
    started = datetime.now(UTC)
    for model in models:
        payloads = bodies(mnist, model)

        def measure(rate: float, model: str = model, payloads: list[bytes] = payloads) -> RatePoint:
            result = asyncio.run(
                run_open_loop(f"{url}/predict/{model}", payloads, rate, seconds, poisson=True)
            )
            point = rate_point(model, result, slo)
            if on_point is not None:
                on_point(point)
            return point

        best[model], runs = find_max_rate(measure, rates)
        points += runs
    record = OpenLoopRecord(slo, seconds, list(rates), list(models), best, points,
                            started.isoformat(timespec="seconds"), machine())  # fmt: skip
    record.save(out_dir)
    (out_dir / "openloop.md").write_text(markdown(record))
    return record


def summary_table(record: OpenLoopRecord) -> tuple[list[str], list[list[str]]]:
    """Per model: its highest rate under the SLO, the ratio to the first model, and its
    latency and the generator's lag at that rate."""
    base = record.models[0]
    header = ["model", "max rate under SLO (req/s)", f"vs {base}", "p50 ms there",
              "p99 ms there", "generator lag p99 ms"]  # fmt: skip
    rows = []
    for model in record.models:
        point = record.at_max_rate(model)
        rows.append(
            [model, f"{record.max_rate[model]:,.0f}", f"{record.ratio_to(model, base):.2f}x",
             f"{point.latency_ms.p50:.2f}" if point else "-",
             f"{point.latency_ms.p99:.2f}" if point else "-",
             f"{point.lag_p99_ms:.2f}" if point else "-"]
        )  # fmt: skip
    return header, rows


def runs_table(record: OpenLoopRecord) -> tuple[list[str], list[list[str]]]:
    """Every run of the sweep and the search, in the order made."""
    header = ["model", "rate", "answered 200", "goodput/s", *[f"{q} ms" for q in
              Percentiles.labels()], f"SLO p{record.slo.percentile:g} ms", "met",
              "generator lag p99 ms"]  # fmt: skip
    rows = [
        [p.model, f"{p.rate:,.1f}", f"{p.ok}/{p.requests}", f"{p.goodput_rps:,.1f}",
         *[f"{v:.2f}" for v in p.latency_ms.values()], f"{p.slo_ms:.2f}",
         "yes" if p.met else "no", f"{p.lag_p99_ms:.2f}"]
        for p in record.points
    ]  # fmt: skip
    return header, rows


def markdown(record: OpenLoopRecord) -> str:
    """The open-loop report: the highest rate under the SLO per model, then every run."""
    lines = [
        f"# Open-loop load: the highest Poisson arrival rate meeting {record.slo}",
        "",
        "Latency is measured from each request's scheduled send time (no coordinated omission); "
        "a failed request counts as infinitely slow.",
        "",
    ]
    for header, rows in (summary_table(record), runs_table(record)):
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)
