"""Start ``mnist-serve serve`` as a child process on a free loopback port, and wait for it.

Used by the load-test runner (when no ``--url`` is given) and by the end-to-end tests. The
benchmarks' CPU split (``--server-cpus``, ``--load-cpus``) is read here too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

# free_port() releases the port it found before the server binds it: another program may take
# it in between. The server then exits ("cannot listen"), and is started again on new ports.
BIND_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (it may be taken before
    it is bound: see BIND_ATTEMPTS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def readyz(url: str, timeout_s: float = 5.0) -> httpx.Response | None:
    """GET ``url``/readyz; None if no answer came within ``timeout_s``. A server starting with
    several workers answers nothing until its first worker's loop runs: the connection waits in
    the shared socket's backlog (a few seconds on a slow machine), so a wait must ask again."""
    try:
        return httpx.get(f"{url}/readyz", timeout=timeout_s)
    except httpx.TimeoutException:
        return None


def port_taken(log: str) -> bool:
    """Whether a server's log says it could not bind its port."""
    return "cannot listen" in log or "address already in use" in log.lower()


def wait_owned(port: int, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Block until ``process`` (or a process it started) is the one listening on ``port``: a
    connection that succeeds may reach another program that took the port first, while ours
    is still starting (it then exits, unable to bind). RuntimeError if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(process.pid)
            for member in [top, *top.children(recursive=True)]:
                for conn in member.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                        return
        time.sleep(0.05)
    raise TimeoutError(f"the server did not listen on port {port} within {timeout} s")


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Block until ``port`` accepts connections; fail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


@dataclass
class ServerProcess:
    """A running ``mnist-serve serve``."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    grpc_target: str | None = None  # host:port of its KServe V2 gRPC endpoint, when started

    def wait_ready(self, timeout: float = 120.0) -> list[int]:
        """Poll /readyz until 200; return every status seen on the way."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            if (answer := readyz(self.url)) is None:  # still starting, or a busy machine
                continue
            seen.append(answer.status_code)
            if answer.status_code == 200:
                return seen
            time.sleep(0.02)
        raise TimeoutError(f"not ready after {timeout} s: {self.log.read_text()[-3000:]}")


def serve_command(models: Path, port: int, *args: str) -> list[str]:
    """The ``mnist-serve serve`` command line for ``models`` on ``port``, with ``args``."""
    return [
        sys.executable,
        "-m",
        "mnist_serve.cli",
        "serve",
        "--models",
        str(models),
        "--port",
        str(port),
        *args,
    ]


@contextlib.contextmanager
def run_server(
    models: Path,
    log: Path,
    *args: str,
    grpc: bool = False,
    cpus: Collection[int] | None = None,
) -> Iterator[ServerProcess]:
    """Start ``mnist-serve serve`` on a free 127.0.0.1 port (not yet ready); stop it on exit.

    With ``grpc``, its KServe V2 gRPC endpoint listens on another free port. With ``cpus``, the
    server (and every process it starts, which inherit it) may run only on those CPUs; its
    default ``--workers`` counts them.
    """
    for attempt in range(1, BIND_ATTEMPTS + 1):
        port, grpc_port = free_port(), free_port() if grpc else 0
        command = serve_command(models, port, "--host", "127.0.0.1", *args)
        if grpc:
            command += ["--grpc-port", str(grpc_port)]
        process = start_logged(command, log, cpus, {**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for_port(port, process)
            wait_owned(port, process)
            break
        except Exception as err:
            died = process.poll() is not None
            stop(process)
            said = log.read_text(errors="replace")
            if attempt < BIND_ATTEMPTS and died and port_taken(said):
                continue  # another program took a port between free_port() and the bind
            raise RuntimeError(f"{err}\n--- server log ---\n{said[-3000:]}") from err
        except BaseException:  # Ctrl-C, a test's timeout: the server does not outlive us
            stop(process)
            raise
    try:
        grpc_target = f"127.0.0.1:{grpc_port}" if grpc else None
        yield ServerProcess(f"http://127.0.0.1:{port}", process, log, grpc_target)
    finally:
        stop(process)


def start_logged(
    command: list[str],
    log: Path,
    cpus: Collection[int] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output (stdout and stderr) in ``log``; with ``cpus``, it and
    every process it starts may run only on those CPUs."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        return subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )


def stop(process: subprocess.Popen[Any], timeout_s: float = 20.0) -> None:
    """SIGTERM (the server drains), SIGKILL after ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_list(text: str) -> set[int]:
    """CPUs written as taskset writes them: ``0``, ``0,2``, ``0-3``; at least one, all usable
    here (argparse.ArgumentTypeError otherwise)."""
    usable = os.sched_getaffinity(0)
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise argparse.ArgumentTypeError(f"{text!r}: write CPUs as 0, 0,2 or 0-3")
        low, high = int(first), int(last) if dash else int(first)
        if high < low or high > max(usable):
            raise argparse.ArgumentTypeError(
                f"{text!r}: not all of these CPUs are usable here {sorted(usable)}"
            )
        cpus.update(range(low, high + 1))
    if not cpus <= usable:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not all of these CPUs are usable here {sorted(usable)}"
        )
    return cpus


def add_cpu_split(parser: argparse.ArgumentParser) -> None:
    """A benchmark's ``--server-cpus`` and ``--load-cpus``: the servers on one set of CPUs, the
    load generators on another, so that neither takes the other's cycles."""
    parser.add_argument(
        "--server-cpus",
        type=cpu_list,
        help="pin the servers (and every process they start) to these CPUs, e.g. 0 or 0-1; "
        "our default --workers then counts only these; needs --load-cpus",
    )
    parser.add_argument(
        "--load-cpus",
        type=cpu_list,
        help="pin this script and its load generators to these CPUs, e.g. 1",
    )


def check_cpu_split(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """Refuse a half or overlapping split (parser.error); describe it for the report ('' if
    none)."""
    if (args.server_cpus is None) != (args.load_cpus is None):
        parser.error("--server-cpus and --load-cpus go together")
    if args.server_cpus is None:
        return ""
    if args.server_cpus & args.load_cpus:
        parser.error("--server-cpus and --load-cpus must not overlap")
    return f"servers on CPUs {sorted(args.server_cpus)}, load on {sorted(args.load_cpus)}"
