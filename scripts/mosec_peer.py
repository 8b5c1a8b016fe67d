"""How the benchmarks start the mosec peer (scripts/mosec_server.py) and know it answers.

Shared by ``scripts/bench_peers.py`` (throughput against mosec), ``scripts/bench_overload.py``
(overload against mosec) and ``scripts/bench_refusal.py`` (what a refusal costs mosec's core,
with :func:`refusing_all`). This module does not import mosec, so a benchmark that may run
without the peer can import it; :func:`check_installed` says how to get it when it is missing.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from loadtests.procs import free_port, start_logged, stop, wait_for_port
from modelrepo.contract import INPUT_NAME, PIXELS
from modelrepo.layout import ModelRepository, RepositoryError

MOSEC_SERVER = Path(__file__).resolve().parent / "mosec_server.py"
PATH = "/inference"  # where mosec answers a POST
PROBES = ("/", "/metrics")  # its GETs: a liveness answer and its Prometheus metrics
SHED_STATUS = 429  # mosec's answer when its queue (--capacity) is full; ours is 503
DEFAULT_CAPACITY = 1024  # mosec's own default --capacity (requests queued before it refuses)


class PeerSetupError(Exception):
    """mosec cannot serve what was asked: the message says why, and what to do."""


def onnx_for(models: Path, model: str) -> Path:
    """The ONNX file mosec serves for ``model`` (``variant@onnx``, its latest version in
    ``models``); PeerSetupError if it is another runtime, untrained or not converted."""
    variant, _, runtime = model.partition("@")
    if runtime != "onnx":
        raise PeerSetupError(f"mosec serves ONNX; pass --model {variant}@onnx")
    try:
        onnx = ModelRepository(models).get(variant).artifact("onnx")
    except RepositoryError as error:
        raise PeerSetupError(f"{error} (make demo trains the models)") from None
    if not onnx.is_file():
        raise PeerSetupError(f"{onnx} is missing (train with --runtimes onnx)")
    return onnx


def check_installed() -> str | None:
    """What is wrong if mosec cannot be imported here, else None."""
    if importlib.util.find_spec("mosec") is None:
        return "mosec is not installed: pip install -e '.[peers]'"
    return None


def command(onnx: Path, port: int, capacity: int = DEFAULT_CAPACITY, *flags: str) -> list[str]:
    """mosec serving ``onnx`` on 127.0.0.1:``port`` (one worker, batches of up to 32, 1 ms),
    with more of mosec's own ``flags`` (``--timeout`` in ms)."""
    return [
        sys.executable,
        str(MOSEC_SERVER),
        "--onnx",
        str(onnx),
        "--port",
        str(port),
        "--address",
        "127.0.0.1",
        "--capacity",
        str(capacity),
        "--log-level",
        "warning",
        *flags,
    ]


def wait_answers(url: str, timeout_s: float = 120.0) -> None:
    """Poll a POST of a blank digit until it answers 200 (mosec's workers start late)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, json={INPUT_NAME: [0.0] * PIXELS}, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s")


@dataclass(frozen=True)
class Peer:
    """A running mosec: where it answers POSTs, and its process (RSS counts its children)."""

    url: str
    pid: int


@contextmanager
def run(
    onnx: Path,
    log: Path,
    capacity: int = DEFAULT_CAPACITY,
    cpus: Collection[int] | None = None,
    *flags: str,
) -> Iterator[Peer]:
    """mosec serving ``onnx`` on a free port, answering; stopped on exit. With ``cpus``, it and
    the processes it starts (its Rust front end, its worker) run only on those CPUs."""
    port = free_port()
    process = start_logged(command(onnx, port, capacity, *flags), log, cpus)
    try:
        wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}{PATH}"
        wait_answers(url)
        yield Peer(url, process.pid)
    finally:
        stop(process)


@contextmanager
def refusing_all(peer: Peer, body: bytes, held: int = 3) -> Iterator[None]:
    """mosec (started with ``--capacity 1`` and a long ``--timeout``) made to answer every
    POST with 429: its Python worker is stopped (SIGSTOP), then ``held`` requests are sent a
    moment apart. The first leaves as a batch for the stopped worker (mosec sends it, and waits
    for the answer before it sends another), the second fills the queue, and every one after is
    refused; those held stay unanswered until exit (the worker then resumes, so it stops
    cleanly)."""
    workers = [
        child
        for child in psutil.Process(peer.pid).children(recursive=True)
        if "spawn_main" in " ".join(child.cmdline())  # not its Rust front end, nor the tracker
    ]
    if not workers:
        raise RuntimeError("mosec's worker process was not found")
    parts = urlsplit(peer.url)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sockets: list[socket.socket] = []
    for worker in workers:
        worker.suspend()
    try:
        for _ in range(held):  # sent whole, never read, each after the last was taken in
            sockets.append(socket.create_connection(("127.0.0.1", parts.port or 80)))
            sockets[-1].sendall(request)
            time.sleep(0.2)  # past the batch window (1 ms): one request, one batch or place
        status = httpx.post(peer.url, content=body, timeout=10).status_code
        if status != SHED_STATUS:
            raise RuntimeError(f"mosec was to refuse every POST, but answered {status}")
        yield
    finally:
        for worker in workers:
            worker.resume()
        for sock in sockets:
            sock.close()
