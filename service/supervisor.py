"""The supervisor: several processes serving one port, and kept serving.

``serve --workers N`` (N > 1) runs this in the parent process. It opens the listening socket
once (so a port in use fails here, at once) and starts N worker processes that all accept on
it, each serving every protocol (HTTP on the shared socket, gRPC with SO_REUSEPORT). A
connection made before the first worker runs waits in the socket's backlog and is answered when
it does (a few seconds on a slow machine, as under systemd's socket activation). With the
hybrid and executor engines it also starts the executor (``service.executor``), which owns the
models and the device; the workers are then front ends without TensorFlow (hybrid: with their
own copies of the light models, ``service.copies``). With the replicas engine each worker
loads its own models (``service.engine``).

What one process guarantees holds for all (``service.shared``): one admission limit, one
readiness, queue deadlines over every front end's requests; ``/metrics`` adds up every process
(prometheus-client's multiprocess mode, in a folder of this run).

A process that dies is restarted; requests it held are released from the admission count,
and, for the executor, every front end fails its waiting requests with 503 at once and
reconnects. A process that dies before it was ever ready (a bad setting, a model that fails
with ``--strict-models``) stops the server with its exit code, and so do repeated crashes.
SIGTERM or SIGINT drains: the workers finish what they hold (uvicorn's graceful shutdown),
then the executor stops.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from service.channel import unlink
from service.device import gpu_wanted
from service.engine import WorkerContext
from service.executor import run_executor
from service.metrics import MULTIPROC_ENV
from service.registry import ConfigError, plan
from service.remote import block_name
from service.server import configure_logging, run_single, run_worker
from service.settings import Settings
from service.shared import MODEL_SLOTS, SharedState, spawn_context

log = logging.getLogger(__name__)
EXECUTOR = -1  # the executor's key among the processes
MAX_RESTARTS, RESTART_WINDOW_S = 5, 60.0  # more restarts than this within the window: give up
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class EnginePlan:
    """How many processes serve, and how."""

    workers: int
    engine: str  # "single" (one process), "hybrid", "executor" or "replicas"
    gpu: bool
    note: str = ""  # why the plan is not what the settings named, to say at start-up

    @property
    def executor(self) -> bool:
        """Whether a model executor serves the front ends."""
        return self.engine in ("hybrid", "executor")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    return len(os.sched_getaffinity(0))


def plan_engine(settings: Settings) -> EnginePlan:
    """The workers and engine the settings ask for; ConfigError if they cannot work."""
    gpu = gpu_wanted(settings.device)
    workers = settings.workers or usable_cores()
    if workers == 1:
        note = ""
        if "engine" in settings.model_fields_set:  # named, by a flag or MNIST_SERVE_ENGINE
            why = "workers=1" if settings.workers else "one usable core"
            note = (
                f"one worker ({why}): serving as a single process; --engine {settings.engine} "
                "applies only with several workers (--workers N)"
            )
        return EnginePlan(1, "single", gpu, note)
    engine = settings.engine
    if gpu and engine == "replicas":
        raise ConfigError(
            "--engine replicas on a GPU would make every worker claim the card: use "
            "--engine executor (one process owns the GPU) or --workers 1"
        )
    return EnginePlan(workers, engine, gpu)


def serve(settings: Settings) -> None:
    """Serve until interrupted: alone (one worker), or as the supervisor of several."""
    configure_logging(settings)
    engine = plan_engine(settings)
    if engine.note:
        log.warning("%s", engine.note)
    if engine.workers == 1:
        run_single(settings)
        return
    raise SystemExit(Supervisor(settings, engine).run())


class Supervisor:
    """Starts, watches, restarts and stops the server's processes."""

    def __init__(self, settings: Settings, engine: EnginePlan) -> None:
        self.settings = settings
        self.engine = engine
        plan(settings)  # a bad setting or repository: ConfigError here, before any process
        try:  # before the run folder: a port in use leaves nothing behind
            self.sock = listen(settings.host, settings.port)
        except OSError as err:  # in use, or a host that does not resolve
            where = f"{settings.host}:{settings.port}"
            raise ConfigError(f"cannot listen on {where}: {err.strerror or err}") from err
        self.run_dir = run_folder()
        metrics_dir = self.run_dir / "metrics"
        metrics_dir.mkdir()
        os.environ[MULTIPROC_ENV] = str(metrics_dir)  # inherited by every process started
        self.socket_path = str(self.run_dir / "executor.sock")
        self.context = spawn_context()
        self.shared = SharedState(self.context, settings.max_in_flight, engine.workers, MODEL_SLOTS)
        self.processes: dict[int, BaseProcess] = {}
        self.ever_ready: set[int] = set()
        self.restarts: deque[float] = deque()
        self.stopping = False

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0) or until the server cannot go on (its exit code)."""
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info(
            "serving on http://%s:%d with %d workers (%s engine)",
            self.settings.host,
            self.settings.port,
            self.engine.workers,
            self.engine.engine,
        )
        try:
            if self.engine.executor:
                self.start(EXECUTOR)
            for index in range(self.engine.workers):
                self.start(index)
            return self.watch()
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self, key: int) -> None:
        """Start the executor or worker ``key``."""
        if key == EXECUTOR:
            process = self.context.Process(
                target=run_executor,
                args=(self.settings, self.shared, self.socket_path),
                name="mnist-serve-executor",
            )
        else:
            worker = WorkerContext(
                key,
                self.engine.workers,
                self.engine.engine,
                self.shared,
                self.socket_path if self.engine.executor else None,
                self.engine.gpu,
            )
            process = self.context.Process(
                target=run_worker,
                args=(self.settings, worker, self.sock),
                name=f"mnist-serve-worker-{key}",
            )
        process.start()
        self.processes[key] = process
        assert process.pid is not None
        self.shared.set_pid(self.engine.workers if key == EXECUTOR else key, process.pid)

    def watch(self) -> int:
        """Wait for deaths; restart, or give up with an exit code."""
        while not self.stopping:
            sentinels: dict[object, int] = {p.sentinel: k for k, p in self.processes.items()}
            for sentinel in wait(list(sentinels), timeout=0.5):  # type: ignore[arg-type]
                code = self.died(sentinels[sentinel])
                if code is not None:
                    return code
            self._note_ready()
        return 0

    def died(self, key: int) -> int | None:
        """Handle the death of ``key``: None once restarted, else the code to exit with."""
        process = self.processes[key]
        process.join()
        code = process.exitcode if process.exitcode is not None else 1
        if self.stopping:
            return None
        what = "the executor" if key == EXECUTOR else f"worker {key}"
        self._note_ready()
        if key not in self.ever_ready:
            log.error("%s exited with %s before it was ready: stopping", what, code)
            return code or 1
        now = time.monotonic()
        self.restarts.append(now)
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
            self.restarts.popleft()
        if len(self.restarts) > MAX_RESTARTS:
            log.error("%d restarts within %.0f s: stopping", len(self.restarts), RESTART_WINDOW_S)
            return 1
        log.error("%s (pid %s) died with %s: restarting it", what, process.pid, code)
        if key != EXECUTOR:
            self.shared.forget(key)
            self._mark_dead(process)
            unlink(block_name(self.socket_path, key))
        self.ever_ready.discard(key)
        self.start(key)
        return None

    def _note_ready(self) -> None:
        """Remember which processes have been ready (the executor: once any worker is)."""
        for index, state in enumerate(self.shared.readiness()):
            if state:  # ready, or up with every model failed: it started
                self.ever_ready.add(index)
        if self.ever_ready - {EXECUTOR}:
            self.ever_ready.add(EXECUTOR)

    def _mark_dead(self, process: BaseProcess) -> None:
        from prometheus_client import multiprocess

        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid, os.environ[MULTIPROC_ENV])

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: draining", signal.Signals(signum).name)
        self.stopping = True

    def shutdown(self) -> None:
        """Drain the workers, then stop the executor; remove this run's files."""
        self.stopping = True
        workers = [p for key, p in self.processes.items() if key != EXECUTOR]
        for group in (workers, [self.processes[EXECUTOR]] if EXECUTOR in self.processes else []):
            for process in group:
                if process.is_alive() and process.pid is not None:
                    os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for process in group:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join()
        self.sock.close()
        for index in range(self.engine.workers):
            unlink(block_name(self.socket_path, index))
        shutil.rmtree(self.run_dir, ignore_errors=True)


def run_folder() -> Path:
    """A private folder for this run's executor socket and metrics files: in the temporary
    folder, or in /dev/shm where that is not writable (a container's read-only root)."""
    prefix = f"mnist-serve-{os.getpid()}-"
    try:
        return Path(tempfile.mkdtemp(prefix=prefix))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm"))


def listen(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (OSError at once if the port is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
