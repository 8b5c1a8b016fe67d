"""Benchmark the service on every runtime against the HTTP floor, with wrk on 127.0.0.1.

Servers: the HTTP floor (the same JSON parsed into the same array, no model; see
scripts/baselines.py for it and the naive and direct baselines) and ours, once per runtime and
variant (``--variants V --runtimes R``, defaults otherwise), plus ours with the inline path
off (``--inline-max-model-ms 0``: every request through the batcher's model thread, as before
the inline path existed). Each server gets ``--repeats`` wrk runs of ``--duration`` seconds per
concurrency with the same body (a real MNIST test digit), round-robin over all the servers,
which run at once; the median run is reported, with its ratio to the floor. Also measured
in-process: each runtime's model alone at batch 1, for the c=1 target (p50 <= floor p50 +
model p50 + 0.15 ms).

Run: ``make bench`` or ``python scripts/bench_service.py --models models``. Needs ``wrk``
(``apt-get install wrk``). About 10 minutes with the defaults (11 servers at once, ~7 GB of memory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from loadtests.procs import free_port, readyz, serve_command, wait_for_port
from modelrepo.contract import INPUT_NAME, INPUT_SHAPE
from modelrepo.layout import RUNTIME_NAMES, ModelRepository
from modelrepo.runtimes import LoadOptions, load_runtime, median_call_ms
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
            answer = readyz(url)
            if answer is not None and answer.status_code in (200, 404):
                break  # 404: a baseline without /readyz, ready once listening
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def wrk_command(url: str, connections: int, seconds: int, script: Path) -> list[str]:
    """wrk at ``connections`` for ``seconds`` with ``script``: one thread at c=1, two above."""
    threads = 1 if connections == 1 else 2
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def wrk(url: str, connections: int, seconds: int, script: Path) -> dict[str, float]:
    """One wrk run: requests/s, latency percentiles (ms), non-2xx responses, requests answered
    (``requests``) and socket errors (connect, read, write, timeout: ``socket_errors``)."""
    command = wrk_command(url, connections, seconds, script)
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        result[f"p{pct}"] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    answered = re.search(r"(\d+) requests in", out)
    result["requests"] = float(answered.group(1)) if answered else 0.0
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = float(sum(int(n) for n in socket.groups())) if socket else 0.0
    return result


def post_script(folder: Path, image: np.ndarray) -> Path:
    """A wrk Lua script POSTing ``{"image": image}`` (pixels in 0-1, 4 decimals) as JSON."""
    body = folder / "body.json"
    body.write_text(json.dumps({INPUT_NAME: np.round(image, 4).tolist()}))
    script = folder / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    return script


def floor_command(models: Path, variant: str, port: int) -> list[str]:
    """The HTTP floor (scripts/baselines.py) on ``port``."""
    baselines = Path(__file__).with_name("baselines.py")
    return [
        sys.executable,
        str(baselines),
        "--kind",
        "floor",
        "--models",
        str(models),
        "--variant",
        variant,
        "--port",
        str(port),
    ]


def quiet_server(models: Path, variant: str, port: int, *flags: str) -> list[str]:
    """``mnist-serve serve`` of one variant on ``port``, quiet, with ``flags``."""
    return serve_command(models, port, "--variants", variant, "--log-level", "warning", *flags)


def model_only_p50(models: Path, variant: str, runtime: str, calls: int = 2000) -> float:
    """The model alone at batch 1, in-process, one thread (the service's default), median ms."""
    if runtime == "savedmodel":
        import tensorflow as tf

        with contextlib.suppress(RuntimeError):  # already set by an earlier call
            tf.config.threading.set_intra_op_parallelism_threads(1)
    artifact = ModelRepository(models).get(variant).artifact(runtime)
    model = load_runtime(runtime, artifact, LoadOptions(threads=1))
    x = np.random.default_rng(0).random((1, *INPUT_SHAPE), dtype=np.float32)
    return median_call_ms(model, x, calls, warm=200)


def main() -> None:
    """Run the floor and ours per runtime x variant x concurrency; print tables with ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--variants", default="original,depthwise")
    parser.add_argument("--runtimes", default=",".join(RUNTIME_NAMES))
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,32,64")
    parser.add_argument("--json-out", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    variants, runtimes = args.variants.split(","), args.runtimes.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]

    script = post_script(Path(tempfile.mkdtemp(prefix="bench-")), load_mnist().x_test[0] / 255.0)
    model_p50 = {(v, r): model_only_p50(args.models, v, r) for v in variants for r in runtimes}
    fastest = min(runtimes, key=lambda r: model_p50[(variants[-1], r)])

    def floor(variant: str, port: int) -> list[str]:
        return floor_command(args.models, variant, port)

    def ours(runtime: str, *flags: str) -> Command:
        return lambda v, p: quiet_server(args.models, v, p, "--runtimes", runtime, *flags)

    configs: dict[str, tuple[Command, list[str]]] = {
        "HTTP floor (no model)": (floor, variants[-1:]),  # the same for every variant
        **{f"mnist-serve {r}": (ours(r), variants) for r in runtimes},
        f"mnist-serve {fastest}, inline off": (
            ours(fastest, "--inline-max-model-ms", "0"),
            variants,
        ),
    }
    # Every server runs at once (idle ones cost nothing), and the wrk runs go round-robin over
    # them, repeat by repeat: drift on a shared machine then hits every server alike, so the
    # ratios between them hold even when the absolute figures move.
    results: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    pairs = [(name, variant) for name, (_, served) in configs.items() for variant in served]
    with ExitStack() as stack:
        targets = {}
        for name, variant in pairs:
            port = free_port()
            url = stack.enter_context(server(configs[name][0](variant, port), port))
            targets[(name, variant)] = f"{url}/predict/{variant}"
            wrk(targets[(name, variant)], 4, 2, script)  # warm the server and its connections
        for level in levels:
            runs: dict[tuple[str, str], list[dict[str, float]]] = {pair: [] for pair in pairs}
            for repeat in range(args.repeats):
                order = pairs if repeat % 2 == 0 else pairs[::-1]
                for pair in order:
                    runs[pair].append(wrk(targets[pair], level, args.duration, script))
            for (name, variant), cell_runs in runs.items():
                median = sorted(cell_runs, key=lambda r: r["rps"])[len(cell_runs) // 2]
                results.setdefault(name, {}).setdefault(variant, {})[level] = median
                line = (
                    f"{name:36} {variant:10} c={level:<3} {median['rps']:8.0f} req/s  "
                    f"p50 {median.get('p50', float('nan')):.3f} ms  "
                    f"p99 {median.get('p99', float('nan')):.3f} ms  "
                    f"errors {median['errors']:.0f}"
                )
                print(line, file=sys.stderr, flush=True)
    floor_results = results["HTTP floor (no model)"][variants[-1]]

    cpu = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    print(
        f"Machine: {cpu[0] if cpu else platform.processor()}, {os.cpu_count()} cores, "
        f"{platform.platform()}; wrk on the same machine; {args.repeats} runs of "
        f"{args.duration} s each, round-robin over all servers, median run shown.\n"
    )
    header = "| server | variant | " + " | ".join(
        f"c={c} req/s | c={c} p50 ms | c={c} p99 ms | c={c} vs floor" for c in levels
    )
    print(header + " |")
    print("|" + "---|" * (2 + 4 * len(levels)))
    for name, per_variant in results.items():
        for variant, per_level in per_variant.items():
            cells = []
            for c in levels:
                r = per_level[c]
                ratio = r["rps"] / floor_results[c]["rps"]
                cells.append(
                    f"{r['rps']:,.0f} | {r.get('p50', float('nan')):.3f} | "
                    f"{r.get('p99', float('nan')):.3f} | {ratio:.2f}x"
                )
            label = "-" if name.startswith("HTTP floor") else variant
            print(f"| {name} | {label} | " + " | ".join(cells) + " |")
    print("\nModel alone, batch 1, one thread, median ms:\n")
    print("| variant | " + " | ".join(runtimes) + " |")
    print("|---" * (1 + len(runtimes)) + "|")
    for v in variants:
        print(f"| {v} | " + " | ".join(f"{model_p50[(v, r)]:.3f}" for r in runtimes) + " |")
    print()
    for v in variants:
        for r in runtimes:
            limit = floor_results[1]["p50"] + model_p50[(v, r)] + 0.15
            got = results[f"mnist-serve {r}"][v][1]["p50"]
            print(
                f"- {v}@{r}: c=1 p50 {got:.3f} ms vs floor {floor_results[1]['p50']:.3f} + "
                f"model {model_p50[(v, r)]:.3f} + 0.15 = {limit:.3f} ms: "
                f"{'met' if got <= limit else 'missed'}; c=32 "
                f"{results[f'mnist-serve {r}'][v].get(32, {}).get('rps', float('nan')):,.0f} "
                f"req/s"
            )
    if 32 in levels:
        got = results[f"mnist-serve {fastest}"][variants[-1]][32]["rps"]
        share = got / floor_results[32]["rps"]
        print(
            f"- fastest runtime here: {fastest}; {variants[-1]}@{fastest} at c=32: "
            f"{share:.2f}x the floor's throughput (target >= 0.7x): "
            f"{'met' if share >= 0.7 else 'missed'}"
        )
    inline_off = results[f"mnist-serve {fastest}, inline off"]
    for v in variants:
        on, off = results[f"mnist-serve {fastest}"][v][1], inline_off[v][1]
        print(
            f"- {v}@{fastest} c=1 p50: inline {on['p50']:.3f} ms vs through the model "
            f"thread {off['p50']:.3f} ms ({off['p50'] / on['p50']:.2f}x)"
        )
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "results": results,
                    "model_only_p50_ms": {f"{v}@{r}": p for (v, r), p in model_p50.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
