"""Drive every variant x runtime with identical Locust load; keep exact results.

The models under test are ``<variant>@<runtime>`` for every runtime and variant of the plan (or
the bare variants, on the server's default runtime, when the plan names no runtime). This module
finds or starts the target service, checks it serves them, and runs the plan level by level:
each level in short windows, targets in alternating order (A B C D, then D C B A, ...) so that
drift on the machine does not favour one of them, until its comparisons are decided
(:mod:`loadtests.sequential`, windows by :mod:`loadtests.windows`).
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loadtests.decision import Stop
from loadtests.described import ServedVariant, runtime_of
from loadtests.probe import LoadTestError, check_target, read_layouts, served_engine
from loadtests.procs import run_server
from loadtests.results import LoadPlan, Machine, ProtocolLayout, RunRecord, Step, StepResult
from loadtests.sequential import OnCheck, run_level
from loadtests.windows import WindowsError, run_windows
from modelrepo.layout import ModelName
from modelrepo.tuned import ServingConfig, tuned_configs

__all__ = ["LoadTestError", "Target", "parse_duration", "run_plan", "target_service"]

if TYPE_CHECKING:
    from training.data import Mnist


def parse_duration(text: str, minimum: int = 1) -> int:
    """'20s', '2m', '1m30s' or '20' -> whole seconds, at least ``minimum``."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or not match:
        raise ValueError(f"{text!r} is not a duration such as 20s, 2m or 1m30s")
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    if seconds < minimum:
        raise ValueError(f"duration {text!r} must be at least {minimum} s")
    return seconds


def tuned_in_effect(
    models_dir: Path | None, plan: LoadPlan, served: list[ServedVariant]
) -> dict[str, ServingConfig]:
    """The tuned configuration each of ``plan``'s models runs with on a service that applied
    ``models_dir``'s (``serve --tuned``; None: one that did not), by the runtime answering it."""
    if models_dir is None:
        return {}
    answering = [(ModelName.parse(m).variant, runtime_of(m, served)) for m in plan.models()]
    return tuned_configs(models_dir, answering)


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


def check_digits(mnist: str) -> None:
    """The digits Locust will send, readable (LoadTestError otherwise): read here once, before
    any Locust process, whose workers would otherwise each stop on it, and leave a master
    waiting for them."""
    read_digits(mnist)


def read_digits(mnist: str | None) -> Mnist:
    """MNIST from ``mnist`` (or $MNIST_DATA), the digits the load tests send; LoadTestError
    naming why if it cannot be read."""
    from training.data import DataError, load_mnist

    try:
        return load_mnist(mnist or None)
    except DataError as err:
        raise LoadTestError(f"the digits to send cannot be read: {err}") from err


def run_plan(
    plan: LoadPlan,
    out_dir: Path,
    target: Target,
    server_args: tuple[str, ...] = (),
    on_step: Callable[[Step, int, int, StepResult | None], None] | None = None,
    on_check: OnCheck | None = None,
    tuned_from: Path | None = None,
) -> RunRecord:
    """Run ``plan`` against ``target``, level by level, each until its comparisons are settled
    (:mod:`loadtests.sequential`; kserve-grpc windows go to its gRPC address). Writes
    ``results.json`` into ``out_dir`` and returns the same record; ``server_args`` are recorded
    as the options of a service started here (``tuned_from``: the model repository whose
    tuned configurations it applied, ``serve --tuned``). ``on_step`` hears of every window
    (``total``: the windows expected so far), ``on_check`` of every check of the stopping
    rule."""
    out_dir.mkdir(parents=True, exist_ok=True)
    served = check_target(target.url, plan, target.grpc_url)
    check_digits(plan.mnist)
    layouts = read_layouts(target.url, target.grpc_url, plan)
    answering = {model: runtime_of(model, served) for model in plan.models()}
    results: list[StepResult] = []
    stops: list[Stop] = []
    started = datetime.now(UTC)
    expected = len(plan.steps())

    def run(steps: list[Step]) -> list[StepResult]:
        """One Locust run of ``steps``; progress reported window by window."""
        nonlocal expected
        first = len(results)
        expected = max(expected, first + len(steps))
        if on_step:
            on_step(steps[0], first, expected, None)
        try:
            found = run_windows(
                target.url, target.grpc_url, steps, answering, layouts, plan, out_dir
            )
        except WindowsError as err:
            raise LoadTestError(str(err)) from err
        for offset, (step, result) in enumerate(zip(steps, found, strict=True)):
            if on_step:
                on_step(step, first + offset, expected, result)
        results.extend(found)
        return found

    for level in plan.concurrency:
        _, stop = run_level(plan, level, run, on_check)
        stops.append(stop)
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
        stops=stops,
        layouts=[ProtocolLayout(protocol, layout) for (_, protocol), layout in layouts.items()],
        tuned=tuned_in_effect(tuned_from, plan, served),
    )
    record.save(out_dir)
    return record
