"""Overload benchmark: goodput, shed latency and accepted latency at 1x, 2x and 4x capacity.

Three servers (and one more per ``--in-flight`` value) run in turn on the same models: ours
with its defaults (load shedding on), the same with ``--shed-hold resends`` (only a client
resending at once is held after a 503), and the same with shedding off (``--max-in-flight``,
``--max-queue-wait-ms`` and ``--max-queue`` so large they never trigger: the old behaviour).
``--servers defaults,nginx`` runs our defaults behind nginx too (:mod:`loadtests.front`: nginx
refuses the POST over ``--front-limit`` in flight itself, so a refusal costs no Python; its
RSS columns are our server's alone). ``--servers ...,mosec`` runs the peer, mosec
(scripts/mosec_server.py: a Rust front end, one Python worker, batches of up to 32 in 1 ms),
on the same ONNX file (``--model V@onnx``), refusing with 429 once ``--mosec-capacity``
requests wait; being another server, it is loaded at multiples of *its own* capacity, and its
goodput is a share of that, as the targets are stated (``--mosec-rates ours``: at exactly our
rates, its goodput then a share of our capacity, for the same load side by side).
For each: c=1 p50 and capacity (wrk, closed loop, c=1 and c=32), then open-loop load at 1x, 2x
and 4x the first server's capacity (the same offered rates for each of ours, so they compare;
mosec's as above),
with /healthz and /metrics probed every 100 ms throughout (one keep-alive connection each, in a
thread), and the server's RSS sampled (idle, peak, and 3 s after). A multi-process server's
/metrics answers no sooner than ``service.metrics.SETTLE_S`` (100 ms): it waits for every
process's tallies.

The load side (the open-loop run, the probes, the RSS) is ``scripts/overload_load.py``.
The open-loop load comes from ``scripts/openloop.c`` (through ``loadtests/cgen.py``, which
compiles it with ``cc`` into ``runs/.bin/`` when the source is newer): one C thread on epoll,
requests leaving at their scheduled times whatever the answers, latency counted from the
scheduled time (waiting for a connection included: at most 2,048, 256 opened before the clock
starts), a request unanswered 5 s after its scheduled time a failure. The asyncio generator
(``loadtests/openloop.py``) saturates its own core long before 4x (its lag reached 1.6 s at
32,000 req/s on 2 cores); it is used only when no C compiler is found, with a warning. The
generator shares the machine's cores with the server, as it would in CI; its own lateness
(lag p99) is the last column, so that a saturated generator is visible.

On a machine this small, the generator's CPU and the kernel's loopback work take cycles from
the server, so the overload rows measure the pair. ``--server-cpus 0 --load-cpus 1`` pins the
server (and its workers: the default ``--workers`` counts its CPUs) to one set of CPUs, and this
script with wrk, the generator and the probes to the other, so a row measures the server alone
on its share. Capacity is then re-measured on that share, and the ratios stay like for like.

Run: ``make bench-overload`` or ``python scripts/bench_overload.py --models models``
(``--out FILE`` also writes every run as JSON). Needs ``wrk`` (``apt-get install wrk``), a C
compiler and trained models (``make demo``). About 4 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bench_service
import mosec_peer
import numpy as np
from overload_load import (
    MAX_CONNECTIONS,
    PROBES,
    Load,
    PeakRss,
    generator,
    open_loop,
    rss_mb,
)

from loadtests.front import Front, NginxNotFound, nginx_binary, run_front
from loadtests.procs import add_cpu_split, check_cpu_split, run_server
from modelrepo.contract import INPUT_NAME, SIDE
from training.data import load_mnist

NO_SHEDDING = (
    "--max-in-flight",
    "1000000",
    "--max-queue-wait-ms",
    "1000000",
    "--max-queue",
    "1000000",
)
# The servers compared, by the name --servers takes: (label, flags beyond the model's). "nginx"
# is the defaults behind nginx (loadtests.front), which refuses over --front-limit itself.
SERVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "defaults": ("shedding on (defaults)", ()),
    "resends": ("shedding on, --shed-hold resends", ("--shed-hold", "resends")),
    "off": ("shedding off", NO_SHEDDING),
    "nginx": ("defaults behind nginx (limit_conn)", ()),
    "mosec": ("mosec (peer)", ()),
}
DEFAULT_SERVERS = ("defaults", "resends", "off")  # nginx and mosec only when asked


def mosec_model(parser: argparse.ArgumentParser, models: Path, model: str, capacity: int) -> Path:
    """The ONNX file mosec is to serve, or the parser's error saying why it cannot."""
    if capacity < 1:
        parser.error(f"--mosec-capacity: {capacity}; at least 1")
    try:
        onnx = mosec_peer.onnx_for(models, model)
    except mosec_peer.PeerSetupError as error:
        parser.error(f"--servers mosec: {error}")
    if missing := mosec_peer.check_installed():
        parser.error(missing)
    return onnx


def mosec_version() -> str:
    """The installed mosec's version (the peer's label)."""
    return importlib.metadata.version("mosec")


def wrk(url: str, connections: int, seconds: int, script: Path) -> tuple[float, float]:
    """Closed-loop wrk run: (requests/s with status 200, p50 ms)."""
    run = bench_service.wrk(url, connections, seconds, script)
    return (run["requests"] - run["errors"]) / seconds, run["p50"]


def main() -> None:
    """Measure each server configuration at each load; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--model", default="depthwise@litert", help="variant@runtime to load")
    parser.add_argument("--seconds", type=float, default=8.0, help="open-loop run per rate")
    parser.add_argument("--multiples", default="1,2,4", help="rates, in multiples of capacity")
    parser.add_argument(
        "--storm",
        type=int,
        default=400,
        help="connections of the retry-storm run (wrk); 0 skips it",
    )
    parser.add_argument("--data", type=Path, default=os.environ.get("MNIST_DATA"))
    parser.add_argument(
        "--in-flight", default="", help="also compare these --max-in-flight values (e.g. 16,32)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"the servers to run, in order, of: {', '.join(SERVERS)} (--in-flight adds its own;"
        " nginx: our defaults behind nginx, which refuses over --front-limit POSTs in flight "
        "itself, from C; needs nginx: make nginx; mosec: the peer on the same ONNX file, at "
        "multiples of its own capacity; needs --model V@onnx and pip install -e '.[peers]')",
    )
    parser.add_argument(
        "--mosec-capacity",
        type=int,
        help="with --servers ...,mosec: requests mosec queues before it answers 429 (default: "
        f"mosec's own, {mosec_peer.DEFAULT_CAPACITY:,})",
    )
    parser.add_argument(
        "--mosec-rates",
        choices=("own", "ours"),
        help="with --servers ...,mosec: load mosec at multiples of its own capacity (own, the "
        "default: the targets' terms) or at exactly the rates ours got (ours: the same load; a "
        "server of ours must come first in --servers)",
    )
    parser.add_argument(
        "--front-limit",
        type=int,
        default=Front.limit,
        help="with --servers nginx: POSTs in flight through nginx, at most (our own limit is "
        "--max-in-flight, 128 by default, above it)",
    )
    parser.add_argument(
        "--front-nice",
        type=int,
        default=Front.nice,
        help="with --servers nginx: nginx's niceness (negative: ahead of our server on a shared "
        "core; needs root)",
    )
    parser.add_argument(
        "--server-flags",
        default="",
        help='more flags for every server, e.g. "--max-batch-size 16", to compare a setting',
    )
    add_cpu_split(parser)
    parser.add_argument("--out", type=Path, help="also write every run here as JSON")
    args = parser.parse_args()
    split = check_cpu_split(parser, args)
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = sorted(set(servers) - set(SERVERS))
    if unknown or not servers:
        parser.error(
            f"--servers: unknown {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(SERVERS)}"
        )
    if args.storm < 0:
        parser.error(f"--storm: {args.storm} connections; 0 skips the retry storm")
    front = Front(args.front_limit, args.front_nice)
    if "nginx" not in servers and front != Front():
        parser.error("--front-limit and --front-nice apply only with --servers ...,nginx")
    if "nginx" in servers:
        if problem := front.problem():
            parser.error(problem)
        try:
            nginx_binary()
        except NginxNotFound as error:
            parser.error(str(error))
    variant, _, runtime = args.model.partition("@")
    onnx = Path()  # the file mosec serves, how many it queues, and which rates it gets
    queue: int = mosec_peer.DEFAULT_CAPACITY if args.mosec_capacity is None else args.mosec_capacity
    mosec_rates: str = args.mosec_rates or "own"
    if "mosec" in servers:
        if mosec_rates == "ours" and servers[0] == "mosec":
            parser.error("--mosec-rates ours: name a server of ours before mosec in --servers")
        onnx = mosec_model(parser, args.models, args.model, queue)
    elif args.mosec_capacity is not None or args.mosec_rates is not None:
        parser.error("--mosec-capacity and --mosec-rates apply only with --servers ...,mosec")
    if args.load_cpus is not None:
        os.sched_setaffinity(0, args.load_cpus)  # wrk and the generator inherit it
    binary = generator()
    if "mosec" in servers and binary is None:
        parser.error("--servers mosec needs the C generator (the asyncio one counts only 503s)")
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
    if split:
        machine += f"; {split}"
    print(f"machine: {machine}; model {args.model}, JSON body {len(body):,} B")
    print(f"open-loop generator: {binary or 'loadtests/openloop.py (asyncio)'}")
    common: tuple[str, ...] = (
        "--variants",
        variant,
        "--runtimes",
        runtime,
        "--log-level",
        "warning",
        *shlex.split(args.server_flags),
    )
    in_flight = {
        f"shedding on, max-in-flight {limit}": (*common, "--max-in-flight", limit)
        for limit in filter(None, args.in_flight.split(","))
    }
    configs: dict[str, tuple[str, ...]] = {}
    fronted = peer = ""  # the labels of the server behind nginx and of mosec, if any
    for name in servers:
        label, flags = SERVERS[name]
        if name == "nginx":
            label = fronted = f"{label} {front.limit}, nice {front.nice}"
        if name == "mosec":
            label = peer = f"mosec {mosec_version()}, --capacity {queue}"
        configs[label] = (*common, *flags)
        if name == "defaults":  # the limits compared sit beside the defaults they change
            configs |= in_flight
    configs |= in_flight  # also when the defaults are not run (no change if they were)
    multiples = [float(m) for m in args.multiples.split(",")]
    rows: list[str] = []
    storms: list[str] = []
    record: dict[str, Any] = {"machine": machine, "model": args.model, "runs": [], "storms": []}
    # The first of our servers' capacity: each of ours gets the same offered rates (the peer's
    # come from its own capacity).
    reference = 0.0
    for label, flags in configs.items():
        log = work / f"{len(rows)}.log"
        with contextlib.ExitStack() as stack:
            probes, shed_status = PROBES, 503
            if label == peer:
                mosec = stack.enter_context(mosec_peer.run(onnx, log, queue, args.server_cpus))
                url, pid = mosec.url, mosec.pid
                probes, shed_status = mosec_peer.PROBES, mosec_peer.SHED_STATUS
            else:
                server = stack.enter_context(
                    run_server(args.models, log, *flags, cpus=args.server_cpus)
                )
                server.wait_ready()
                base, pid = server.url, server.process.pid
                if label == fronted:  # the same server, reached through nginx on the same CPUs
                    port = urlsplit(server.url).port or 80
                    base = stack.enter_context(
                        run_front(port, front, work / "nginx", cpus=args.server_cpus)
                    )
                url = f"{base}/predict/{args.model}"
            wrk(url, 4, 2, script)  # warm up
            _, c1_p50 = wrk(url, 1, 5, script)
            capacity, _ = wrk(url, 32, 5, script)
            if label != peer:
                reference = reference or capacity
            rates_from = capacity if label == peer and mosec_rates == "own" else reference
            # A retry storm: wrk's connections resend at once after every answer, refusals
            # included, ignoring Retry-After; goodput is what the 200s keep of capacity.
            if args.storm:
                storm, _ = wrk(url, args.storm, 5, script)
                first = reference or capacity  # the peer, run before any of ours: its own
                storms.append(
                    f"| {label} | {args.storm} | {storm:,.0f} | {storm / capacity:.0%} of "
                    f"{capacity:,.0f} | {storm / first:.0%} of {first:,.0f} |"
                )
                record["storms"].append(
                    {"server": label, "connections": args.storm, "goodput": storm}
                    | {"capacity": capacity, "reference": first}
                    | ({"front": asdict(front)} if label == fronted else {})
                )
            idle = rss_mb(pid)
            print(
                f"\n{label}: c=1 p50 {c1_p50:.2f} ms, capacity {capacity:,.0f} req/s (c=32), "
                f"idle RSS {idle:,.0f} MB"
            )
            for multiple in multiples:
                peak = PeakRss(pid)
                peak.start()
                load = open_loop(
                    url,
                    work / "body.json",
                    rates_from * multiple,
                    args.seconds,
                    binary,
                    probes,
                    shed_status,
                )
                peak.running = False
                time.sleep(3)
                after = rss_mb(pid)
                rows.append(report(label, multiple, rates_from, c1_p50, load, peak.peak, after))
                record["runs"].append(
                    {"server": label, "multiple": multiple, "capacity": rates_from}
                    | ({"rates": mosec_rates} if label == peer else {})
                    | {"c1_p50_ms": c1_p50, "rss_peak_mb": peak.peak, "rss_after_mb": after}
                    | asdict(load)
                )
                if label == fronted:
                    record["runs"][-1]["front"] = asdict(front)
    print(
        "\n| server | load | offered/s | goodput/s (of capacity) | refused/s | failed/s "
        "| refused p50 / p99 ms | 200 p50 / p99 ms (p99 / c=1 p50) "
        "| /healthz (mosec: /), /metrics max ms "
        "| RSS peak / after MB | generator lag p99 ms |"
    )
    print("|---" * 11 + "|")
    for row in rows:
        print(row)
    if storms:
        print(
            "\n| server | retry-storm connections | goodput/s | of its own capacity (c=32) "
            "| of the first of ours' (mosec before any of ours: its own) |"
        )
        print("|---" * 5 + "|")
        for row in storms:
            print(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, default=str))
        print(f"\nwritten: {args.out}")


def report(
    label: str,
    multiple: float,
    capacity: float,
    c1_p50: float,
    load: Load,
    peak: float,
    after: float,
) -> str:
    """One table row, and a line as the run goes."""
    good = load.good_s
    probes = ", ".join("-" if math.isnan(v) else f"{v:.0f}" for v in load.probes_max_ms.values())
    row = (
        f"| {label} | {multiple:g}x | {load.offered:,.0f} | {good:,.0f} ({good / capacity:.0%}) "
        f"| {load.shed_s:,.0f} | {load.failed_s:,.0f} "
        f"| {load.shed_p50:.1f} / {load.shed_p99:.1f} "
        f"| {load.ok_p50:.1f} / {load.ok_p99:.1f} "
        f"({load.ok_p99 / c1_p50:.0f}x) | {probes} "
        f"| {peak:,.0f} / {after:,.0f} | {load.lag_p99:.1f} |"
    )
    print(row, flush=True)
    if load.unexpected:
        print(
            f"  WARNING: answers neither 200 nor the refusal ({load.unexpected}): counted as "
            "failed, and the refusals' latency is unknown (they are timed together)"
        )
    if load.cpu_share is not None:
        print(
            f"  generator: {load.cpu_share:.0%} of a core; {load.waited:,} requests found all "
            f"{MAX_CONNECTIONS:,} connections busy (counted from their scheduled time)"
        )
    return row


if __name__ == "__main__":
    main()
