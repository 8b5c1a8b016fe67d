"""Drive every variant x runtime with identical Locust load, step by step; keep exact results.

The models under test are ``<variant>@<runtime>`` for every runtime and variant of the plan (or
the bare variants, on the server's default runtime, when the plan names no runtime). For each
concurrency level and repeat, each model gets one headless Locust run of ``warmup + duration``
seconds (the warm-up's requests are not recorded). Models alternate order between repeats
(A B C D, then D C B A, ...) so that drift on the machine (thermal, background work) does not
favour one of them.
"""

from __future__ import annotations

import math
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

from loadtests.probe import LoadTestError, check_target, read_layouts, served_engine
from loadtests.procs import run_server
from loadtests.protocols import Protocol, status_label
from loadtests.results import (
    Failure,
    LoadPlan,
    Machine,
    Percentiles,
    ProtocolLayout,
    RunRecord,
    ServedVariant,
    Step,
    StepResult,
)
from loadtests.shaping import TensorLayout
from modelrepo.layout import ModelName

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# One Locust process saturates near this share of a core; above it, the generator may be
# what limits throughput, not the server.
GENERATOR_BUSY = 0.85


def parse_duration(text: str, minimum: int = 1) -> int:
    """'20s', '2m', '1m30s' or '20' -> whole seconds, at least ``minimum``."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or not match:
        raise ValueError(f"{text!r} is not a duration such as 20s, 2m or 1m30s")
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    if seconds < minimum:
        raise ValueError(f"duration {text!r} must be at least {minimum} s")
    return seconds


def summarize(
    step: Step, runtime: str, samples: dict[str, np.ndarray], processes: int, path: str
) -> StepResult:
    """Percentiles, throughput, errors and accuracy of one run's samples."""
    latency, ok = samples["latency_ms"], samples["ok"].astype(bool)
    finished = samples["finished_at"]
    window = float(finished.max() - samples["window_start"]) if len(finished) else 0.0
    good = latency[ok]
    cpu_s = float(samples["generator_cpu_s"])
    busy = cpu_s / window / processes if window > 0 else 0.0
    warnings = []
    if busy > GENERATOR_BUSY:
        warnings.append(
            f"load generator at {busy:.0%} of a core per process: it may be the bottleneck "
            "(try --processes 2)"
        )
    return StepResult(
        model=step.model,
        variant=ModelName.parse(step.model).variant,
        runtime=runtime,
        protocol=step.protocol,
        target=step.target,
        concurrency=step.concurrency,
        repeat=step.repeat,
        requests=len(latency),
        errors=int((~ok).sum()),
        window_s=round(window, 3),
        throughput_rps=len(good) / window if window > 0 else 0.0,
        latency_ms=Percentiles.of(good),
        mean_ms=float(good.mean()) if len(good) else math.nan,
        accuracy=float(samples["correct"][ok].mean()) if len(good) else math.nan,
        server_queue_ms_p50=known_median(samples["queue_ms"][ok]),
        server_model_ms_p50=known_median(samples["model_ms"][ok]),
        generator_cpu_s=round(cpu_s, 3),
        generator_busy=round(busy, 3),
        samples=path,
        warnings=warnings,
        failures=failures(step.protocol, samples),
    )


def failures(protocol: Protocol, samples: dict[str, np.ndarray]) -> list[Failure]:
    """The failed requests by status, most frequent first, with the server's first message."""
    failed = samples["status"][~samples["ok"].astype(bool)] if "status" in samples else []
    codes, counts = np.unique(np.asarray(failed, dtype=np.int64), return_counts=True)
    messages = dict(
        zip(
            samples.get("error_status", np.empty(0)).tolist(),
            samples.get("error_message", np.empty(0)).tolist(),
            strict=True,
        )
    )
    found = [
        Failure(status_label(protocol, int(code)), int(count), str(messages.get(int(code), "")))
        for code, count in zip(codes, counts, strict=True)
    ]
    return sorted(found, key=lambda f: -f.count)


def known_median(values: np.ndarray) -> float:
    """Median of the known values (NaN: the server sent no Server-Timing); NaN if none."""
    known = values[~np.isnan(values)]
    return float(np.median(known)) if len(known) else math.nan


def locust_command(
    url: str, step: Step, plan: LoadPlan, samples: Path, layout: TensorLayout | None = None
) -> list[str]:
    """The headless Locust invocation for one step (``url``: gRPC address for kserve-grpc),
    its tensors shaped by ``layout`` (read from the model's metadata)."""
    grpc = step.protocol is Protocol.KSERVE_GRPC
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "MnistGrpcUser" if grpc else "MnistUser",
        "--headless",
        "--host",
        f"grpc://{url}" if grpc else url,
        "--protocol",
        str(step.protocol),
        "--users",
        str(step.concurrency),
        "--spawn-rate",
        str(step.concurrency),
        "--run-time",
        f"{plan.warmup_s + plan.duration_s}s",
        "--stop-timeout",
        "10",
        "--variant",
        step.model,
        "--mode",
        plan.mode,
        "--warmup",
        str(plan.warmup_s),
        "--samples-out",
        str(samples),
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
        "--only-summary",
    ]
    if plan.mnist:
        command += ["--mnist", plan.mnist]
    if plan.processes > 1:
        command += ["--processes", str(plan.processes)]
    if layout is not None:
        command += ["--layout", TypeAdapter(TensorLayout).dump_json(layout).decode()]
    return command


def run_step(
    url: str,
    step: Step,
    runtime: str,
    plan: LoadPlan,
    out_dir: Path,
    layout: TensorLayout | None = None,
) -> StepResult:
    """One Locust run, bounded in time; its exact samples summarized."""
    samples_path = out_dir / "samples" / f"{step.key}.npz"
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    samples_path.unlink(missing_ok=True)
    limit = plan.warmup_s + plan.duration_s + 60
    try:
        done = subprocess.run(
            # Locust runs in the repository: the samples' path is absolute.
            locust_command(url, step, plan, samples_path.resolve(), layout),
            capture_output=True,
            text=True,
            timeout=limit,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except subprocess.TimeoutExpired as err:
        raise LoadTestError(f"Locust did not stop within {limit} s for {step.key}") from err
    if done.returncode != 0 or not samples_path.exists():
        raise LoadTestError(
            f"Locust failed for {step.key} (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    with np.load(samples_path) as data:
        samples = {key: data[key] for key in data.files}
    return summarize(step, runtime, samples, plan.processes, str(samples_path.relative_to(out_dir)))


def runtime_of(model: str, served: list[ServedVariant]) -> str:
    """The runtime that answers ``model``: named in it, else the variant's default."""
    name = ModelName.parse(model)
    if name.runtime:
        return name.runtime
    entry = next((e for e in served if e.name == name.variant), None)
    return (entry.runtime if entry else None) or "default"


def machine() -> Machine:
    """The machine and software the numbers were measured on."""
    import os
    from importlib.metadata import version

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0] if names else cpu
    return Machine(
        cpu=cpu,
        cores=os.cpu_count(),
        platform=platform.platform(),
        python=platform.python_version(),
        # Versions from package metadata: importing TensorFlow here would cost seconds.
        tensorflow=version("tensorflow"),
        locust=version("locust"),
    )


@dataclass(frozen=True)
class Target:
    """Where the load goes: the HTTP base URL, the gRPC address, and whether it was started
    here for this run."""

    url: str
    grpc_url: str | None
    started_here: bool


@contextmanager
def target_service(
    url: str | None,
    grpc_url: str | None,
    models: Path | None,
    out_dir: Path,
    server_args: tuple[str, ...] = (),
    grpc: bool = False,
) -> Iterator[Target]:
    """``url`` as given, or a service started here from ``models`` (its log in
    ``out_dir/server.log``, a gRPC port when ``grpc``), ready, and stopped on exit.
    LoadTestError when it cannot start."""
    if url is not None:
        yield Target(url, grpc_url, started_here=False)
        return
    if models is None:
        raise LoadTestError("give either a --url to test or a --models folder to serve")
    log = out_dir / "server.log"
    with ExitStack() as stack:
        try:
            server = stack.enter_context(run_server(models, log, *server_args, grpc=grpc))
            server.wait_ready()
        except (RuntimeError, TimeoutError) as err:  # it exited or never became ready
            raise LoadTestError(f"the service did not start (log: {log}):\n{err}") from err
        yield Target(server.url, server.grpc_target, started_here=True)


def run_plan(
    plan: LoadPlan,
    out_dir: Path,
    target: Target,
    server_args: tuple[str, ...] = (),
    on_step: Callable[[Step, int, int, StepResult | None], None] | None = None,
) -> RunRecord:
    """Run every step of ``plan`` against ``target`` (kserve-grpc steps go to its gRPC
    address). Writes ``results.json`` into ``out_dir`` and returns the same record;
    ``server_args`` are recorded as the options of a service started here."""
    out_dir.mkdir(parents=True, exist_ok=True)
    served = check_target(target.url, plan, target.grpc_url)
    layouts = read_layouts(target.url, target.grpc_url, plan)
    steps = plan.steps()
    results: list[StepResult] = []
    started = datetime.now(UTC)
    for index, step in enumerate(steps):
        if on_step:
            on_step(step, index, len(steps), None)
        address = target.url if step.protocol.over_http else (target.grpc_url or "")
        layout = layouts.get((step.model, step.protocol))
        runtime = runtime_of(step.model, served)
        results.append(run_step(address, step, runtime, plan, out_dir, layout))
        if on_step:
            on_step(step, index, len(steps), results[-1])
    record = RunRecord(
        created_at=started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        target=target.url,
        grpc_target=target.grpc_url,
        started_server=target.started_here,
        server_args=list(server_args),
        plan=plan,
        machine=machine(),
        variants=served,
        steps=results,
        engine=served_engine(target.url) if served else None,
        layouts=[ProtocolLayout(protocol, layout) for (_, protocol), layout in layouts.items()],
    )
    record.save(out_dir)
    return record
