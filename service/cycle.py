"""uvicorn's request cycle, read and completed outside the ASGI interface.

uvicorn's httptools protocol gives each request a ``RequestResponseCycle``: the body as it
arrives (``body``, ``more_body``), whether the client is gone (``disconnected``) and the
response's state. Going through ASGI's ``receive`` and ``send`` for these costs a request more
than its model does here (docs/benchmarks.md, sections G and R), so the hot path reads and
writes the cycle directly:

* :func:`complete_body`: the body, when it has all arrived, without a stream or a timer;
* :func:`client_gone`: a flag the batcher polls, without awaiting ``receive``;
* :func:`write_answer`: a whole response in one write (``send`` writes the head and the body
  separately, and checks every header for illegal characters).

This module, ``service.protocol`` and its mixin ``service.linger`` are the only ones that
know uvicorn's internals;
pyproject.toml bounds uvicorn's version, and tests/test_cycle.py (a real uvicorn server in a
thread) and tests/test_protocols_http.py (the service) exercise each of these. Each function falls
back to the ASGI way (None, "never gone") when the request did not come through uvicorn (the
test client).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from service.batcher import never

# An inference request's answer, or None if its path is not a hot route
# (``service.fastpath.FastPath.answer``; the protocol writes the answer with write_answer).
HotAnswer = Callable[[Scope, Receive], Awaitable[Response] | None]


def complete_body(request: Request) -> bytes | None:
    """The request's whole body, if it has all arrived and none of it was read yet; else None
    (read it with ``request.stream()``). Saves the common case the stream's machinery and
    its body timeout: with uvicorn the body is in the request's cycle, whose ``more_body``
    says whether more is to come; other servers (the test client) give None."""
    cycle = getattr(request.receive, "__self__", None)
    if (
        not isinstance(cycle, RequestResponseCycle)
        or cycle.more_body
        or cycle.disconnected
        or cycle.response_complete
        or not cycle.message_event.is_set()  # set by each part of the body, cleared by reads
    ):
        return None
    body = bytes(cycle.body)
    cycle.body = bytearray()
    cycle.message_event.clear()  # reading, if paused, resumes in client_gone
    return body


def client_gone(request: Request) -> Callable[[], bool]:
    """A cheap "has the client disconnected?" for the batcher, without awaiting ``receive``.

    uvicorn's ``receive`` is a method of the request's cycle, which keeps a ``disconnected``
    flag; other servers (the test client) give no such flag, and then the answer is "no".
    """
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return never
    if isinstance(cycle, RequestResponseCycle) and not cycle.more_body:
        # The body is in, but its last part may have paused reading (uvicorn's high-water
        # mark, 64 KiB), which only the next ``receive`` would resume: unread, a client that
        # leaves is not seen leaving. Anything read from now is the connection's next request,
        # which uvicorn queues (and pauses reading for) itself.
        cycle.flow.resume_reading()
    return lambda: bool(cycle.disconnected)


def write_answer(cycle: RequestResponseCycle, response: Response) -> None:
    """``response`` (a whole body, no background task) written as uvicorn's ``send`` would,
    in one write; then the cycle is complete. Its headers are our handlers' own, so they skip
    ``send``'s checks for illegal characters."""
    status = response.status_code
    if cycle.access_log:
        scope = cycle.scope
        cycle.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            scope["method"],
            get_path_with_query_string(scope),
            scope["http_version"],
            status,
        )
    content = [STATUS_LINE[status]]
    for name, value in (*cycle.default_headers, *response.raw_headers):
        content += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", bytes(response.body))
    cycle.response_started = cycle.response_complete = True
    cycle.transport.write(b"".join(content))
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
