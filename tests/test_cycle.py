"""The protocol answers hot routes itself (``service.protocol``, ``service.cycle``).

A real uvicorn server, in a thread, with the service's protocol and admission guard; its
``hot`` answer (what ``service.fastpath.FastPath.answer`` is in the service) takes the paths
under ``/hot`` and echoes the body, saying whether it came whole (``complete_body``) or had to
be streamed. Everything else goes to a plain ASGI app. Each connection's transport records
its writes, so a test can see an answer written in one piece.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from service.admission import AdmissionGuard
from service.cycle import client_gone, complete_body
from service.protocol import guarded_protocol
from service.settings import Settings
from tests.helpers import serve_in_thread
from tests.test_backpressure import complete

WRITES: list[bytes] = []  # every write of every connection of the server under test


class Recording:
    """A transport that records what is written through it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


SEEN_GONE: list[bool] = []  # per /hot/wait request: whether its client was seen leaving


async def echo(request: Request) -> Response:
    """The body back, and how it was read; ``/hot/fail`` fails outside any error mapping;
    ``/hot/wait`` waits up to 2 s for its client to leave (as a batcher's queue would)."""
    if request.url.path == "/hot/fail":
        raise RuntimeError("a bug")
    body = complete_body(request)
    read = "complete"
    if body is None:
        body, read = await request.body(), "stream"
    if request.url.path == "/hot/wait":
        gone = client_gone(request)
        for _ in range(200):
            if gone():
                break
            await asyncio.sleep(0.01)
        SEEN_GONE.append(gone())
    return Response(body, media_type="application/octet-stream", headers={"x-read": read})


def hot(scope: Any, receive: Any) -> Awaitable[Response] | None:
    """The hot routes: everything under ``/hot``."""
    if scope["path"].startswith("/hot"):
        return echo(Request(scope, receive))
    return None


async def plain_app(scope: Any, receive: Any, send: Any) -> None:
    """What the protocol does not answer itself, through ASGI (head and body sent apart): the
    hot routes too, as the service's app does (a pipelined request comes here)."""
    if scope["type"] != "http":
        return
    if scope["path"].startswith("/hot"):
        await (await echo(Request(scope, receive)))(scope, receive, send)
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]}
    await send(start)
    await send({"type": "http.response.body", "body": b"asgi"})


@pytest.fixture
def served() -> Iterator[tuple[int, AdmissionGuard]]:
    """The server on 127.0.0.1, at most one POST in flight; its port and its guard."""
    guard = AdmissionGuard(plain_app, 1)
    configured = guarded_protocol(Settings(), guard, hot=hot)

    class Recorded(configured):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(Recording(transport))

    WRITES.clear()
    SEEN_GONE.clear()
    with serve_in_thread(guard, Recorded, log_level="critical") as port:
        yield port, guard


def post(path: str, body: bytes = b"digit", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while not complete(answer):
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {answer!r}"
        answer += chunk
    return answer


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_a_hot_answer_is_written_whole_in_one_piece(served: tuple[int, AdmissionGuard]) -> None:
    """Status line, uvicorn's default headers, the response's and the body: one write, the
    body read whole without a stream; the request is counted out of the guard."""
    port, guard = served
    with connect(port) as sock:
        sock.sendall(post("/hot", b"a digit"))
        answer = read_answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK", answer
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers.keys() >= {b"date", b"server", b"content-length", b"content-type"}
    assert headers[b"x-read"] == b"complete"
    assert body == b"a digit"
    assert [answer] == WRITES, "the answer was not written in one piece"
    assert guard.in_flight == 0


def test_the_asgi_path_writes_head_and_body_apart(served: tuple[int, AdmissionGuard]) -> None:
    """The contrast that shows the recording sees pieces: a route that is not hot."""
    port, guard = served
    with connect(port) as sock:
        sock.sendall(post("/cold"))
        answer = read_answer(sock)
    assert answer.endswith(b"\r\n\r\nasgi")
    assert len(WRITES) == 2 and b"".join(WRITES) == answer
    assert guard.in_flight == 0


def test_requests_past_the_limit_one_after_another_are_all_served(
    served: tuple[int, AdmissionGuard],
) -> None:
    """Each hot answer counts its request out: at most one in flight, five in a row pass."""
    port, guard = served
    with connect(port) as sock:
        for n in range(5):
            sock.sendall(post("/hot", b"%d" % n))
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert answer.endswith(b"\r\n\r\n%d" % n)
    assert guard.in_flight == 0


def test_a_closing_request_is_answered_then_closed(served: tuple[int, AdmissionGuard]) -> None:
    port, _ = served
    with connect(port) as sock:
        sock.sendall(post("/hot", extra=b"Connection: close\r\n"))
        answer = read_answer(sock)
        assert b"\r\nconnection: close\r\n" in answer
        assert sock.recv(100) == b""  # then the server closes


def test_a_body_that_comes_later_is_streamed(served: tuple[int, AdmissionGuard]) -> None:
    """Headers now, the body 200 ms later: not whole at first, so read as a stream."""
    port, _ = served
    request = post("/hot", b"late body")
    head, body = request[: -len(b"late body")], request[-len(b"late body") :]
    with connect(port) as sock:
        sock.sendall(head)
        time.sleep(0.2)
        sock.sendall(body)
        answer = read_answer(sock)
    assert b"\r\nx-read: stream\r\n" in answer
    assert answer.endswith(b"\r\n\r\nlate body")


def test_pipelined_requests_are_answered_in_order(served: tuple[int, AdmissionGuard]) -> None:
    """The first is answered by the protocol; the others wait their turn (not counted in at
    their headers, so they go through ASGI)."""
    port, guard = served
    with connect(port) as sock:
        sock.sendall(post("/hot", b"first") + post("/cold") + post("/hot", b"third"))
        answers = b""
        while answers.count(b"HTTP/1.1 200 ") < 3 or not answers.endswith(b"third"):
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
    assert answers.index(b"first") < answers.index(b"asgi") < answers.index(b"third")
    assert WRITES[0].endswith(b"\r\n\r\nfirst")  # the first answered here, in one piece
    assert guard.in_flight == 0


def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("size", [100, 200_000], ids=["small", "over-the-high-water-mark"])
def test_a_client_that_leaves_is_seen_leaving(
    served: tuple[int, AdmissionGuard], size: int
) -> None:
    """A client that sends its request and leaves while it waits: the handler sees it gone
    (the batcher would drop it, a 499), nothing is written, and the guard counts it out. A
    body over uvicorn's high-water mark (64 KiB) paused reading; taken whole, reading must
    resume, or the leaving goes unseen until the answer."""
    port, guard = served
    with connect(port) as sock:
        sock.sendall(post("/hot/wait", b"x" * size))
        time.sleep(0.1)
    wait_for(lambda: len(SEEN_GONE) == 1)
    assert SEEN_GONE == [True]
    assert WRITES == []
    wait_for(lambda: guard.in_flight == 0)


def test_a_failing_answer_is_a_500_and_the_server_serves_on(
    served: tuple[int, AdmissionGuard],
) -> None:
    port, guard = served
    with connect(port) as sock:
        sock.sendall(post("/hot/fail"))
        assert read_answer(sock).startswith(b"HTTP/1.1 500 ")
    with connect(port) as sock:
        sock.sendall(post("/hot"))
        assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
    assert guard.in_flight == 0
