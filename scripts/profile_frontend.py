"""Where a front end's CPU goes per request, at c=32: py-spy samples sorted into the parts of
the request path, and the CPU per request against the HTTP floor's.

Starts the HTTP floor (scripts/baselines.py) and our service (``--workers 1`` by default; any
``serve`` flags after ``--``), loads each with wrk at ``--concurrency`` for ``--duration``
seconds with the same real digit, and reads each process's CPU time from /proc: CPU per request
is the figure the issue's target is set in (ours at most 1.3x the floor's). During our run,
py-spy samples the serving process (``--pid-of worker`` picks a front end of a multi-process
server) and every sample's innermost frame is put in one part of the request path:

admission, protocol (our httptools subclass), uvicorn (its protocol and request cycle), routing
(the fast path, Starlette, FastAPI), decode, metrics, batcher hand-off (batcher, executor
client), model (the runtime), rendering (response, JSON, Server-Timing), event loop and other.

Run: ``python scripts/profile_frontend.py --models models`` (needs wrk and py-spy:
``apt-get install wrk``, ``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_service import floor_command, post_script, quiet_server, server, wrk

from loadtests.procs import free_port
from training.data import load_mnist

# Innermost frame first: the first part whose pattern a frame's "function (file)" matches.
PARTS = (
    ("model", r"onnxruntime|modelrepo/runtimes|tensorflow|openvino|litert"),
    ("admission", r"service/admission|service/shared"),
    ("protocol (ours)", r"service/(protocol|holds|linger)"),
    ("decode", r"service/decode|orjson.*loads|numpy/.*(fromnumeric|_methods)|validate_pixels"),
    ("metrics", r"prometheus_client|service/metrics|Inference\.__exit__"),
    ("batcher hand-off", r"service/batcher|service/remote|service/channel|concurrent/futures"),
    ("rendering", r"render \(.*service/|starlette/responses|orjson.*dumps|error_response"),
    ("routing", r"service/(fastpath|adapter|inference|registry)|starlette/|fastapi/"),
    ("uvicorn", r"uvicorn/|httptools"),
    ("event loop", r"asyncio/|uvloop|selectors"),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serving_pid(base: str, port: int, which: str) -> int:
    """The process that serves on ``port``: the server itself, or its first worker."""
    if which == "worker":
        return int(httpx.get(f"{base}/engine").json()["pids"][0])
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    pids = [int(p) for p in re.findall(r"pid=(\d+)", out.stdout)]
    if not pids:
        raise RuntimeError(f"nothing listens on {port}")
    return min(pids)


def part_of(frames: list[str]) -> str:
    """The part of the request path a sample's stack (outermost first) is in."""
    for frame in reversed(frames):
        for name, pattern in PARTS:
            if re.search(pattern, frame):
                return name
    return "other"


def profile(pid: int, seconds: float, out: Path) -> collections.Counter[str]:
    """py-spy samples of ``pid`` (all threads, idle excluded), counted by part."""
    subprocess.run(
        [
            "py-spy",
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
        ],
        check=True,
        capture_output=True,
    )
    counts: collections.Counter[str] = collections.Counter()
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[part_of(stack.split(";"))] += int(n)
    return counts


def main() -> None:
    """Floor and ours under the same load: CPU per request, and ours' profile by part."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--variant", default="depthwise")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--pid-of",
        choices=("server", "worker"),
        default="server",
        help="profile the server process, or a worker of a multi-process server",
    )
    parser.add_argument("serve_args", nargs="*", help="extra `serve` flags (after --)")
    args = parser.parse_args()
    for tool, hint in (("wrk", "apt-get install wrk"), ("py-spy", "pip install py-spy")):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed: {hint}")
    work = Path(tempfile.mkdtemp(prefix="profile-"))
    script = post_script(work, load_mnist().x_test[0] / 255.0)
    serve_args = args.serve_args or ["--workers", "1"]
    ports = {"floor": free_port(), "ours": free_port()}
    commands = {
        "floor": floor_command(args.models, args.variant, ports["floor"]),
        "ours": quiet_server(
            args.models, args.variant, ports["ours"], "--runtimes", args.runtime, *serve_args
        ),
    }
    paths = {"floor": f"/predict/{args.variant}", "ours": f"/predict/{args.variant}@{args.runtime}"}
    per_request: dict[str, float] = {}
    counts: collections.Counter[str] = collections.Counter()
    for name in ("floor", "ours"):
        with server(commands[name], ports[name]) as base:
            url = base + paths[name]
            wrk(url, 8, 2, script)  # warm up
            pid = serving_pid(base, ports[name], args.pid_of if name == "ours" else "server")
            before = cpu_seconds(pid)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                load = pool.submit(wrk, url, args.concurrency, args.duration, script)
                if name == "ours":  # sample the middle of the run
                    time.sleep(1)
                    counts = profile(pid, args.duration - 2, work / "ours.txt")
                got = load.result()
            requests = got["rps"] * args.duration
            per_request[name] = (cpu_seconds(pid) - before) / requests * 1e6
            print(
                f"{name}: {got['rps']:,.0f} req/s, p50 {got['p50']:.3f} ms, "
                f"{per_request[name]:.1f} µs CPU per request",
                file=sys.stderr,
            )
    cpu = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    print(
        f"Machine: {cpu[0] if cpu else platform.processor()}, {os.cpu_count()} cores; wrk "
        f"c={args.concurrency}, {args.duration} s; ours: serve {' '.join(serve_args)}, "
        f"{args.variant}@{args.runtime}.\n"
    )
    ratio = per_request["ours"] / per_request["floor"]
    print(
        f"CPU per request: ours {per_request['ours']:.1f} µs, floor "
        f"{per_request['floor']:.1f} µs: {ratio:.2f}x (target <= 1.3x)\n"
    )
    total = sum(counts.values()) or 1
    print("| part of the request path | share of our samples | µs per request |")
    print("|---|---|---|")
    for part, n in counts.most_common():
        print(f"| {part} | {100 * n / total:.1f} % | {per_request['ours'] * n / total:.1f} |")


if __name__ == "__main__":
    main()
