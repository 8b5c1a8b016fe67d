"""A service started for explore and tune: ``mnist-serve serve`` on 127.0.0.1, ready, stopped
on exit, with a patient wait (many models load on a busy 2-core machine)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from loadtests.procs import ServerProcess, run_server
from loadtests.runner import LoadTestError

READY_WAIT_S = 300.0  # dozens of models load and warm up before /readyz says 200


@contextmanager
def service(models: Path, out: Path, *args: str) -> Iterator[str]:
    """The base URL of a service serving ``models`` with ``args``, once ready; its log in
    ``out/server.log``. LoadTestError if it exits (before it is ready, or during the
    measurement: a connection then refused) or is not ready in :data:`READY_WAIT_S`."""
    log = out / "server.log"
    with ExitStack() as stack:
        try:
            server = stack.enter_context(run_server(models, log, *args))
        except RuntimeError as err:  # run_server: it exited before listening
            raise LoadTestError(f"the service did not start (log: {log}):\n{err}") from err
        wait_ready(server, log)
        try:
            yield server.url
        except OSError as err:  # the measurement lost the service: did it exit?
            try:  # a process that just died may not be reaped yet: give it a moment
                server.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                raise err from None  # alive: some other network error

            raise LoadTestError(
                f"the service exited during the measurement ({err}; log: {log}):\n"
                f"{log.read_text()[-2000:]}"
            ) from err


def wait_ready(server: ServerProcess, log: Path) -> None:
    """Until ``/readyz`` says 200; LoadTestError if the server exits or takes too long."""
    deadline = time.monotonic() + READY_WAIT_S
    while True:
        if server.process.poll() is not None:
            raise LoadTestError(f"the service exited (log: {log}):\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # busy loading: ask again
        if time.monotonic() > deadline:
            raise LoadTestError(f"the service was not ready in {READY_WAIT_S:.0f} s (log: {log})")
        time.sleep(0.2)
