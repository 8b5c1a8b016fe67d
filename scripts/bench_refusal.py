"""What one refusal costs the server's core, kernel included, against one served request: how
much goodput can 4x overload keep on that core, whatever answers the 503s?

Issue 21 asks for both, at 4x overload: goodput at least 80 % of capacity, and 503s within
5 ms (p99). Sections N, S, U and W of docs/benchmarks.md reasoned that on one core the two pull
against each other, because every refusal takes cycles from the requests served. This script
measures the two costs that argument rests on: the CPU time of every process pinned to the
server's CPUs (user and system, and the kernel's own threads of those CPUs). That holds the
kernel's work in the server's system calls: reading each request, and writing each answer,
whose loopback delivery to the client runs in the sender's call. The receiving side of each
request's delivery runs in the client's call, on the load's CPU: on a real network card it
would land on the server's core, so these costs are if anything low.

- **a served request**: wrk with 32 connections against the server at its defaults, the core
  busy time over the requests answered;
- **a refusal**: the server made to refuse every POST, then the C open-loop generator sending
  at fixed rates, the core busy time over the 503s answered. One request is held in flight
  (its body never finishes: a thread sends a byte a second), so the in-flight limit of 1 is
  always full. ``ours`` refuses in its HTTP protocol, at the request's headers, with its
  pre-encoded 503 (``--shed-hold resends``: every request is read and answered); ``nginx``
  refuses from C in front of it (``limit_conn 1``, :mod:`loadtests.front`), which costs no
  Python; ``mosec``, the peer (``--servers ...,mosec``, with ``--model V@onnx``), refuses with
  429 from its Rust front end once its queue (``--capacity 1``) is full: its Python worker is
  stopped and a few requests wait in the queue (``mosec_peer.refusing_all``). Its served
  request is its own, at its defaults.

At 4x, with ``r`` the refusal's cost over the served request's, serving a share ``g`` of
capacity leaves ``4 - g`` requests refused per capacity's worth, so the core holds
``g + (4 - g) r <= 1``: **g <= (1 - 4r) / (1 - r)**, with nothing left over for the latency of
the 503s. 80 % needs r <= 1/16 (6.25 %). The script prints r (the cheapest refusal measured)
and that goodput per server. It is an estimate from costs measured apart, not a bound: a
refusal's cost falls as the rate rises (one wake-up of the server serves several), and amid a
real overload it shares the wake-ups of the requests served too. For
nginx, against its own served request (through the proxy) and against ours (as if its C refusal
ran in our process, without the proxy hop).

Needs the split (``--server-cpus 0 --load-cpus 1``: the load's work must not land on the
measured core), wrk, a C compiler and trained models; ``nginx`` needs nginx (``make nginx``),
``mosec`` the peers extra (``pip install -e '.[peers]'``).
Run: ``make bench-refusal`` or ``python scripts/bench_refusal.py --server-cpus 0 --load-cpus 1``
(``--model depthwise@onnx --servers ours,nginx,mosec`` with the peer).
About 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mosec_peer
import numpy as np
import psutil
from bench_service import post_script, wrk

from loadtests import cgen
from loadtests.front import Front, NginxNotFound, nginx_binary, run_front
from loadtests.procs import add_cpu_split, check_cpu_split, run_server
from modelrepo.contract import SIDE
from training.data import load_mnist

SERVERS = ("ours", "nginx", "mosec")
DEFAULT_SERVERS = ("ours", "nginx")  # mosec when asked: it needs the peers extra and ONNX
MOSEC_TIMEOUT_MS = "3600000"  # mosec's held requests must outlive every measurement
# The share of refusals (503, mosec's 429) a refusal run must have, else it measured something else
MIN_REFUSED = 0.99


def busy_s(cpus: Collection[int]) -> float:
    """CPU seconds spent so far by every process pinned to ``cpus`` (the server, its nginx,
    and the kernel's per-CPU threads such as ksoftirqd), user and system time: a system call's
    work, the loopback delivery of what it sends included, is charged to its caller. (Per
    process, the kernel keeps this exact; the whole CPU's counters in /proc/stat are sampled
    at each tick, too coarse here.)"""
    total = 0.0
    for process in psutil.process_iter():
        try:
            if set(process.cpu_affinity()) <= set(cpus):
                times = process.cpu_times()
                total += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


class Stall(threading.Thread):
    """One POST held in flight: its headers sent, its body never finished (a byte a second)."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        self.sock.sendall(head.encode() + b"Content-Length: 1000000\r\n\r\n{")
        self.running = True

    def run(self) -> None:
        """Keep the request alive."""
        while self.running:
            time.sleep(1.0)
            self.sock.sendall(b" ")

    def stop(self) -> None:
        """Let it go."""
        self.running = False
        self.join()
        self.sock.close()


@dataclass(frozen=True)
class Cost:
    """Core seconds over a count of answers of one kind."""

    answers: int
    core_s: float

    @property
    def us(self) -> float:
        """Microseconds of the server's core per answer."""
        return self.core_s / self.answers * 1e6 if self.answers else float("nan")


def served_cost(url: str, script: Path, seconds: int, cpus: Collection[int]) -> Cost:
    """wrk at 32 connections: the core's busy time over the 2xx answers."""
    before = busy_s(cpus)
    result = wrk(url, 32, seconds, script)
    core = busy_s(cpus) - before
    return Cost(int(result["requests"] - result["errors"]), core)


def idle_share(cpus: Collection[int], seconds: float) -> float:
    """The share of the CPUs busy with no load at all (the server's timers, the stall's bytes,
    the rest of the machine): subtracted from every refusal's measurement."""
    before = busy_s(cpus)
    time.sleep(seconds)
    return (busy_s(cpus) - before) / seconds


def refusal_cost(
    url: str,
    body: Path,
    rate: float,
    seconds: float,
    binary: Path,
    cpus: Collection[int],
    idle: float,
    refused_status: int = 503,
) -> tuple[Cost, float]:
    """The C generator at ``rate``: the core's busy time beyond ``idle`` over the refusals
    (``refused_status``: 503, mosec's 429); and the share of the answers that were refusals
    (should be all)."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    path = "/" + url.split("/", 3)[3]
    plan = cgen.Plan(port, rate, seconds, path=path, body=body, max_connections=2048, preopen=256)
    before, started = busy_s(cpus), time.monotonic()
    run = cgen.run(plan, binary)
    core = busy_s(cpus) - before - idle * (time.monotonic() - started)
    refused = run.status_counts.get(refused_status, 0)
    return Cost(refused, core), refused / max(run.completed, 1)


@contextmanager
def server(
    kind: str, mode: str, models: Path, model: str, cpus: set[int], work: Path
) -> Iterator[str]:
    """``kind`` serving ``model``: at its defaults (``mode`` "serve"), or made to refuse every
    POST ("refuse", module doc). Yields the URL to POST to."""
    if kind == "mosec":
        with mosec_server(mode, mosec_peer.onnx_for(models, model), cpus, work) as url:
            yield url
        return
    variant, _, runtime = model.partition("@")
    flags = ["--variants", variant, "--runtimes", runtime, "--workers", "1", "--poll-s", "0"]
    if mode == "refuse":  # the held request must outlive every measurement (30 s by default)
        flags += ["--body-timeout-s", "3600"]
    if mode == "refuse" and kind == "ours":
        flags += ["--max-in-flight", "1", "--shed-hold", "resends"]
    path = f"/predict/{model}"
    with ExitStack() as stack:
        ours = stack.enter_context(run_server(models, work / f"{kind}.log", *flags, cpus=cpus))
        ours.wait_ready()
        base = ours.url
        if kind == "nginx":
            port = int(ours.url.rsplit(":", 1)[1])
            front = Front(limit=1 if mode == "refuse" else 64)
            base = stack.enter_context(run_front(port, front, work / "nginx", cpus=cpus))
        if mode == "refuse":
            stall = Stall(int(base.rsplit(":", 1)[1]), path)
            stall.start()
            stack.callback(stall.stop)
            time.sleep(0.5)
            status = httpx.post(base + path, content=(work / "body.json").read_bytes()).status_code
            if status != 503:
                raise RuntimeError(f"{kind} was to refuse every POST, but answered {status}")
        yield base + path


@contextmanager
def mosec_server(mode: str, onnx: Path, cpus: set[int], work: Path) -> Iterator[str]:
    """The peer serving ``onnx``: at its defaults, or refusing every POST."""
    log = work / f"mosec-{mode}.log"
    if mode == "serve":
        with mosec_peer.run(onnx, log, cpus=cpus) as peer:
            yield peer.url
        return
    with (
        mosec_peer.run(onnx, log, 1, cpus, "--timeout", MOSEC_TIMEOUT_MS) as peer,
        mosec_peer.refusing_all(peer, (work / "body.json").read_bytes()),
    ):
        yield peer.url


def bound(refusal: float, served: float) -> float:
    """The goodput at 4x, a share of capacity (1 / ``served``), that one core holds when a
    refusal costs ``refusal`` and a served request ``served`` (module doc): none once refusing
    4x takes the whole core (a refusal at a quarter of a served request or more)."""
    rho = refusal / served
    return max(0.0, (1 - 4 * rho) / (1 - rho)) if rho < 0.25 else 0.0


def main() -> None:
    """Measure each server's costs; print the table and the bound at 4x."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--model", default="depthwise@litert", help="variant@runtime to load")
    parser.add_argument("--data", type=Path, default=os.environ.get("MNIST_DATA"))
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help="of: ours, nginx (needs nginx: make nginx), mosec (the peer; needs --model V@onnx "
        "and pip install -e '.[peers]')",
    )
    parser.add_argument("--rates", default="1500,6000,12000", help="refusals offered per second")
    parser.add_argument("--seconds", type=int, default=6, help="each measurement's length")
    add_cpu_split(parser)
    args = parser.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or set(servers) - set(SERVERS):
        parser.error(f"--servers: choose from {', '.join(SERVERS)}")
    if "mosec" in servers:
        try:
            mosec_peer.onnx_for(args.models, args.model)  # found now, not after ours ran
        except mosec_peer.PeerSetupError as error:
            parser.error(f"--servers mosec: {error}")
    split = check_cpu_split(parser, args)
    if not split:
        parser.error("give --server-cpus and --load-cpus: the measured core must be the server's")
    if "nginx" in servers:
        try:
            nginx_binary()
        except NginxNotFound as error:
            parser.error(str(error))
    if "mosec" in servers and (missing := mosec_peer.check_installed()):
        parser.error(missing)
    rates = [float(r) for r in args.rates.split(",")]
    os.sched_setaffinity(0, args.load_cpus)  # wrk and the generator inherit it
    binary = cgen.build()
    work = Path(tempfile.mkdtemp(prefix="bench-refusal-"))
    digit = load_mnist(args.data).x_test[0].reshape(SIDE, SIDE).astype(np.float32)
    script = post_script(work, digit / 255.0 if digit.max() > 1 else digit)
    body = work / "body.json"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {split}; model {args.model}")
    cpus = args.server_cpus
    rows = []
    for kind in servers:
        with server(kind, "serve", args.models, args.model, cpus, work) as url:
            wrk(url, 32, 2, script)  # warm
            served = served_cost(url, script, args.seconds, cpus)
        refusals = []
        with server(kind, "refuse", args.models, args.model, cpus, work) as url:
            status = mosec_peer.SHED_STATUS if kind == "mosec" else 503
            refusal_cost(url, body, rates[0], 2, binary, cpus, 0.0, status)  # warm: connections
            idle = idle_share(cpus, args.seconds)
            for rate in rates:
                cost, share = refusal_cost(
                    url, body, rate, args.seconds, binary, cpus, idle, status
                )
                if share < MIN_REFUSED:  # the held request gone: the costs would mix in served
                    raise SystemExit(
                        f"{kind} answered {share:.1%} {status}s at {rate:g}/s: not a refusal run"
                    )
                refusals.append(cost.us)
                print(
                    f"  {kind}: {rate:,.0f}/s offered: {cost.us:.1f} us a refusal, "
                    f"{share:.0%} of the answers {status} (idle: {idle:.1%} of the core)"
                )
        print(
            f"{kind}: a served request {served.us:.0f} us of the core at c=32 "
            f"({served.answers / args.seconds:,.0f} req/s)"
        )
        rows.append((kind, served.us, refusals))
    ours = next((served for kind, served, _ in rows if kind == "ours"), None)
    print(
        f"\n| server | served at c=32, us of core | refusal, us of core at {args.rates}/s "
        "| cheapest refusal / served | goodput at 4x, if these costs held |"
    )
    print("|---|---|---|---|---|")
    for kind, served_us, refusals in rows:
        cheapest = min(refusals)  # the most favourable
        # nginx's or mosec's refusal set against our own served request too: as if it refused
        # in our process, without the proxy hop (nginx) or the dearer request (mosec).
        against = [(served_us, "")] + (
            [(ours, " (ours served)")] if kind != "ours" and ours else []
        )
        for served_by, note in against:
            print(
                f"| {kind}{note} | {served_by:.0f} | "
                + " / ".join(f"{r:.1f}" for r in refusals)
                + f" | {cheapest / served_by:.3f} | {bound(cheapest, served_by):.0%} |"
            )
    print(
        "(80 % at 4x needs a refusal at most 1/16 = 0.0625 of a served request, with nothing "
        "left for the 503s' latency; an estimate: amid a real overload a refusal shares the "
        "server's wake-ups and costs less)"
    )


if __name__ == "__main__":
    main()
