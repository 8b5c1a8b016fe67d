"""A refused client's retry waits unread in its socket (service.protocol's hold); a whole plain
POST is shed before the HTTP parser. (The server-wide admission count across processes:
test_shared_admission.py.)

The hold is tested on a real uvicorn server, in a thread, with the service's protocol and
admission guard around a small ASGI app: ``/block`` holds its request until the test lets it
go, ``/slow`` takes 150 ms, and ``/refuse`` refuses as a handler refusing for overload does
(``hold_refused``). The protocol and the guard are the pieces under test; the app only makes
the server full.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service import holds
from service.admission import AdmissionGuard
from service.protocol import GuardedHttpToolsProtocol, guarded_protocol, hold_refused
from service.settings import Settings
from tests.helpers import serve_in_thread

OK = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
REFUSED = {"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"4")]}


class Gate:
    """Lets ``/block`` requests go when opened (from the test's thread)."""

    def __init__(self) -> None:
        self.open = threading.Event()


async def _read_body(receive: Any) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


def make_app(gate: Gate) -> Any:
    """The ASGI app behind the guard."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _read_body(receive)
        if scope["path"] == "/block":
            while not gate.open.is_set():
                await asyncio.sleep(0.005)
        if scope["path"] == "/slow":
            await asyncio.sleep(0.15)
        if scope["path"] == "/refuse":
            hold_refused(receive)
            await send(REFUSED)
            await send({"type": "http.response.body", "body": b"full"})
            return
        await send(OK)
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.fixture
def served() -> Iterator[tuple[int, Gate, type[GuardedHttpToolsProtocol]]]:
    """A real uvicorn server on 127.0.0.1 with the service's protocol, ``max_in_flight`` 1."""
    gate = Gate()
    guard = AdmissionGuard(make_app(gate), 1, on_refused=hold_refused)
    protocol = guarded_protocol(Settings(), guard)
    with serve_in_thread(guard, protocol) as port:
        try:
            yield port, gate, protocol
        finally:
            gate.open.set()  # before the server stops: it waits for its requests


# The holds are scaled up 10x from the service's in the tests that time them: a hold is counted
# from the refusal and a wait from the resend, so on a busy machine whatever delays the resend
# comes off the wait. At 500 ms a 10 % margin is 50 ms; at 50 ms it was 5 ms.
HOLD_S = 10 * holds.HOLD_S
AT_ONCE_S = 0.25  # an answer not held: well under one hold


def slow_holds(protocol: type[GuardedHttpToolsProtocol]) -> None:
    """The holds of ``protocol`` scaled to :data:`HOLD_S`."""
    protocol.hold_s, protocol.max_hold_s = HOLD_S, 10 * HOLD_S


def post(path: str) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}" % path.encode()


def exchange(sock: socket.socket, path: str) -> tuple[int, float]:
    """Send one POST on ``sock``; its status and how long its answer took."""
    started = time.perf_counter()
    sock.sendall(post(path))
    answer = b""
    while not complete(answer):
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection"
        answer += chunk
    return int(answer.split(b" ", 2)[1]), time.perf_counter() - started


def complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole response (headers and Content-Length bytes)."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    return length is not None and len(body) >= int(length.group(1))


@pytest.mark.parametrize("url", [b"http://", b"http://a:99999/x", b"http://a"])
def test_a_url_uvicorn_cannot_split_is_400_and_frees_its_slot(
    served: tuple[int, Gate, type[GuardedHttpToolsProtocol]], url: bytes
) -> None:
    """httptools parses these request lines, uvicorn then fails to split the URL and answers
    400: the POST, counted in at its headers, must be counted out, or after ``max_in_flight``
    of them (1 here) every POST would get 503 until a restart."""
    port, _, _ = served
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST " + url + b" HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400"), answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert exchange(sock, "/ok")[0] == 200


@pytest.mark.slow
def test_a_client_refused_at_the_protocol_waits_unread_and_longer_each_time(
    served: tuple[int, Gate, type[GuardedHttpToolsProtocol]],
) -> None:
    """The server is full: a retry sent at once is read only after the hold (then twice as
    long), not at once; when the blocking request leaves, a held client is read at once."""
    port, gate, protocol = served
    slow_holds(protocol)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as blocker,
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        blocker.sendall(post("/block"))
        time.sleep(0.1)
        first = exchange(client, "/predict")
        second = exchange(client, "/predict")
        third = exchange(client, "/predict")
        assert [first[0], second[0], third[0]] == [503, 503, 503]
        assert first[1] < AT_ONCE_S  # refused at once
        assert second[1] >= 0.9 * HOLD_S  # held
        assert third[1] >= 1.9 * HOLD_S  # held twice as long: the second refusal in a row
        # Now a long hold, cut short by the blocker leaving:
        protocol.hold_s = protocol.max_hold_s = 5.0
        exchange(client, "/predict")  # waits out its 2 s hold, refused: now held for 5 s
        client.sendall(post("/predict"))
        time.sleep(0.2)
        gate.open.set()
        started = time.perf_counter()
        answer = b""
        while not complete(answer):
            answer += client.recv(4096)
        waited = time.perf_counter() - started
        assert answer.startswith(b"HTTP/1.1 200") and waited < 2.0, (answer, waited)
        assert blocker.recv(4096).startswith(b"HTTP/1.1 200")


@pytest.mark.slow
def test_a_client_refused_by_the_app_is_held_too(
    served: tuple[int, Gate, type[GuardedHttpToolsProtocol]],
) -> None:
    """A handler refusing for overload (hold_refused) holds the connection as the protocol's
    own refusal does; a served request resets the doubling."""
    port, _, protocol = served
    slow_holds(protocol)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        refused = exchange(client, "/refuse")
        held = exchange(client, "/refuse")
        held_longer = exchange(client, "/predict")
        served_after = exchange(client, "/predict")
        assert [refused[0], held[0], held_longer[0], served_after[0]] == [503, 503, 200, 200]
        assert refused[1] < AT_ONCE_S and held[1] >= 0.9 * HOLD_S
        assert held_longer[1] >= 1.9 * HOLD_S
        assert served_after[1] < AT_ONCE_S  # read at once: served, not refused, before it
        again = exchange(client, "/refuse")
        after_reset = exchange(client, "/predict")
        assert again[0] == 503  # then one hold again, not four
        assert 0.9 * HOLD_S <= after_reset[1] < 1.9 * HOLD_S, after_reset


@pytest.mark.slow
def test_a_client_that_waits_its_hold_out_is_not_delayed(served: tuple[int, Gate, type]) -> None:
    """Only a request that comes within the hold waits: one sent after it (a client that
    honoured the wait, or an open-loop client reusing the connection later) is read at once,
    and the doubling starts again."""
    port, _, protocol = served
    slow_holds(protocol)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        assert exchange(client, "/refuse")[0] == 503
        assert exchange(client, "/refuse")[1] >= 0.9 * HOLD_S  # too early: held
        time.sleep(2.4 * HOLD_S)  # past its hold, now twice as long
        later = exchange(client, "/refuse")
        assert later[0] == 503 and later[1] < AT_ONCE_S, later
        assert 0.9 * HOLD_S <= exchange(client, "/predict")[1] < 1.9 * HOLD_S  # one hold again


@pytest.mark.slow
def test_with_shed_hold_resends_only_an_immediate_resend_waits(
    served: tuple[int, Gate, type[GuardedHttpToolsProtocol]],
) -> None:
    """``--shed-hold resends``: a request sent after the resend window (an open-loop client
    reusing the connection) is read at once, where the default holds it; one sent at once waits
    the whole hold, doubling in a row. (The window and holds are scaled up 10x, so that a busy
    machine cannot make an immediate resend look late.)"""
    port, _, protocol = served
    assert not protocol.hold_resends_only  # the default holds every request within the hold
    assert guarded_protocol(Settings(shed_hold="resends")).hold_resends_only
    protocol.hold_resends_only = True
    protocol.queue_window_s, protocol.hold_s, protocol.max_hold_s = 0.05, 0.5, 5.0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        assert exchange(client, "/refuse")[0] == 503
        time.sleep(0.1)  # past the 50 ms window, within the 500 ms hold
        later = exchange(client, "/refuse")
        assert later[0] == 503 and later[1] < 0.3, later  # read at once, not held 400 ms
        assert exchange(client, "/refuse")[1] >= 0.45  # sent at once: held 500 ms
        assert exchange(client, "/predict")[1] >= 0.95  # at once again: held 1 s


def test_a_served_client_queues_behind_the_held_ones(
    served: tuple[int, Gate, type[GuardedHttpToolsProtocol]],
) -> None:
    """Full, with a refused client waiting for room: the next request of a client just served
    (a retry storm's closed loop) waits unread behind it, and is served after it, instead of
    being refused at once and taking the room the held client was owed."""
    port, gate, protocol = served
    protocol.hold_s = protocol.max_hold_s = 5.0  # nobody's hold runs out during the test
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as served_client,
        socket.create_connection(("127.0.0.1", port), timeout=10) as refused_client,
    ):
        served_client.sendall(post("/block"))
        time.sleep(0.1)
        assert exchange(refused_client, "/predict")[0] == 503
        refused_client.sendall(post("/slow"))  # within its hold: waits unread for room
        time.sleep(0.1)
        gate.open.set()
        answer = b""
        while not complete(answer):
            answer += served_client.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        status, waited = exchange(served_client, "/predict")  # sent at once, as a storm does
        assert status == 200, "refused instead of queued behind the held client"
        assert waited >= 0.1  # it waited for the held client's 150 ms request
        answer = b""
        while not complete(answer):
            answer += refused_client.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")


class FakeTransport(asyncio.Transport):
    """What the protocol writes, for a protocol driven without a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )


def test_a_post_is_counted_in_when_its_headers_are_parsed() -> None:
    """Two POSTs read in one loop turn, before either's ASGI task has run, with room for one:
    the first is counted from its headers, so the second is refused there and then (counted
    only in its task, both would pass the protocol and the second would cost a task)."""
    guard = AdmissionGuard(make_app(Gate()), 1, on_refused=hold_refused)
    protocol = guarded_protocol(Settings(), guard)
    config = uvicorn.Config(guard, http=protocol, lifespan="off", log_level="warning")
    loop = asyncio.new_event_loop()
    connections = [protocol(config, ServerState(), {}, loop) for _ in range(2)]
    transports = [FakeTransport(), FakeTransport()]
    try:
        for connection, transport in zip(connections, transports, strict=True):
            connection.connection_made(transport)
        for connection in connections:
            connection.data_received(post("/predict"))
        assert guard.in_flight == 1 and transports[0].written == b""  # its task not run yet
        assert transports[1].written.startswith(b"HTTP/1.1 503")
        loop.run_until_complete(asyncio.sleep(0.05))  # the first one's task runs
        assert transports[0].written.startswith(b"HTTP/1.1 200") and guard.in_flight == 0
    finally:
        for connection in connections:
            connection.connection_lost(None)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def test_a_whole_plain_post_is_shed_without_parsing(
    served: tuple[int, Gate, type[GuardedHttpToolsProtocol]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the server is full, a plain POST that arrives whole is refused without reaching
    the HTTP parser (the cheapest refusal); anything less plain (chunked, Connection: close)
    goes through the parser and is refused there, as before."""
    port, _, _ = served
    parsed: list[bytes] = []
    feed = HttpToolsProtocol.data_received

    def counting(self: HttpToolsProtocol, data: bytes) -> None:
        parsed.append(data)
        feed(self, data)

    monkeypatch.setattr(HttpToolsProtocol, "data_received", counting)
    chunked = (
        b"POST /predict HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as blocker,
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
        socket.create_connection(("127.0.0.1", port), timeout=10) as other,
    ):
        blocker.sendall(post("/block"))
        time.sleep(0.1)
        before = len(parsed)
        assert exchange(client, "/predict")[0] == 503
        assert len(parsed) == before  # shed before the parser
        other.sendall(chunked)
        answer = b""
        while not complete(answer):
            answer += other.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and len(parsed) > before


def test_a_long_run_of_refusals_holds_at_the_ceiling_without_overflow() -> None:
    """Thousands of refusals in a row on one connection (a server full for minutes): the hold
    stays at its ceiling; 2**1024 once overflowed a float inside data_received."""

    class Clock:
        def time(self) -> float:
            return 100.0

    connection = holds.Holds()
    connection.loop = Clock()  # type: ignore[assignment]
    connection._refusals_in_a_row = 5_000
    connection._hold()
    assert connection._hold_until == 100.0 + connection.max_hold_s
    assert connection._refusals_in_a_row == 5_001
