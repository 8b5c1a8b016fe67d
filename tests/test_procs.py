"""Waiting for a server (``loadtests.procs.readyz``): a server whose socket accepts but whose
workers do not run yet (the supervisor's shared socket during start-up) reads as not ready, at
once, so a wait asks again instead of failing."""

from __future__ import annotations

import socket
import time

from loadtests.procs import readyz


def test_a_socket_that_queues_connections_but_answers_nothing_reads_as_not_ready() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # connections wait in the backlog: nothing accepts them
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = time.monotonic()
        assert readyz(url, timeout_s=0.3) is None
        assert time.monotonic() - started < 3
