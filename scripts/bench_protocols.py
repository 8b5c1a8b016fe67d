"""Benchmark every protocol the service speaks against ``/predict``, with C load generators.

Issue 21's target: no protocol more than 15 % below ``/predict`` in requests/s. The service is
started once (its default engine, gRPC on) serving one model (``--model``, ``depthwise@onnx``
by default, from ``--models``), and each protocol gets the same request, one real MNIST test
digit, under the same closed-loop load from a C client, so the server and not the client is
measured (the Locust run this replaces was bound by its single Python process):

* ``native``: ``POST /predict/<model>``, ``{"image": [784 floats]}`` (wrk);
* ``tfserving``: ``POST /v1/models/<model>:predict``, ``{"instances": [28x28x1]}`` (wrk);
* ``kserve-json``: ``POST /v2/models/<model>/infer``, the tensor as JSON ``data`` (wrk);
* ``kserve-binary``: the same with the binary tensor extension both ways, its JSON header's
  length in ``Inference-Header-Content-Length`` (wrk);
* ``kserve-grpc``: ``inference.GRPCInferenceService/ModelInfer`` on the gRPC port (h2load:
  the length-prefixed ``ModelInferRequest`` with ``raw_input_contents`` as its body,
  ``content-type: application/grpc``, ``te: trailers``, HTTP/2 without TLS).

Every request is first sent once with a real client (httpx; grpcio with the exact bytes
h2load sends) and must be answered 200/OK with the right digit. Every run is then checked on
the server's side: ``/metrics`` must count at least as many 200 answers as the generator got
answers, and no other status except calls cut off when the generator stops (at most one per
connection): h2load sees HTTP 200 even when a gRPC call fails, and wrk counts a 200 whatever
its body. wrk and h2load use one thread at c=1 and two above, one request in flight per
connection (h2load ``-m1``). Per concurrency, ``--rounds`` rounds of ``--duration`` seconds per
protocol, in alternating order; the ratio to ``/predict`` is taken within each round, and below
0.85x is flagged. Beside req/s and p50: the CPU per request of the server (all its processes)
and of the generator, which shares the machine's cores.

Run: ``make bench-protocols`` or ``python scripts/bench_protocols.py --models models``. Needs
wrk and h2load (``apt-get install wrk nghttp2-client``). About 2 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from bench_service import wrk, wrk_command
from prometheus_client.parser import text_string_to_metric_families
from protocol_requests import (
    PROTOCOLS,
    CheckError,
    check_answer,
    generator_files,
    h2load,
    h2load_command,
    requests_for,
)

from loadtests.procs import ServerProcess, run_server
from loadtests.results import Machine
from loadtests.runner import machine
from modelrepo.layout import ModelName, ModelRepository, RepositoryError
from training.data import load_mnist

REFERENCE = "native"
TARGET = 0.85  # issue 21: no protocol more than 15 % below /predict


@dataclass(frozen=True)
class Run:
    """One generator run of one protocol, and what the server counted during it."""

    protocol: str
    concurrency: int
    round: int
    rps: float
    p50_ms: float
    requests: int  # answers the generator received
    generator_errors: int  # non-2xx answers, socket errors, failed streams
    server_ok: int  # 200s the server counted
    server_failed: int  # other statuses it counted
    failed_statuses: dict[str, int] = field(default_factory=dict)  # those, by status
    cpu_us: float = float("nan")  # the server's CPU (every process) per request answered
    generator_cpu_us: float = float("nan")  # wrk's or h2load's CPU per answer (same cores)

    @property
    def checked(self) -> bool:
        """Answers came, and every one was a success on the server's side (calls cut off at
        the stop aside)."""
        return (
            self.requests > 0
            and self.generator_errors == 0
            and self.server_ok >= self.requests
            and self.server_failed <= self.concurrency
        )


@dataclass
class Record:
    """What ``--out`` holds."""

    created_at: str
    machine: Machine
    model: str
    model_file: str
    digit_index: int  # in the MNIST test set
    digit_label: int
    duration_s: int
    rounds: int
    commands: dict[str, str]  # each protocol's generator command line, at the highest level
    runs: list[Run]
    ratios: list[dict[str, object]] = field(default_factory=list)


def served_counts(url: str) -> dict[str, int]:
    """The server's inference requests so far by status, over every model (``/metrics``)."""
    counts: dict[str, int] = {}
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name == "mnist_serve_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    status = sample.labels["status"]
                    counts[status] = counts.get(status, 0) + int(sample.value)
    return counts


def server_cpu_s(server: ServerProcess) -> float:
    """User + system CPU seconds so far of the server's processes (supervisor, front ends,
    executor); a process that ended since is no longer counted."""
    import psutil

    total = 0.0
    root = psutil.Process(server.process.pid)
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def generator_cpu_s() -> float:
    """User + system CPU seconds of this process's ended children so far: the load
    generators, each waited for by ``subprocess.run``."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def settled_counts(url: str, timeout_s: float = 5.0) -> dict[str, int]:
    """:func:`served_counts` once the calls a generator left in flight have ended (the same
    twice 50 ms apart), so that none is counted in the next run."""
    counts = served_counts(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = served_counts(url)
        if again == counts:
            break
        counts = again
    return counts


def measure(
    server: ServerProcess, protocol: str, file: Path, level: int, seconds: int, round_: int = 1
) -> Run:
    """One run of ``protocol``'s generator, with the server's count of its answers."""
    before = settled_counts(server.url)
    cpu_before = server_cpu_s(server)
    generator_before = generator_cpu_s()
    if protocol == "kserve-grpc":
        assert server.grpc_target is not None, "the server was started without gRPC"
        got = h2load(server.grpc_target, level, seconds, file)
        errors = int(got["errors"])
    else:
        got = wrk(server.url, level, seconds, file)
        errors = int(got["errors"] + got["socket_errors"])
    generator_cpu = generator_cpu_s() - generator_before
    after = settled_counts(server.url)
    cpu = server_cpu_s(server) - cpu_before
    delta = {s: n - before.get(s, 0) for s, n in after.items() if n > before.get(s, 0)}
    failed = {s: n for s, n in delta.items() if s != "200"}
    return Run(
        protocol=protocol,
        concurrency=level,
        round=round_,
        rps=got["rps"],
        p50_ms=got["p50"],
        requests=int(got["requests"]),
        generator_errors=errors,
        server_ok=delta.get("200", 0),
        server_failed=sum(failed.values()),
        failed_statuses=failed,
        cpu_us=cpu / max(delta.get("200", 0), 1) * 1e6,
        generator_cpu_us=generator_cpu / max(int(got["requests"]), 1) * 1e6,
    )


def order(round_: int, protocols: tuple[str, ...] = PROTOCOLS) -> tuple[str, ...]:
    """The order the protocols run in, in round 1, 2, ... (odd rounds forward)."""
    return protocols if round_ % 2 else protocols[::-1]


def ratios(runs: list[Run]) -> dict[tuple[str, int, int], float]:
    """Per (protocol, concurrency, round): its req/s over /predict's in the same round."""
    rps = {(r.protocol, r.concurrency, r.round): r.rps for r in runs}
    return {
        key: value / rps[(REFERENCE, key[1], key[2])]
        for key, value in rps.items()
        if (REFERENCE, key[1], key[2]) in rps
    }


def table(runs: list[Run]) -> str:
    """Markdown: req/s, p50, the server's CPU per request and the ratio to /predict (flagged
    below the target) per protocol, level and round."""
    levels = sorted({r.concurrency for r in runs})
    rounds = sorted({r.round for r in runs})
    protocols = list(dict.fromkeys(r.protocol for r in runs))
    cell = {(r.protocol, r.concurrency, r.round): r for r in runs}
    found = ratios(runs)
    head = " | ".join(
        f"round {n} req/s | round {n} p50 ms | round {n} CPU µs/req server, generator | "
        f"round {n} vs /predict"
        for n in rounds
    )
    lines = [f"| protocol | c | {head} |", "|---|---|" + "---|" * (4 * len(rounds))]
    for c in levels:
        for name in protocols:
            cells = []
            for n in rounds:
                run = cell[(name, c, n)]
                ratio = found.get((name, c, n), float("nan"))
                flag = " **below 0.85x**" if ratio < TARGET else ""
                mark = "" if run.checked else " (unchecked)"
                cells.append(
                    f"{run.rps:,.0f}{mark} | {run.p50_ms:.3f} | "
                    f"{run.cpu_us:.0f}, {run.generator_cpu_us:.0f} | "
                    f"{ratio:.2f}x{flag}"
                )
            lines.append(f"| {name} | {c} | " + " | ".join(cells) + " |")
    below = sorted({(p, c) for (p, c, _), x in found.items() if x < TARGET})
    lines.append("")
    if below:
        cases = ", ".join(f"{p} at c={c}" for p, c in below)
        lines.append(f"Below {TARGET:.2f}x /predict in at least one round: {cases}.")
    else:
        lines.append(f"Every protocol within {TARGET:.2f}x of /predict in every round.")
    bad = [r for r in runs if not r.checked]
    for r in bad:
        lines.append(
            f"Warning: {r.protocol} c={r.concurrency} round {r.round} is not a measure of "
            f"speed: {r.generator_errors} generator errors; the server counted {r.server_ok} "
            f"successes for {r.requests} answers, and failures {r.failed_statuses or 'none'}."
        )
    return "\n".join(lines)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default."""


def main() -> None:
    """Start the service, check each protocol's request, run the rounds, print and save."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--model", default="depthwise@onnx", help="<variant>@<runtime> to serve")
    parser.add_argument("--duration", type=int, default=5, help="seconds per generator run")
    parser.add_argument("--concurrency", default="1,32", help="connections, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, in alternating order")
    parser.add_argument(
        "--digit", type=int, default=0, help="index of the MNIST test digit sent (0: a 7)"
    )
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="a subset to run")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench-protocols.json"), help="the JSON record"
    )
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed: apt-get install {package}")
    try:
        name = ModelName.parse(args.model)
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError as err:
        sys.exit(f"bad --model or --concurrency: {err}")
    protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip())
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or REFERENCE not in protocols:
        sys.exit(f"--protocols: {REFERENCE} (the reference) and any of {', '.join(PROTOCOLS)}")
    runtime = name.runtime or "savedmodel"
    try:
        artifact = ModelRepository(args.models).get(name.variant).artifact(runtime)
    except RepositoryError as err:
        sys.exit(f"no {args.model} in {args.models}: {err}")
    if not artifact.exists():
        sys.exit(f"{artifact} is missing: train or export {name.variant} for {runtime}")
    model = f"{name.variant}@{runtime}"
    mnist = load_mnist()
    if not 0 <= args.digit < len(mnist.x_test):
        sys.exit(f"--digit must be in 0-{len(mnist.x_test) - 1}")
    digit, label = mnist.x_test[args.digit], int(mnist.y_test[args.digit])
    requests = {p: r for p, r in requests_for(model, digit).items() if p in protocols}
    folder = Path(tempfile.mkdtemp(prefix="bench-protocols-"))
    files = generator_files(folder, requests)
    flags = ["--variants", name.variant, "--runtimes", runtime, "--log-level", "warning"]
    runs: list[Run] = []
    commands: dict[str, str] = {}
    with run_server(args.models, folder / "server.log", *flags, grpc=True) as server:
        server.wait_ready()
        try:
            for protocol in protocols:
                check_answer(server, requests[protocol], label)
        except CheckError as err:
            sys.exit(f"a protocol's request was not answered right, nothing measured: {err}")
        for protocol in protocols:  # warm each path and its connections
            measure(server, protocol, files[protocol], 4, 1)
            command = (
                h2load_command(str(server.grpc_target), max(levels), args.duration, files[protocol])
                if protocol == "kserve-grpc"
                else wrk_command(server.url, max(levels), args.duration, files[protocol])
            )
            commands[protocol] = shlex.join(command)
        for level in levels:
            for round_ in range(1, args.rounds + 1):
                for protocol in order(round_, protocols):
                    run = measure(server, protocol, files[protocol], level, args.duration, round_)
                    runs.append(run)
                    print(
                        f"{protocol:13} c={level:<3} round {round_}: {run.rps:8.0f} req/s  "
                        f"p50 {run.p50_ms:.3f} ms  {'ok' if run.checked else 'NOT CHECKED'}",
                        file=sys.stderr,
                        flush=True,
                    )
    print(
        f"\n{model} v{artifact.parent.name}, one server (default engine, gRPC on); digit "
        f"{label} (test image {args.digit}); {args.duration} s per run, {args.rounds} rounds in "
        f"alternating order; wrk for HTTP, h2load for gRPC; 127.0.0.1.\n"
    )
    print(table(runs))
    print("\nCommand lines at the highest level:\n" + "\n".join(commands.values()))
    record = Record(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        model=model,
        model_file=str(artifact),
        digit_index=args.digit,
        digit_label=label,
        duration_s=args.duration,
        rounds=args.rounds,
        commands=commands,
        runs=runs,
        ratios=[
            {"protocol": p, "concurrency": c, "round": n, "ratio": x}
            for (p, c, n), x in ratios(runs).items()
        ],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(record), indent=2))
    print(f"\nWritten: {args.out}")
    if any(not r.checked for r in runs):
        sys.exit("some runs were not all successes on the server's side (see above)")


if __name__ == "__main__":
    main()
