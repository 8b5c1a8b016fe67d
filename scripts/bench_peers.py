"""Benchmark our service against a peer serving engine (mosec) and the HTTP floor, with wrk.

The three serve the same ``model.onnx`` (the latest version of ``--variant`` in ``--models``)
and get the same body, a real MNIST test digit as ``{"image": [784 floats]}``:

* **mosec**: scripts/mosec_server.py, one worker running ONNX Runtime on batches of up to 32
  requests waiting at most 1 ms;
* **ours**: ``mnist-serve serve --variants V --runtimes onnx`` with its default settings,
  ``/predict/V@onnx``;
  with ``--engines``, also ours as ``ours-single`` (``--workers 1``), ``ours-hybrid``,
  ``ours-executor`` and ``ours-replicas`` (``--engine ...``, default workers), and
  ``ours-asgi`` (the defaults, but inference requests through uvicorn's ASGI cycle:
  ``--http-impl asgi``), each compared with mosec and the floor;
* **floor**: the HTTP floor of scripts/baselines.py (the same JSON parsed, no model).

All three run at once on 127.0.0.1; per concurrency (1, 32, 64), two rounds of ``--duration``
second wrk runs (round 1 in the order mosec, ours, floor; round 2 the reverse), wrk with one
thread at c=1 and two above (``bench_service.wrk``). Ratios (req/s) are taken within a round.

On two cores wrk takes cycles the servers would use. ``--server-cpus 0 --load-cpus 1`` starts
every server on CPU 0 (each process it starts inherits that; our default ``--workers`` is then
1, the single process) and runs wrk on CPU 1, so the engines compare on one core each, with the
load apart. The hybrid, executor and replicas engines then get ``--workers 2`` (or one per
server CPU), so that they stay what they are called.

Run: ``make bench-peers`` or ``python scripts/bench_peers.py --models models``. Needs wrk
(``apt-get install wrk``) and mosec (``pip install -e '.[peers]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import mosec_peer
from bench_service import floor_command, post_script, quiet_server, server, wrk

from loadtests import steal
from loadtests.procs import add_cpu_split, check_cpu_split, free_port
from training.data import load_mnist

SERVERS = ("mosec", "ours", "floor")  # round 1's order; round 2 runs the reverse
ENGINE_FLAGS = {
    "default": [],
    "single": ["--workers", "1"],
    "hybrid": ["--engine", "hybrid"],
    "executor": ["--engine", "executor"],
    "replicas": ["--engine", "replicas"],
    "asgi": ["--http-impl", "asgi"],  # the default engine, inference through uvicorn's ASGI
}
SEVERAL_PROCESSES = frozenset({"hybrid", "executor", "replicas"})
# ONNX alone (the file the peers serve: no TensorFlow) and no repository polling, so that the
# idle servers beside the one measured stay idle.
OURS_FLAGS = ("--runtimes", "onnx", "--poll-s", "0")
ROUNDS = 2


@dataclass(frozen=True)
class Run:
    """One wrk run of one server."""

    server: str
    concurrency: int
    round: int  # 1 or 2
    rps: float
    p50_ms: float
    errors: float  # non-2xx answers
    socket_errors: float = 0.0  # wrk's connect, read, write errors and timeouts (2 s unanswered)
    steal: float | None = None  # the CPU the hypervisor took during the run (loadtests.steal)

    def label(self) -> str:
        """The run, for a warning: "ours c=64 round 1"."""
        return f"{self.server} c={self.concurrency} round {self.round}"


def ours_name(engine: str) -> str:
    """The server name of our service with ``engine`` (``ours``: its defaults)."""
    return "ours" if engine == "default" else f"ours-{engine}"


def order(round_: int, servers: tuple[str, ...] = SERVERS) -> tuple[str, ...]:
    """The order the servers run in, in round 1 or 2."""
    return servers if round_ % 2 else servers[::-1]


def ratios(runs: list[Run]) -> dict[tuple[int, int], dict[str, float]]:
    """Per (concurrency, round): each of ours over mosec and over the floor, in req/s, within
    that round."""
    rps = {(r.server, r.concurrency, r.round): r.rps for r in runs}
    found: dict[tuple[int, int], dict[str, float]] = {}
    for name, c, n in rps:
        if name.startswith("ours"):
            found.setdefault((c, n), {}).update(
                {
                    f"{name}/mosec": rps[(name, c, n)] / rps[("mosec", c, n)],
                    f"{name}/floor": rps[(name, c, n)] / rps[("floor", c, n)],
                }
            )
    return found


def table(runs: list[Run]) -> str:
    """Markdown: req/s and p50 per server, concurrency and round; then the ratios per round."""
    levels = sorted({r.concurrency for r in runs})
    rounds = sorted({r.round for r in runs})
    cell = {(r.server, r.concurrency, r.round): r for r in runs}
    head = " | ".join(f"round {n} req/s | round {n} p50 ms" for n in rounds)
    lines = [f"| server | c | {head} |", "|---|---|" + "---|" * (2 * len(rounds))]
    servers = list(dict.fromkeys(r.server for r in runs))
    for name in servers:
        for c in levels:
            cells = [cell[(name, c, n)] for n in rounds]
            figures = " | ".join(f"{r.rps:,.0f} | {r.p50_ms:.3f}" for r in cells)
            lines.append(f"| {name} | {c} | {figures} |")
    found = ratios(runs)
    for ours in (s for s in servers if s.startswith("ours")):
        head = " | ".join(f"{ours}/{peer} round {n}" for peer in ("mosec", "floor") for n in rounds)
        lines += ["", f"| c | {head} |", "|---|" + "---|" * (2 * len(rounds))]
        for c in levels:
            figures = " | ".join(
                f"{found[(c, n)][f'{ours}/{peer}']:.2f}x"
                for peer in ("mosec", "floor")
                for n in rounds
            )
            lines.append(f"| {c} | {figures} |")
    errors = sum(r.errors for r in runs)
    if errors:
        lines.append(f"\nWarning: {errors:.0f} non-2xx answers in these runs.")
    if failed := [r for r in runs if r.socket_errors]:
        said = ", ".join(f"{r.label()} ({r.socket_errors:.0f})" for r in failed)
        lines.append(
            f"\nWarning: wrk's socket errors (timeouts: no answer in 2 s) in {said}: a stall "
            "there, so its ratios are not the servers' own; re-run."
        )
    if noisy := [r for r in runs if steal.noisy(r.steal)]:
        said = ", ".join(f"{r.label()} ({steal.percent(r.steal)})" for r in noisy)
        lines.append(f"\nWarning: CPU steal over {steal.NOISY:.0%} in {said}: {steal.ADVICE}.")
    return "\n".join(lines)


def main() -> None:
    """Start the three servers, run wrk over them in alternating rounds, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--variant", default="depthwise")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,32,64")
    parser.add_argument("--out", type=Path, help="also write the runs here as JSON")
    parser.add_argument(
        "--engines",
        default="default",
        help="our service's engines to run, comma-separated: default (its own defaults), "
        "single (--workers 1), hybrid, executor, replicas, asgi (--http-impl asgi)",
    )
    add_cpu_split(parser)
    args = parser.parse_args()
    split = check_cpu_split(parser, args)
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    if missing := mosec_peer.check_installed():
        sys.exit(missing)
    levels = [int(c) for c in args.concurrency.split(",")]
    try:
        onnx = mosec_peer.onnx_for(args.models, f"{args.variant}@onnx")
    except mosec_peer.PeerSetupError as error:
        sys.exit(str(error))
    digit = load_mnist().x_test[0] / 255.0
    script = post_script(Path(tempfile.mkdtemp(prefix="bench-peers-")), digit.ravel())
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINE_FLAGS]
    if unknown:
        sys.exit(f"unknown --engines {unknown}: use {', '.join(ENGINE_FLAGS)}")
    servers = ("mosec", *(ours_name(e) for e in engines), "floor")
    ports = {name: free_port() for name in servers}
    commands = {
        "mosec": mosec_peer.command(onnx, ports["mosec"]),
        "floor": floor_command(args.models, args.variant, ports["floor"]),
    }
    paths = {"mosec": mosec_peer.PATH, "floor": f"/predict/{args.variant}"}
    for engine in engines:
        name = ours_name(engine)
        flags = [*ENGINE_FLAGS[engine], *OURS_FLAGS]
        if args.server_cpus is not None and engine in SEVERAL_PROCESSES:
            # On one pinned CPU the default --workers is 1, which is the single process: give
            # these engines the workers that make them what they are called.
            flags += ["--workers", str(max(2, len(args.server_cpus)))]
        commands[name] = quiet_server(args.models, args.variant, ports[name], *flags)
        paths[name] = f"/predict/{args.variant}@onnx"
    runs: list[Run] = []
    with ExitStack() as stack:
        urls = {}
        if args.server_cpus is not None:  # the servers inherit this process's CPUs when started...
            os.sched_setaffinity(0, args.server_cpus)
        for name in servers:
            base = stack.enter_context(server(commands[name], ports[name]))
            urls[name] = base + paths[name]
            mosec_peer.wait_answers(urls[name])
        if args.load_cpus is not None:  # ...and wrk, started from here on, these
            os.sched_setaffinity(0, args.load_cpus)
        for name in servers:
            wrk(urls[name], 4, 2, script)  # warm the server and its connections
        for level in levels:
            for round_ in range(1, ROUNDS + 1):
                for name in order(round_, servers):
                    before = steal.read()
                    got = wrk(urls[name], level, args.duration, script)
                    run = Run(
                        name, level, round_, got["rps"], got["p50"], got["errors"],
                        got["socket_errors"], steal.share(before, steal.read()),
                    )  # fmt: skip
                    runs.append(run)
                    print(
                        f"{name:6} c={level:<3} round {round_}: {run.rps:8.0f} req/s  "
                        f"p50 {run.p50_ms:.3f} ms  errors {run.errors:.0f}  socket errors "
                        f"{run.socket_errors:.0f}{steal.note(run.steal)}",
                        file=sys.stderr,
                        flush=True,
                    )
    print(
        f"{args.variant} v{onnx.parent.name} model.onnx; wrk -t1 at c=1, -t2 above, "
        f"{args.duration} s per run, 127.0.0.1; ratios of req/s within a round"
        f"{'; ' + split if split else ''}.\n"
    )
    print(table(runs))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([asdict(r) for r in runs], indent=2))


if __name__ == "__main__":
    main()
