"""Where a front end's CPU goes per request, at c=32: py-spy samples sorted into the parts of
the request path, and the CPU per request against the HTTP floor's.

Starts the HTTP floor (scripts/baselines.py) and our service (``--workers 1`` by default; any
``serve`` flags after ``--``), loads each with wrk at ``--concurrency`` for ``--duration``
seconds with the same real digit, and reads each process's CPU time from /proc: CPU per request
is the figure the issue's target is set in (ours at most 1.3x the floor's), measured with
nothing sampling either server, in ``--rounds`` of alternating order. In a further run of ours,
py-spy samples the serving process (``--pid-of worker`` picks a front end of a multi-process
server) and every sample's innermost frame is put in one part of the request path:

admission, protocol (our httptools subclass), uvicorn (its protocol and request cycle), routing
(the fast path, Starlette, FastAPI), decode, metrics, batcher hand-off (batcher, executor
client), model (the runtime), rendering (response, JSON, Server-Timing), event loop and other.

Run: ``python scripts/profile_frontend.py --models models`` (needs wrk and py-spy:
``apt-get install wrk``, ``pip install py-spy``; ``--no-sample`` measures the CPU per request
alone, without py-spy).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_peers import order
from bench_service import floor_command, post_script, quiet_server, server, wrk

from loadtests import steal
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


class MeasureError(RuntimeError):
    """A run whose CPU per request means nothing: no answers, or answers that were not 200."""


def per_request_us(cpu_before: float, pid: int, got: dict[str, float], what: str) -> float:
    """The CPU ``pid`` spent since ``cpu_before`` over the requests of the wrk run ``got``, in
    µs; raises :class:`MeasureError` if that run (``what``) had errors or no answer at all."""
    if got["errors"] or got["socket_errors"] or not got["requests"]:
        raise MeasureError(
            f"{what}: {got['requests']:.0f} answered, {got['errors']:.0f} not 2xx, "
            f"{got['socket_errors']:.0f} socket errors; no CPU per request from that"
        )
    return (cpu_seconds(pid) - cpu_before) / got["requests"] * 1e6


@dataclass
class Target:
    """A server under test: where to send the load, and the process whose CPU is counted."""

    url: str
    pid: int


def cpu_per_request(
    target: Target, concurrency: int, seconds: int, script: Path, what: str
) -> tuple[float, float | None]:
    """One wrk run against ``target``, nothing sampling it: its CPU per request in µs, and
    the share of the machine's CPU the hypervisor took meanwhile (``loadtests.steal``)."""
    before, ticks = cpu_seconds(target.pid), steal.read()
    got = wrk(target.url, concurrency, seconds, script)
    return per_request_us(before, target.pid, got, what), steal.share(ticks, steal.read())


@dataclass
class Rounds:
    """CPU per request (µs) of the floor and ours, one dict a round, and each run's steal."""

    measured: list[dict[str, float]] = field(default_factory=list)
    stolen: list[float | None] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """Ours over the floor, round by round."""
        return [r["ours"] / r["floor"] for r in self.measured]


def measure_rounds(
    targets: dict[str, Target], rounds: int, concurrency: int, seconds: int, script: Path
) -> Rounds:
    """The CPU per request with nothing sampling either server (py-spy's own CPU on these
    cores would slow ours alone), floor and ours in alternating order, round by round."""
    found = Rounds()
    for i in range(1, rounds + 1):
        measured: dict[str, float] = {}
        flagged = ""  # the runs of this round the hypervisor took over steal.NOISY in
        for name in order(i, ("floor", "ours")):
            what = f"{name} in round {i}"
            measured[name], share = cpu_per_request(
                targets[name], concurrency, seconds, script, what
            )
            found.stolen.append(share)
            if steal.noisy(share):
                flagged += f" ({name}{steal.note(share)})"
        found.measured.append(measured)
        print(
            f"round {i}: floor {measured['floor']:.1f} µs, ours {measured['ours']:.1f} µs "
            f"CPU per request: {found.ratios()[-1]:.2f}x{flagged}",
            file=sys.stderr,
        )
    return found


def print_rounds(found: Rounds) -> None:
    """Each round's CPU per request and ratio, their median, and a warning if steal spoiled
    any run."""
    print("| round | floor µs CPU per request | ours | ours / floor (target <= 1.3x) |")
    print("|---|---|---|---|")
    for i, (measured, ratio) in enumerate(zip(found.measured, found.ratios(), strict=True), 1):
        print(f"| {i} | {measured['floor']:.1f} | {measured['ours']:.1f} | {ratio:.2f}x |")
    print(f"\nMedian over the rounds: {statistics.median(found.ratios()):.2f}x.")
    if said := steal.warning(found.stolen, "runs"):
        print(f"Warning: {said}.")


def sampled_run(
    target: Target, concurrency: int, seconds: int, script: Path, out: Path
) -> tuple[collections.Counter[str], float, float]:
    """A run of ours sampled by py-spy: the samples by part, that run's own CPU per request
    (µs) and its rate (req/s)."""
    before = cpu_seconds(target.pid)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        load = pool.submit(wrk, target.url, concurrency, seconds, script)
        time.sleep(1)  # sample the middle of the run
        counts = profile(target.pid, seconds - 2, out)
        got = load.result()
    return counts, per_request_us(before, target.pid, got, "ours, sampled"), got["rps"]


def main() -> None:
    """Floor and ours under the same load: CPU per request, and ours' profile by part."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--variant", default="depthwise")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="CPU-per-request rounds, floor and ours in alternating order (the ratio per round)",
    )
    parser.add_argument(
        "--no-sample",
        action="store_true",
        help="only the CPU per request: no py-spy run (nor py-spy needed)",
    )
    parser.add_argument(
        "--pid-of",
        choices=("server", "worker"),
        default="server",
        help="profile the server process, or a worker of a multi-process server",
    )
    parser.add_argument("serve_args", nargs="*", help="extra `serve` flags (after --)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.duration < (1 if args.no_sample else 3):
        parser.error("--duration must be at least 3 s (1 s with --no-sample)")
    needed = {"wrk": "apt-get install wrk"} | (
        {} if args.no_sample else {"py-spy": "pip install py-spy"}
    )
    for tool, hint in needed.items():
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
    cpu = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    machine = cpu[0] if cpu else platform.processor()
    with contextlib.ExitStack() as stack:
        targets = {}
        for name in ("floor", "ours"):
            base = stack.enter_context(server(commands[name], ports[name]))
            wrk(base + paths[name], 8, 2, script)  # warm up
            pid = serving_pid(base, ports[name], args.pid_of if name == "ours" else "server")
            targets[name] = Target(base + paths[name], pid)
        try:
            found = measure_rounds(targets, args.rounds, args.concurrency, args.duration, script)
        except (MeasureError, OSError) as err:  # OSError: the process gone from /proc
            sys.exit(f"profile: {err}")
        print(
            f"Machine: {machine}, {os.cpu_count()} cores; wrk c={args.concurrency}, "
            f"{args.duration} s a run; ours: serve {' '.join(serve_args)}, "
            f"{args.variant}@{args.runtime}; {args.rounds} rounds, alternating order.\n"
        )
        print_rounds(found)
        if args.no_sample:
            return
        ours = statistics.median(r["ours"] for r in found.measured)
        try:
            sampled = sampled_run(
                targets["ours"], args.concurrency, args.duration, script, work / "ours.txt"
            )
        except (MeasureError, OSError, subprocess.CalledProcessError) as err:
            sys.exit(f"profile: the sampled run failed ({err}); --no-sample measures without it")
        print_parts(ours, *sampled)


def print_parts(
    ours: float, counts: collections.Counter[str], sampled_us: float, sampled_rps: float
) -> None:
    """Where ours' CPU goes: each part's share of the samples, and of ``ours`` µs."""
    print(
        f"\nWhere ours goes (py-spy, a separate run; µs from the rounds' median, {ours:.1f}; "
        f"while sampled it spent {sampled_us:.1f} µs a request at {sampled_rps:,.0f} req/s, "
        "py-spy's own CPU sharing the cores):\n"
    )
    total = sum(counts.values()) or 1
    print("| part of the request path | share of our samples | µs per request |")
    print("|---|---|---|")
    for part, n in counts.most_common():
        print(f"| {part} | {100 * n / total:.1f} % | {ours * n / total:.1f} |")


if __name__ == "__main__":
    main()
