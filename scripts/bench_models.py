"""Model alone, in-process: every runtime x variant x batch size, with ratios from one run.

    python scripts/bench_models.py --models models [--threads 1] [--seconds 2]

Loads each variant's artifacts through the same runtime classes the service uses
(modelrepo.runtimes), then times them in rounds (every runtime and variant once per round, in
turn) so that drift on the machine hits them all alike. Prints the median ms per call and, per
runtime, the speedup of each variant over the first; then each runtime against the SavedModel.
No HTTP: this is the ceiling the service works under.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np

import modelrepo  # noqa: F401  (quiet TensorFlow)
from modelrepo.contract import INPUT_SHAPE
from modelrepo.layout import RUNTIME_NAMES, ModelRepository
from modelrepo.runtimes import LoadOptions, Runtime, load_runtime


def time_calls(runtime: Runtime, x: np.ndarray, seconds: float) -> list[float]:
    """Milliseconds per call over about ``seconds`` of back-to-back calls (at least 10)."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 10:
        started = time.perf_counter()
        runtime.predict(x)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    """Time every runtime x variant x batch size; print Markdown tables with ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--variants", default="original,depthwise")
    parser.add_argument("--runtimes", default=",".join(RUNTIME_NAMES))
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--seconds", type=float, default=2.0, help="per cell, over all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="per inference (0 = default)")
    args = parser.parse_args()
    if args.threads:  # the service's default; must precede TensorFlow's first op
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    repository = ModelRepository(args.models)
    variants, runtimes = args.variants.split(","), args.runtimes.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    loaded = {
        (v, r): load_runtime(r, repository.get(v).artifact(r), LoadOptions(threads=args.threads))
        for v in variants
        for r in runtimes
    }
    rng = np.random.default_rng(0)
    ms: dict[tuple[str, str, int], float] = {}
    for batch in batches:
        x = rng.random((batch, *INPUT_SHAPE), dtype=np.float32)
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in loaded}
        for runtime in loaded.values():
            time_calls(runtime, x, 0.1)  # warm
        for _ in range(args.rounds):
            for key, runtime in loaded.items():
                samples[key] += time_calls(runtime, x, args.seconds / args.rounds)
        for (v, r), values in samples.items():
            ms[(v, r, batch)] = statistics.median(values)

    cpu = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    print(
        f"Machine: {cpu[0] if cpu else platform.processor()}, {os.cpu_count()} cores, "
        f"{platform.platform()}; {args.threads or 'default'} thread(s) per inference; median "
        f"ms per call over {args.rounds} interleaved rounds.\n"
    )
    base = variants[0]
    print(
        "| runtime | batch | "
        + " | ".join(f"{v} ms" for v in variants)
        + " | "
        + " | ".join(f"{v} speedup" for v in variants[1:])
        + " |"
    )
    print("|---" * (2 + 2 * len(variants) - 1) + "|")
    for r in runtimes:
        for b in batches:
            cells = [f"{ms[(v, r, b)]:.3f}" for v in variants]
            ratios = [f"{ms[(base, r, b)] / ms[(v, r, b)]:.2f}x" for v in variants[1:]]
            print(f"| {r} | {b} | " + " | ".join(cells + ratios) + " |")
    print(
        "\n| variant | batch | " + " | ".join(f"{r} vs {runtimes[0]}" for r in runtimes[1:]) + " |"
    )
    print("|---" * (2 + len(runtimes) - 1) + "|")
    for v in variants:
        for b in batches:
            ratios = [f"{ms[(v, runtimes[0], b)] / ms[(v, r, b)]:.2f}x" for r in runtimes[1:]]
            print(f"| {v} | {b} | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
