"""Helpers shared by the tests."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import uvicorn
from PIL import Image

from loadtests.described import ServedVariant
from loadtests.labels import Label
from loadtests.procs import ServerProcess as Server
from loadtests.procs import run_server
from loadtests.results import LoadPlan, Machine, Percentiles, RunRecord, StepResult

REPO = Path(__file__).resolve().parent.parent
# The shared ``server`` fixture's options (tests/conftest.py): a test that stands another server
# beside it for load tests to compare (tests/test_gate.py) starts that one batching the same.
SERVER_BATCH = 16
SERVER_ARGS = ("--max-batch-size", str(SERVER_BATCH))

__all__ = [
    "REPO",
    "SERVER_ARGS",
    "SERVER_BATCH",
    "Server",
    "batching",
    "png_bytes",
    "run_record",
    "run_script",
    "run_server",
    "script_module",
    "serve_in_thread",
    "shared_server_batching",
    "step_result",
]


@contextlib.contextmanager
def serve_in_thread(app: Any, protocol: type, log_level: str = "warning") -> Iterator[int]:
    """A real uvicorn server of ``app`` with the ``protocol`` class on 127.0.0.1, in a thread
    of this process (so a test can reach into its protocol and guard): its port."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=protocol, lifespan="off", log_level=log_level
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (server.started and server.servers):
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def script_module(name: str) -> ModuleType:
    """A module of scripts/ (not a package: its modules import each other)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "scripts"))


def run_script(
    name: str, *args: str | Path, mnist: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<name>.py`` with this Python from the repository's root, ``MNIST_DATA``
    set to ``mnist`` if given: its completed process, output captured as text."""
    command = [sys.executable, str(REPO / "scripts" / f"{name}.py"), *map(str, args)]
    env = {**os.environ, **({"MNIST_DATA": str(mnist)} if mnist else {})}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    """Encode a uint8 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def step_result(
    target: str, level: int, repeat: int, throughput: float, **figures: Any
) -> StepResult:
    """A :class:`StepResult` of the bare variant ``target`` (on the server's default runtime,
    over the native protocol) with the given throughput (other figures plain)."""
    label = Label(target)
    defaults: dict[str, Any] = dict(
        model=target,
        variant=target,
        runtime="savedmodel",
        protocol=label.protocol,
        target=label,
        concurrency=level,
        repeat=repeat,
        requests=100,
        errors=0,
        window_s=1.0,
        throughput_rps=throughput,
        latency_ms=Percentiles(1.0, 1.5, 1.8, 2.0, 2.5),
        mean_ms=1.2,
        accuracy=1.0,
        server_queue_ms_p50=0.1,
        server_model_ms_p50=0.5,
        generator_cpu_s=0.1,
        generator_busy=0.1,
        samples="",
    )
    return StepResult(**{**defaults, **figures})


def run_record(
    plan: LoadPlan,
    variants: list[ServedVariant] | None = None,
    steps: list[StepResult] | None = None,
    created: str = "2026-11-24T00:00:00",
    cpu: str = "EPYC",
) -> RunRecord:
    """A :class:`RunRecord` of ``plan`` on a machine with ``cpu``."""
    return RunRecord(
        created_at=created,
        finished_at=created,
        target="http://127.0.0.1:1",
        grpc_target=None,
        started_server=True,
        server_args=[],
        plan=plan,
        machine=Machine(cpu, 2, "Linux", "3.11", "2.21.0", "2.x"),
        variants=variants if variants is not None else [ServedVariant(v) for v in plan.variants],
        steps=steps or [],
    )


def batching(**changed: object) -> dict[str, object]:
    """A runtime's ``batching`` in ``/variants`` for a service at its defaults, but ``changed``."""
    from service.settings import Settings

    fields = Settings.model_fields
    served = {
        "max_batch_size": fields["max_batch_size"].default,
        "max_wait_ms": fields["max_wait_ms"].default,
        "merges": fields["batching"].default,
        "intra_op_threads": fields["intra_op_threads"].default,
        "tuned": False,
    }
    return served | changed


def shared_server_batching() -> dict[str, object]:
    """What the shared ``server`` fixture (started with ``SERVER_ARGS``) says of each model's
    ``batching`` in ``/variants``."""
    return batching(max_batch_size=SERVER_BATCH)
