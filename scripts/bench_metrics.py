"""Benchmark: what counting one request costs, prometheus-client's observe() against our tallies.

Every inference request feeds four series (its status, its time, its queue and model time).
``service.metrics`` tallies them in plain numbers and hands them to prometheus-client every
``FLUSH_S``; before, each request called ``Counter.inc`` and three ``Histogram.observe``. This
times both ways per request, in one run, in the two modes the service uses: one process
(prometheus-client's in-memory values) and several (``PROMETHEUS_MULTIPROC_DIR``: values in
memory-mapped files, each write under a lock). The tally's time includes its flushes, one per
``--per-flush`` requests (200: a flush every 20 ms at 10,000 requests a second).

    python scripts/bench_metrics.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import timeit

MODES = ("one process", "multiprocess")


async def measure(requests: int, per_flush: int) -> tuple[float, float]:
    """(observe() µs, tally µs) per request, in this process's prometheus-client mode, on an
    event loop as in the service (the tallies' timer needs one; this flushes before it fires)."""
    from service.metrics import Metrics

    old = Metrics()
    requests_200 = old.requests.labels("depthwise", "onnx", "200")
    seconds = old.request_seconds.labels("depthwise", "onnx")
    queue = old.queue_seconds.labels("depthwise", "onnx")
    model = old.model_seconds.labels("depthwise", "onnx")

    def observe() -> None:
        queue.observe(0.0004)
        model.observe(0.0011)
        requests_200.inc()
        seconds.observe(0.0021)

    new = Metrics()
    series = new.model("depthwise", "onnx")

    def tally() -> None:
        for _ in range(per_flush):
            series.served(0.0004, 0.0011)
            series.answered(200, 0.0021)
        new.flush()

    best_old = min(timeit.repeat(observe, number=requests, repeat=5)) / requests
    best_new = min(timeit.repeat(tally, number=requests // per_flush, repeat=5)) / requests
    return best_old * 1e6, best_new * 1e6


def main() -> None:
    """Run each mode in a fresh interpreter (prometheus-client picks its mode at import)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000, help="requests per timing")
    parser.add_argument("--per-flush", type=int, default=200, help="requests between flushes")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args()
    if args.mode:
        old, new = asyncio.run(measure(args.requests, args.per_flush))
        print(f"{old:.3f} {new:.3f}")
        return
    print("| mode | observe() µs/request | tally µs/request | observe / tally |")
    print("|---|---|---|---|")
    for mode in MODES:
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with tempfile.TemporaryDirectory() as folder:
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = folder
            command = [sys.executable, __file__, "--mode", mode]
            command += ["--requests", str(args.requests), "--per-flush", str(args.per_flush)]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        old, new = (float(x) for x in out.stdout.split())
        print(f"| {mode} | {old:.2f} | {new:.2f} | {old / new:.1f}x |")


if __name__ == "__main__":
    main()
