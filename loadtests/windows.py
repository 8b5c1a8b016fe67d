"""One Locust run over a window schedule, cut into one measured :class:`StepResult` per window.

The runner (:mod:`loadtests.runner`) asks for a list of steps at one concurrency level, in the
order they are to run: one step per window, targets in alternating order. This module writes
their :class:`loadtests.schedule.Schedule`, runs Locust once for all of them (its start-up paid
once, not per window), and cuts its exact samples by window: each window's samples are written
to ``samples/<step>.npz`` and summarized like a run of its own.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

from loadtests import steal
from loadtests.labels import Label, Step
from loadtests.protocols import Protocol, status_label
from loadtests.results import Failure, LoadPlan, Percentiles, StepResult
from loadtests.samples import REPORT_INTERVAL_S, SAMPLE_FIELDS
from loadtests.schedule import TAIL_S, Schedule, Slot
from loadtests.shaping import TensorLayout
from modelrepo.layout import ModelName

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# One Locust process saturates near this share of a core; above it, the generator may be
# what limits throughput, not the server.
GENERATOR_BUSY = 0.85
# Locust's own start-up and shut-down, beyond the schedule's length (for time estimates).
LOCUST_OVERHEAD_S = 3.0
# --run-time beyond the schedule: its timer fires up to Locust's start-up time early
# (loadtests/locustfile.py, quit_at), so it only stops a run whose own end did not come.
RUN_TIME_MARGIN_S = 10.0


class WindowsError(Exception):
    """Locust could not run the schedule (it failed, or did not stop in time)."""


def summarize(
    step: Step,
    runtime: str,
    samples: dict[str, np.ndarray],
    processes: int,
    path: str,
    window_s: float | None = None,
) -> StepResult:
    """Percentiles, throughput, errors and accuracy of one window's samples (``window_s``: its
    counted length; by default from its first to its last answer)."""
    latency, ok = samples["latency_ms"], samples["ok"].astype(bool)
    finished = samples["finished_at"]
    if window_s is None:
        window_s = float(finished.max() - samples["window_start"]) if len(finished) else 0.0
    good = latency[ok]
    cpu_s = float(samples["generator_cpu_s"])
    busy = cpu_s / window_s / processes if window_s > 0 else 0.0
    warnings = []
    if busy > GENERATOR_BUSY:
        warnings.append(
            f"load generator at {busy:.0%} of a core per process: it may be the bottleneck "
            "(try --processes 2)"
        )
    missing = int(samples.get("missing_reports", 0))
    if missing:
        warnings.append(
            f"{missing} Locust worker(s)' last report did not reach the master before it "
            f"stopped: their samples of the run's last {REPORT_INTERVAL_S:g} s at most are "
            "missing (this window's throughput may read low)"
        )
    if len(good) == 0:
        warnings.append("no successful requests")
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
        window_s=round(window_s, 3),
        throughput_rps=len(good) / window_s if window_s > 0 else 0.0,
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


def schedule_of(
    steps: Sequence[Step],
    window_s: float,
    warmup_s: float,
    layouts: Layouts | None = None,
) -> Schedule:
    """The schedule that runs ``steps`` in order, one window each (``layouts``: how each
    model's tensors are shaped over each tensor protocol, from its metadata)."""
    targets: list[Label] = []
    for step in steps:
        if step.target not in targets:
            targets.append(step.target)
    return Schedule(
        targets=tuple(
            Slot(str(t.model), str(t.protocol), layout_json(t, layouts)) for t in targets
        ),
        windows=tuple(targets.index(step.target) for step in steps),
        window_s=window_s,
        warmup_s=warmup_s,
    )


Layouts = dict[tuple[str, Protocol], TensorLayout]


def layout_json(target: Label, layouts: Layouts | None) -> str:
    """The target's tensor layout as JSON for the Locust file ('' when none was read)."""
    layout = (layouts or {}).get((str(target.model), target.protocol))
    return TypeAdapter(TensorLayout).dump_json(layout).decode() if layout is not None else ""


def locust_command(
    url: str,
    grpc_url: str | None,
    steps: Sequence[Step],
    plan: LoadPlan,
    schedule: Path,
    samples: Path,
    seconds: float,
) -> list[str]:
    """The headless Locust invocation for one schedule: the HTTP user class, the gRPC one, or
    both (each with the level's concurrency) when the schedule mixes them."""
    over_http = {step.protocol.over_http for step in steps}
    classes = (["MnistUser"] if True in over_http else []) + (
        ["MnistGrpcUser"] if False in over_http else []
    )
    users = steps[0].concurrency * len(classes)
    host = url if True in over_http else f"grpc://{grpc_url}"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        *classes,
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",  # a safety net: the Locust file quits when the schedule is over
        f"{math.ceil(seconds + RUN_TIME_MARGIN_S)}s",
        "--stop-timeout",
        "10",
        "--mode",
        plan.mode,
        "--warmup",
        str(plan.warmup_s),
        "--schedule",
        str(schedule),
        "--samples-out",
        str(samples),
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
        "--only-summary",
    ]
    if grpc_url:
        command += ["--grpc-host", grpc_url]
    if plan.mnist:
        command += ["--mnist", plan.mnist]
    if plan.processes > 1:
        command += ["--processes", str(plan.processes)]
    return command


def run_windows(
    url: str,
    grpc_url: str | None,
    steps: Sequence[Step],
    runtimes: dict[str, str],
    layouts: Layouts,
    plan: LoadPlan,
    out_dir: Path,
) -> list[StepResult]:
    """Run ``steps`` (one concurrency level, one window each, in order) in one Locust run;
    one result per step. ``runtimes``: the runtime that answers each model name."""
    schedule = schedule_of(steps, float(plan.duration_s), float(plan.warmup_s), layouts)
    first = steps[0]
    name = f"c{first.concurrency}-r{first.repeat}-{len(steps)}w"
    work = out_dir / "samples" / "runs"
    work.mkdir(parents=True, exist_ok=True)
    schedule_path, samples_path = work / f"{name}.schedule.json", work / f"{name}.npz"
    schedule.save(schedule_path)
    samples_path.unlink(missing_ok=True)
    limit = schedule.seconds + 60
    command = locust_command(
        url,
        grpc_url,
        steps,
        plan,
        schedule_path.resolve(),
        samples_path.resolve(),
        schedule.seconds,
    )
    try:
        with steal.Sampler() as sampler:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=limit,
                cwd=Path(__file__).resolve().parent.parent,  # Locust runs in the repo
            )
    except subprocess.TimeoutExpired as err:
        raw = err.stderr or b""  # bytes, whatever ``text`` says
        said = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        raise WindowsError(
            f"Locust did not stop within {limit:.0f} s for {name}"
            + (f":\n{said[-2000:]}" if said else "")
        ) from err
    if done.returncode != 0 or not samples_path.exists():
        raise WindowsError(
            f"Locust failed for {name} (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    with np.load(samples_path) as data:
        everything = {key: data[key] for key in data.files}
    samples_path.unlink()  # cut into per-window files below
    return cut(everything, steps, runtimes, schedule, plan.processes, out_dir, sampler)


def cut(
    samples: dict[str, np.ndarray],
    steps: Sequence[Step],
    runtimes: dict[str, str],
    schedule: Schedule,
    processes: int,
    out_dir: Path,
    sampler: steal.Sampler | None = None,
) -> list[StepResult]:
    """One result per window of a schedule's samples; each window's samples in its own file
    (``sampler``: the CPU steal read during the run, told per window)."""
    window = samples["window"].astype(int)
    lost = int(samples.get("missing_reports", 0))
    cpu_share = float(samples["generator_cpu_s"]) / max(len(steps), 1)
    results = []
    for index, step in enumerate(steps):
        mask = window == index
        part = {name: samples[name][mask] for name in SAMPLE_FIELDS}
        part["window_start"] = np.asarray(float(samples["window_start"]))
        part["generator_cpu_s"] = np.asarray(cpu_share)
        # A lost last report holds what was sent after the one before, at most one report
        # interval before the run's end: only the windows that end in that stretch lose any.
        end = len(schedule.windows) * schedule.window_s + TAIL_S
        late = (index + 1) * schedule.window_s > end - REPORT_INTERVAL_S
        part["missing_reports"] = np.asarray(lost if late else 0)
        if "error_status" in samples:  # the first message per status, in this window
            mine = samples.get("error_window", np.full(len(samples["error_status"]), index))
            for name in ("error_status", "error_message"):
                part[name] = samples[name][mine == index]
        path = out_dir / "samples" / f"{step.key}.npz"
        np.savez_compressed(path, allow_pickle=False, **part)
        relative = str(path.relative_to(out_dir))
        runtime = runtimes.get(step.model, "default")
        result = summarize(step, runtime, part, processes, relative, window_s=schedule.counted_s)
        if sampler is not None:  # the report warns of the windows over steal.NOISY
            start = float(samples["window_start"]) + index * schedule.window_s
            stolen = sampler.share(start + schedule.settle_s, start + schedule.window_s)
            result = replace(result, cpu_steal=stolen)
        results.append(result)
    return results
