"""In-process model speed: each variant's SavedModel signature at several batch sizes, and ratios.

    python scripts/bench_models.py --models models [--threads 0|1|2]

Prints, per batch size, the median time per call and images/s of each variant, and the speedup
of every variant over the first (original). No HTTP: this is the ceiling the service works under.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import modelrepo  # noqa: F401  (quiet TensorFlow)
from modelrepo.layout import ModelRepository


def time_calls(fn: object, batch: int, seconds: float) -> float:
    """Median milliseconds per call at ``batch`` images, over about ``seconds`` of calls."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32))
    for _ in range(20):
        fn(image=x)  # type: ignore[operator]
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 20:
        started = time.perf_counter()
        fn(image=x)["probabilities"].numpy()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    """Time every variant at every batch size and print a Markdown table with ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models")
    parser.add_argument("--variants", default="original,depthwise")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant and batch size")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = TF's)")
    args = parser.parse_args()
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    repository = ModelRepository(args.models)
    variants = args.variants.split(",")
    fns = {
        v: tf.saved_model.load(str(repository.get(v).path)).signatures["serving_default"]
        for v in variants
    }
    batches = [int(b) for b in args.batches.split(",")]
    print(f"intra-op threads: {args.threads or 'TensorFlow default'}\n")
    print(
        "| batch | "
        + " | ".join(f"{v} ms/call | {v} images/s" for v in variants)
        + " | "
        + " | ".join(f"{v} speedup" for v in variants[1:])
        + " |"
    )
    print("|---" * (1 + 2 * len(variants) + len(variants) - 1) + "|")
    for batch in batches:
        ms = {v: time_calls(fns[v], batch, args.seconds) for v in variants}
        cells = [f"{ms[v]:.3f} | {batch / ms[v] * 1000:,.0f}" for v in variants]
        ratios = [f"{ms[variants[0]] / ms[v]:.2f}x" for v in variants[1:]]
        print(f"| {batch} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
