"""Benchmark: how long a server takes to become ready, and its memory, with and without a
SavedModel among its runtimes.

TensorFlow is imported only where a SavedModel may be served (``service.device.place``), so a
server of light runtimes alone starts without it. For each design (one process, the default
engine), this starts ``mnist-serve serve --variants V`` with ``--runtimes onnx`` and with
``--runtimes onnx,savedmodel`` in alternating order, ``--rounds`` times each, and times the
start until ``/readyz`` answers 200 (every process ready to serve every model). It then waits
until the default engine's front ends have warmed their own copies of the light models (they
load after the server is ready, ``bench_memory.settled``) and sums the resident memory of the
whole process tree. It prints the medians and their ratio within this run. ``tune`` starts a
server per trial, and the tests start dozens with ``--runtimes onnx``, so this time is paid
again and again.

    python scripts/bench_startup.py --models models      # or: make bench-startup
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_memory import settled
from overload_load import rss_mb

from loadtests.procs import run_server

DESIGNS = {"one process": ("--workers", "1"), "default engine": ()}
DESIGN_NAMES = {"single": "one process", "default": "default engine"}  # --designs
RUNTIMES = ("onnx", "onnx,savedmodel")  # without TensorFlow, with it


def start(models: Path, variant: str, runtimes: str, flags: tuple[str, ...]) -> tuple[float, float]:
    """One start: seconds until ready, and RSS (MB) of every process once settled."""
    log = Path(tempfile.mkdtemp(prefix="bench-startup-")) / "server.log"
    args = ("--variants", variant, "--runtimes", runtimes, "--poll-s", "0", *flags)
    started = time.monotonic()
    with run_server(models, log, *args) as server:
        server.wait_ready()
        ready = time.monotonic() - started
        settled(server.url, 1 if "--workers" in flags else len(os.sched_getaffinity(0)))
        return ready, rss_mb(server.process.pid)


def main() -> None:
    """Start each design both ways in alternating rounds; print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--variant", default="depthwise", help="the variant served")
    parser.add_argument("--rounds", type=int, default=3, help="starts of each, alternating")
    parser.add_argument(
        "--designs",
        default="single,default",
        help="which to start: single (--workers 1), default (the default engine)",
    )
    args = parser.parse_args()
    chosen = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = sorted(set(chosen) - set(DESIGN_NAMES))
    if unknown or not chosen:
        parser.error(f"--designs {args.designs!r}: use {', '.join(DESIGN_NAMES)}")
    rows = []
    for design in (DESIGN_NAMES[d] for d in chosen):
        flags = DESIGNS[design]
        seconds: dict[str, list[float]] = {r: [] for r in RUNTIMES}
        memory: dict[str, list[float]] = {r: [] for r in RUNTIMES}
        for round_ in range(args.rounds):
            for runtimes in RUNTIMES if round_ % 2 == 0 else RUNTIMES[::-1]:
                ready, rss = start(args.models, args.variant, runtimes, flags)
                seconds[runtimes].append(ready)
                memory[runtimes].append(rss)
                print(
                    f"{design}, --runtimes {runtimes}, round {round_ + 1}: ready in "
                    f"{ready:.1f} s, {rss:,.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
        light, heavy = (statistics.median(seconds[r]) for r in RUNTIMES)
        light_mb, heavy_mb = (statistics.median(memory[r]) for r in RUNTIMES)
        rows.append(
            f"| {design} | {light:.1f} s, {light_mb:,.0f} MB | {heavy:.1f} s, {heavy_mb:,.0f} MB "
            f"| {light / heavy:.2f}x | {light_mb / heavy_mb:.2f}x |"
        )
    print(f"\n{args.variant}, medians of {args.rounds} starts each, alternating:\n")
    print(
        "| design | `--runtimes onnx` (no TensorFlow) | `--runtimes onnx,savedmodel` "
        "| time ratio | memory ratio |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
