"""A service started for explore and tune: ``mnist-serve serve`` on 127.0.0.1, ready, stopped
on exit, with a patient wait (many models load on a busy 2-core machine)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from loadtests.procs import run_server
from loadtests.runner import LoadTestError

READY_WAIT_S = 300.0  # dozens of models load and warm up before /readyz says 200


@contextmanager
def service(models: Path, out: Path, *args: str) -> Iterator[str]:
    """The base URL of a service serving ``models`` with ``args``, once ready; its log in
    ``out/server.log``. LoadTestError if it exits or is not ready in :data:`READY_WAIT_S`."""
    log = out / "server.log"
    try:
        with run_server(models, log, *args) as server:
            deadline = time.monotonic() + READY_WAIT_S
            while True:
                if server.process.poll() is not None:
                    raise LoadTestError(
                        f"the service exited (log: {log}):\n{log.read_text()[-2000:]}"
                    )
                try:
                    if httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass  # busy loading: ask again
                if time.monotonic() > deadline:
                    raise LoadTestError(
                        f"the service was not ready in {READY_WAIT_S:.0f} s (log: {log})"
                    )
                time.sleep(0.2)
            yield server.url
    except RuntimeError as err:  # run_server: it exited before listening
        raise LoadTestError(f"the service did not start (log: {log}):\n{err}") from err
