"""Overload benchmark: goodput, shed latency and accepted latency at 1x, 2x and 4x capacity.

Two servers run at once on the same models: ours with its defaults (load shedding on) and the
same server with shedding off (``--max-in-flight``, ``--max-queue-wait-ms`` and ``--max-queue``
so large they never trigger: the old behaviour). For each: c=1 p50 and capacity (wrk, closed
loop, c=1 and c=32), then open-loop load (loadtests.openloop: requests leave at scheduled times
whatever the answers, latency from the scheduled time) at 1x, 2x and 4x the first server's
capacity (the same offered rates for every server, so they compare), with
/healthz and /metrics probed every 100 ms throughout, and the server's RSS sampled (idle,
peak, and 3 s after). The load generator shares the machine's cores with the server, as it
would in CI; its own lateness is printed so that a saturated generator is visible.

Run: ``make bench-overload`` or ``python scripts/bench_overload.py --models models``. Needs
``wrk`` (``apt-get install wrk``) and trained models (``make demo``). About 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from bench_service import wrk_command

from loadtests.openloop import OpenLoopResult, run_open_loop
from loadtests.procs import run_server
from modelrepo.contract import INPUT_NAME, SIDE
from training.data import load_mnist

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
NO_SHEDDING = (
    "--max-in-flight",
    "1000000",
    "--max-queue-wait-ms",
    "1000000",
    "--max-queue",
    "1000000",
)


def wrk(url: str, connections: int, seconds: int, script: Path) -> tuple[float, float]:
    """Closed-loop wrk run: (requests/s with status 200, p50 ms)."""
    out = subprocess.run(
        wrk_command(url, connections, seconds, script),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    good = total - (float(errors.group(1)) if errors else 0.0)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    return good / seconds, float(p50.group(1)) * UNITS[p50.group(2)]  # type: ignore[union-attr]


def rss_mb(pid: int) -> float:
    """Resident memory of a server, MB: the process and its children (workers, executor)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in (process, *process.children(recursive=True))) / 2**20


class PeakRss(threading.Thread):
    """Samples a process' RSS every 50 ms in the background; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        """Sample until told to stop."""
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)


def main() -> None:
    """Measure each server configuration at each load; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--model", default="depthwise@litert", help="variant@runtime to load")
    parser.add_argument("--seconds", type=float, default=8.0, help="open-loop run per rate")
    parser.add_argument("--multiples", default="1,2,4", help="rates, in multiples of capacity")
    parser.add_argument(
        "--storm", type=int, default=400, help="connections of the retry-storm run (wrk)"
    )
    parser.add_argument("--data", type=Path, default=os.environ.get("MNIST_DATA"))
    parser.add_argument(
        "--in-flight", default="", help="also compare these --max-in-flight values (e.g. 16,32)"
    )
    args = parser.parse_args()
    variant, _, runtime = args.model.partition("@")
    digit = load_mnist(args.data).x_test[0].reshape(SIDE, SIDE).astype(np.float32)
    digit = digit / 255.0 if digit.max() > 1 else digit
    body = json.dumps({INPUT_NAME: np.round(digit, 4).tolist()}).encode()
    work = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    (work / "body.json").write_bytes(body)
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{work / "body.json"}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}; model {args.model}, JSON body {len(body):,} B")
    common: tuple[str, ...] = (
        "--variants",
        variant,
        "--runtimes",
        runtime,
        "--log-level",
        "warning",
    )
    configs: dict[str, tuple[str, ...]] = {"shedding on (defaults)": common}
    for limit in filter(None, args.in_flight.split(",")):
        configs[f"shedding on, max-in-flight {limit}"] = (*common, "--max-in-flight", limit)
    configs["shedding off"] = (*common, *NO_SHEDDING)
    multiples = [float(m) for m in args.multiples.split(",")]
    rows: list[str] = []
    storms: list[str] = []
    reference = 0.0  # the first server's capacity: every server gets the same offered rates
    for label, flags in configs.items():
        with run_server(args.models, work / f"{len(rows)}.log", *flags) as server:
            server.wait_ready()
            url = f"{server.url}/predict/{args.model}"
            wrk(url, 4, 2, script)  # warm up
            _, c1_p50 = wrk(url, 1, 5, script)
            capacity, _ = wrk(url, 32, 5, script)
            reference = reference or capacity
            # A retry storm: wrk's connections resend at once after every answer, 503s
            # included, ignoring Retry-After; goodput is what the 200s keep of capacity.
            storm, _ = wrk(url, args.storm, 5, script)
            storms.append(
                f"| {label} | {args.storm} | {storm:,.0f} | {storm / capacity:.0%} of "
                f"{capacity:,.0f} |"
            )
            idle = rss_mb(server.process.pid)
            print(
                f"\n{label}: c=1 p50 {c1_p50:.2f} ms, capacity {capacity:,.0f} req/s (c=32), "
                f"idle RSS {idle:,.0f} MB"
            )
            for multiple in multiples:
                peak = PeakRss(server.process.pid)
                peak.start()
                result = asyncio.run(
                    run_open_loop(
                        url,
                        body,
                        reference * multiple,
                        args.seconds,
                        probe_paths=("/healthz", "/metrics"),
                    )
                )
                peak.running = False
                time.sleep(3)
                after = rss_mb(server.process.pid)
                rows.append(report(label, multiple, reference, c1_p50, result, peak.peak, after))
    print(
        "\n| server | load | offered/s | goodput/s (of capacity) | 503/s | failed/s "
        "| 503 p50 / p99 ms | 200 p50 / p99 ms (p99 / c=1 p50) | /healthz, /metrics max ms "
        "| RSS peak / after MB | generator lag p99 ms |"
    )
    print("|---" * 11 + "|")
    for row in rows:
        print(row)
    print("\n| server | retry-storm connections | goodput/s | of capacity (c=32) |")
    print("|---" * 4 + "|")
    for row in storms:
        print(row)


def report(
    label: str,
    multiple: float,
    capacity: float,
    c1_p50: float,
    result: OpenLoopResult,
    peak: float,
    after: float,
) -> str:
    """One table row, and a line as the run goes."""
    good = result.per_second(200)
    probes = ", ".join(f"{max(v) * 1000:.0f}" if v else "-" for v in result.probes.values())
    row = (
        f"| {label} | {multiple:g}x | {result.rate:,.0f} | {good:,.0f} ({good / capacity:.0%}) "
        f"| {result.per_second(503):,.0f} | {result.per_second(0):,.0f} "
        f"| {result.latency_ms(503, 50):.1f} / {result.latency_ms(503, 99):.1f} "
        f"| {result.latency_ms(200, 50):.1f} / {result.latency_ms(200, 99):.1f} "
        f"({result.latency_ms(200, 99) / c1_p50:.0f}x) | {probes} "
        f"| {peak:,.0f} / {after:,.0f} | {result.lag_ms(99):.1f} |"
    )
    print(row, flush=True)
    return row


if __name__ == "__main__":
    main()
