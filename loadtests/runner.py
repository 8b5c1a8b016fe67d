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
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import assert_never

import httpx

from loadtests.decision import Stop
from loadtests.procs import run_server
from loadtests.protocols import Protocol
from loadtests.results import (
    LoadPlan,
    Machine,
    RunRecord,
    ServedEngine,
    ServedVariant,
    Step,
    StepResult,
)
from loadtests.sequential import OnCheck, run_level
from loadtests.windows import WindowsError, run_windows
from modelrepo.layout import ModelName


class LoadTestError(Exception):
    """The load test could not run (target unreachable, Locust failed, ...)."""


def parse_duration(text: str, minimum: int = 1) -> int:
    """'20s', '2m', '1m30s' or '20' -> whole seconds, at least ``minimum``."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or not match:
        raise ValueError(f"{text!r} is not a duration such as 20s, 2m or 1m30s")
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    if seconds < minimum:
        raise ValueError(f"duration {text!r} must be at least {minimum} s")
    return seconds


def check_target(
    url: str, plan: LoadPlan, grpc_url: str | None = None, wait_s: float = 120
) -> list[ServedVariant]:
    """Fail fast on an unreachable target; check every model answers in every protocol swept.

    Against mnist-serve (it has ``/readyz``), wait for readiness and return its ``/variants``
    entries (figures, runtimes, devices); against any other server, return bare names.
    """
    served = wait_for_mnist_serve(url, wait_s)
    if served is not None:
        check_served(url, plan, served)
    if Protocol.KSERVE_GRPC in plan.protocols and not grpc_url:
        raise LoadTestError("--protocol kserve-grpc needs the server's gRPC address (--grpc-url)")
    for protocol in plan.protocols:
        for model in plan.models():
            if not model_answers(protocol, url, grpc_url, model):
                raise LoadTestError(f"{model} is not ready over {protocol} at {grpc_url or url}")
    return served if served is not None else [ServedVariant(v) for v in plan.variants]


def wait_for_mnist_serve(url: str, wait_s: float) -> list[ServedVariant] | None:
    """``/variants`` of an mnist-serve target once ready; None for another kind of server."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            ready = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.HTTPError as err:
            raise LoadTestError(
                f"cannot reach {url} ({type(err).__name__}: {err}); is the service running? "
                "Leave out --url to let the load test start one."
            ) from err
        if ready.status_code == 404:
            return None  # not mnist-serve: checked per protocol instead
        if ready.status_code == 200:
            break
        if time.monotonic() > deadline:
            raise LoadTestError(f"{url} did not become ready within {wait_s:.0f} s: {ready.text}")
        time.sleep(0.5)
    return ServedVariant.from_server(httpx.get(f"{url}/variants", timeout=10).json())


def served_engine(url: str) -> ServedEngine | None:
    """mnist-serve's engine and worker count (None from a version without ``/engine``)."""
    answer = httpx.get(f"{url}/engine", timeout=10)
    if answer.status_code != 200:
        return None
    info = answer.json()
    return ServedEngine(info["engine"], info["workers"], info["max_in_flight"])


def check_served(url: str, plan: LoadPlan, entries: list[ServedVariant]) -> None:
    """Every variant of the plan served by mnist-serve, on every runtime of the plan."""
    served = {entry.name: entry for entry in entries}
    missing = [v for v in plan.variants if v not in served]
    if missing:
        raise LoadTestError(f"{url} does not serve {missing} (it serves {', '.join(served)})")
    for variant in plan.variants:
        states = {r.runtime: r.state for r in served[variant].runtimes}
        absent = [r for r in plan.runtimes if states.get(r) != "ready"]
        if absent:
            raise LoadTestError(
                f"{url} does not serve {variant} on {', '.join(absent)} "
                f"(runtimes there: {', '.join(f'{k} {v}' for k, v in states.items()) or 'none'})"
            )


def model_answers(protocol: Protocol, url: str, grpc_url: str | None, model: str) -> bool:
    """Whether ``model`` reports ready through ``protocol``'s own status call."""
    try:
        match protocol:
            case Protocol.NATIVE:
                return True  # mnist-serve's own readiness was checked above
            case Protocol.TFSERVING:
                status = httpx.get(f"{url}/v1/models/{model}", timeout=10)
                states = [v.get("state") for v in status.json().get("model_version_status", [])]
                return status.status_code == 200 and "AVAILABLE" in states
            case Protocol.KSERVE_HTTP:
                return httpx.get(f"{url}/v2/models/{model}/ready", timeout=10).status_code == 200
            case Protocol.KSERVE_GRPC:
                import tritonclient.grpc as grpcclient

                client = grpcclient.InferenceServerClient(url=grpc_url or "")
                try:
                    return bool(client.is_model_ready(model))
                finally:
                    client.close()
            case _:
                assert_never(protocol)
    except Exception as err:  # any failure to get a status means: not ready
        raise LoadTestError(f"{model} over {protocol}: {type(err).__name__}: {err}") from err


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
    on_check: OnCheck | None = None,
) -> RunRecord:
    """Run ``plan`` against ``target``, level by level, each until its comparisons are settled
    (:mod:`loadtests.sequential`; kserve-grpc windows go to its gRPC address). Writes
    ``results.json`` into ``out_dir`` and returns the same record; ``server_args`` are recorded
    as the options of a service started here. ``on_step`` hears of every window (``total``: the
    windows expected so far), ``on_check`` of every check of the stopping rule."""
    out_dir.mkdir(parents=True, exist_ok=True)
    served = check_target(target.url, plan, target.grpc_url)
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
            found = run_windows(target.url, target.grpc_url, steps, answering, plan, out_dir)
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
    )
    record.save(out_dir)
    return record
