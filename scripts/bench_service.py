"""Benchmark the service against its baselines with wrk on 127.0.0.1, and print ratios.

For each variant and concurrency (1 and 32), each server gets ``--repeats`` wrk runs of
``--duration`` seconds with the same JSON body (a real MNIST test digit); the median run is
reported. Servers: the HTTP floor (JSON parsed, no model), the naive ``model.predict`` server,
a direct signature call per request, and ours (with batching, without, and with one intra-op
thread). Also measured in-process: the model alone at batch 1, for the c=1 latency target.

Run: ``make bench`` or ``python scripts/bench_service.py --models models``. Needs ``wrk``
(``apt-get install wrk``). Takes about 12 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from mnist_serve.procs import free_port, wait_for_port
from modelrepo.layout import ModelRepository
from training.data import load_mnist

REPO = Path(__file__).resolve().parent.parent
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
Command = Callable[[str, int], list[str]]


@contextmanager
def server(command: list[str], port: int) -> Iterator[str]:
    """Start a server command, wait for its port (and /readyz if it has one), stop it after."""
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/readyz", timeout=5).status_code
            if status in (200, 404):  # 404: a baseline without /readyz, ready once listening
                break
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def wrk(url: str, connections: int, seconds: int, script: Path) -> dict[str, float]:
    """One wrk run: requests/s, latency percentiles (ms), non-2xx responses."""
    threads = 1 if connections == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
               "-s", str(script), url]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        result[f"p{pct}"] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def model_only_p50(models: Path, variant: str, calls: int = 2000) -> float:
    """The SavedModel signature alone at batch 1, in-process, median ms."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(ModelRepository(models).get(variant).path)).signatures[
        "serving_default"
    ]
    x = tf.constant(np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32))
    for _ in range(200):
        fn(image=x)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn(image=x)["probabilities"].numpy()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    """Run every server x variant x concurrency and print a markdown table with ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--variants", default="original,depthwise")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--json-out", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    variants = args.variants.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]

    digit = load_mnist().x_test[0] / 255.0
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    body = work / "body.json"
    body.write_text(json.dumps({"image": np.round(digit, 4).tolist()}))
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )

    def baseline(kind: str) -> Command:
        return lambda v, p: [
            sys.executable,
            "scripts/baselines.py",
            "--kind",
            kind,
            "--models",
            str(args.models),
            "--variant",
            v,
            "--port",
            str(p),
        ]

    def ours(*flags: str) -> Command:
        return lambda v, p: [
            sys.executable,
            "-m",
            "mnist_serve.cli",
            "serve",
            "--models",
            str(args.models),
            "--variants",
            v,
            "--port",
            str(p),
            "--log-level",
            "warning",
            *flags,
        ]

    configs = {
        "HTTP floor (no model)": baseline("floor"),
        "naive model.predict": baseline("naive"),
        "direct signature call": baseline("direct"),
        "mnist-serve (defaults: batching, 1 intra-op thread)": ours(),
        "mnist-serve, no batching": ours("--no-batching"),
        "mnist-serve, TensorFlow's default threads": ours("--intra-op-threads", "0"),
    }
    results: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for name, command in configs.items():
        for variant in variants:
            port = free_port()
            with server(command(variant, port), port) as url:
                target = f"{url}/predict/{variant}"
                wrk(target, 4, 2, script)  # warm the server and its connections
                for level in levels:
                    runs = [wrk(target, level, args.duration, script) for _ in range(args.repeats)]
                    median = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
                    results.setdefault(name, {}).setdefault(variant, {})[level] = median
                    line = (f"{name:42} {variant:10} c={level:<3} {median['rps']:8.0f} req/s  "
                            f"p50 {median.get('p50', float('nan')):.3f} ms  "
                            f"p99 {median.get('p99', float('nan')):.3f} ms  "
                            f"errors {median['errors']:.0f}")  # fmt: skip
                    print(line, file=sys.stderr, flush=True)
    model_p50 = {v: model_only_p50(args.models, v) for v in variants}

    cpu = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    print(f"Machine: {cpu[0] if cpu else platform.processor()}, {os.cpu_count()} cores, "
          f"{platform.platform()}; wrk on the same machine; {args.repeats} runs of "
          f"{args.duration} s each, median run shown.\n")  # fmt: skip
    ours_name = "mnist-serve (defaults: batching, 1 intra-op thread)"
    header = "| server | variant | " + " | ".join(
        f"c={c} req/s | c={c} p50 ms | c={c} p99 ms | c={c} vs ours" for c in levels
    )
    print(header + " |")
    print("|" + "---|" * (2 + 4 * len(levels)))
    for name, per_variant in results.items():
        for variant, per_level in per_variant.items():
            cells = []
            for c in levels:
                r = per_level[c]
                ratio = results[ours_name][variant][c]["rps"] / r["rps"]
                cells.append(f"{r['rps']:,.0f} | {r.get('p50', float('nan')):.3f} | "
                             f"{r.get('p99', float('nan')):.3f} | {ratio:.2f}x")  # fmt: skip
            print(f"| {name} | {variant} | " + " | ".join(cells) + " |")
    print()
    floor = results["HTTP floor (no model)"]
    for v in variants:
        limit = floor[v][1]["p50"] + model_p50[v] + 0.2
        got = results[ours_name][v][1]["p50"]
        print(f"- {v}: model alone p50 {model_p50[v]:.3f} ms; c=1 target p50 <= floor "
              f"{floor[v][1]['p50']:.3f} + model {model_p50[v]:.3f} + 0.2 = {limit:.3f} ms; "
              f"ours {got:.3f} ms: {'met' if got <= limit else 'missed'}")  # fmt: skip
        if 32 in levels:
            rps = results[ours_name][v][32]["rps"]
            direct = results["direct signature call"][v][32]["rps"]
            naive = results["naive model.predict"][v][32]["rps"]
            print(f"- {v}: c=32 ours {rps:,.0f} req/s ({rps / direct:.2f}x the direct call, "
                  f"{rps / naive:.0f}x naive)")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"results": results, "model_only_p50_ms": model_p50}, indent=2)
        )


if __name__ == "__main__":
    main()
