"""Benchmark: the memory each engine design holds, against one process serving the same models.

Starts ``mnist-serve serve`` once per design (one process, then the hybrid, executor and
replicas engines with two workers, or ``--workers``), each serving the same variants on the
same runtimes (SavedModel and ONNX by default), waits until it is ready and every worker
reports the models it runs itself (the hybrid's copies warm), then sums the resident memory of
the whole process tree (supervisor, front ends, executor). Prints each design's RSS and its
ratio to one process, measured in this run. Issue 21's target: the default within 1.5x.

    python scripts/bench_memory.py --models models
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from bench_service import REPO
from overload_load import rss_mb

from loadtests.procs import free_port, readyz, serve_command, wait_for_port
from service.copies import HEAVY

DESIGNS = {  # name: serve flags
    "single": ["--workers", "1"],
    "hybrid (default)": ["--engine", "hybrid"],
    "executor": ["--engine", "executor"],
    "replicas": ["--engine", "replicas"],
}
SETTLE_S = 2.0  # after every copy is warm: let the allocators settle before reading RSS


def in_process(engine: str, ready: list[str]) -> set[str]:
    """The models (variant@runtime) a worker of ``engine`` runs itself once settled: all of
    them in one process or a replica, none in the executor's front ends, and the hybrid's
    copies of the light ones (service.copies; this benchmark runs on the CPU)."""
    if engine in ("single", "replicas"):
        return set(ready)
    if engine == "hybrid":
        return {name for name in ready if name.rsplit("@", 1)[1] not in HEAVY}
    return set()


def settled(url: str, workers: int, timeout_s: float = 180) -> dict[int, list[str]]:
    """Wait for /readyz, then for every worker to report in process what its design runs
    there (a hybrid front end warms its copies after the server is ready, one by one)."""
    deadline = time.monotonic() + timeout_s
    while (ready := readyz(url)) is None or ready.status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} never became ready")
        time.sleep(0.2)
    seen: dict[int, list[str]] = {}
    while True:
        with httpx.Client() as client:  # a new connection: any worker may answer
            info = client.get(f"{url}/engine", timeout=5).json()
        expected = in_process(info["engine"], ready.json()["models"])
        seen[info["process"]] = info["in_process"]
        running = [{name.rsplit(":", 1)[0] for name in v} for v in seen.values()]
        if len(seen) == workers and all(names == expected for names in running):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: the workers never all ran {sorted(expected)}: {seen}")
        time.sleep(0.1)
    time.sleep(SETTLE_S)
    return seen


def measure(models: Path, flags: list[str], runtimes: str, workers: int) -> tuple[float, list[str]]:
    """One design's RSS in MB, and the models each of its workers runs itself."""
    port = free_port()
    command = serve_command(
        models.resolve(), port, "--runtimes", runtimes, "--log-level", "warning"
    )
    if "--workers" not in flags:
        flags = [*flags, "--workers", str(workers)]
    process = subprocess.Popen(
        [*command, *flags], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process)
        count = 1 if flags[flags.index("--workers") + 1] == "1" else workers
        seen = settled(f"http://127.0.0.1:{port}", count)
        return rss_mb(process.pid), next(iter(seen.values()))
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    """Measure every design, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--runtimes", default="savedmodel,onnx", help="runtimes served")
    parser.add_argument("--workers", type=int, default=2, help="workers of the multi designs")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    results: dict[str, float] = {}
    for name, flags in DESIGNS.items():
        print(f"{name}: starting", file=sys.stderr, flush=True)
        rss, here = measure(args.models, flags, args.runtimes, args.workers)
        results[name] = rss
        print(f"{name}: {rss:,.0f} MB; a worker runs itself: {', '.join(here) or 'nothing'}")
    base = results["single"]
    print(f"\n| design ({args.runtimes}) | RSS, all processes | vs one process |")
    print("|---|---|---|")
    for name, rss in results.items():
        print(f"| {name} | {rss:,.0f} MB | {rss / base:.2f}x |")
    if args.out:
        args.out.write_text(json.dumps({"runtimes": args.runtimes, "rss_mb": results}, indent=1))


if __name__ == "__main__":
    main()
