"""Server-wide admission: shed inference requests at once when too many are in the server.

Under overload the event loop, not the model, is the bottleneck here (an HTTP request costs more
Python time than a batched MNIST model does), so a request that will be refused must be refused
before it costs anything: before routing, before its body is read or parsed. This pure ASGI
middleware counts the POST requests (every inference and /prepare) in the app; when
``max_in_flight`` are already in, the next one gets a pre-encoded 503 with ``Retry-After`` and
its body is left to the HTTP server to discard. Our HTTP protocol (``service.protocol``) counts a
request in earlier, at its headers, and marks its scope ``ADMITTED``; the guard then only counts
it out. GETs (health, metrics, the page) always pass:
they are cheap, and the operator needs them most when the server is overloaded.

The per-model part (a request whose model queue would miss its deadline) is in
``service.batcher.Batcher.admit``, called by the handlers once they know the model, still
before the body is read. Together they follow what TF Serving (``max_enqueued_batches``),
Triton (``max_queue_size``, queue timeouts) and mosec (bounded queues, 429/503 at once) do.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from service.shared import InFlight, LocalInFlight

SHED_BODY = orjson.dumps(
    {
        "error": "overloaded",
        "detail": "the server is at its limit of requests in flight; retry shortly",
    }
)
SHED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(SHED_BODY)).encode()),
    (b"retry-after", b"1"),
]
SHED_START = {"type": "http.response.start", "status": 503, "headers": SHED_HEADERS}
SHED_BODY_MESSAGE = {"type": "http.response.body", "body": SHED_BODY}
# The same answer as raw HTTP/1.1, for service.protocol to write without any ASGI machinery.
SHED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    + b"".join(name + b": " + value + b"\r\n" for name, value in SHED_HEADERS)
    + b"\r\n"
    + SHED_BODY
)

# The scope key service.protocol sets on a request it admitted (counted in) at its headers.
ADMITTED = "mnist_serve.admitted"

# Headers that make a request more than plain: whole_plain_post leaves these to the parser.
PLAIN_ONLY = (b"\r\nconnection:", b"\r\ntransfer-encoding:", b"\r\nexpect:", b"\r\nupgrade:")


def whole_plain_post(data: bytes, max_header_bytes: int) -> bool:
    """Whether ``data`` is exactly one plain HTTP/1.1 POST, body and all: a Content-Length, no
    ``Connection``, ``Transfer-Encoding``, ``Expect`` or ``Upgrade`` header, headers within
    ``max_header_bytes``, and nothing after the body. Such a request can be shed without
    parsing it (``service.protocol``); anything else goes to the HTTP parser."""
    if not data.startswith(b"POST "):
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > max_header_bytes:
        return False
    head = data[:end].lower()
    line_end = head.find(b"\r\n")
    if not head[:line_end].endswith(b" http/1.1") or any(name in head for name in PLAIN_ONLY):
        return False
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return False
    value_end = head.find(b"\r\n", at + 2)
    value = head[at + 17 : value_end if value_end >= 0 else end].strip()
    return value.isdigit() and len(data) == end + 4 + int(value)


class AdmissionGuard:
    """Pure ASGI middleware: at most ``max_in_flight`` POST requests in the server at once.

    The count is ``in_flight``: this process's (:class:`service.shared.LocalInFlight`, the
    default) or, with several worker processes, the server's (``SharedInFlight``).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        on_shed: Callable[[], None] | None = None,
        in_flight: InFlight | None = None,
        on_refused: Callable[[Receive], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.app = app
        self.max_in_flight = max_in_flight
        self.counter = in_flight or LocalInFlight(max_in_flight)
        self._on_shed = on_shed
        # Told of each request shed here, before its answer: service.protocol.hold_refused.
        self._on_refused = on_refused
        # Connections refused at the protocol level and not read since (service.protocol):
        # each callback reads one again (False if it no longer can); one per request that leaves.
        self._held: deque[Callable[[], bool]] = deque(maxlen=65_536)
        self._waiting = 0  # of those, the ones still held (the rest were read or closed)

    @property
    def in_flight(self) -> int:
        """POST requests in the server now."""
        return self.counter.value

    @property
    def full(self) -> bool:
        """Whether the next POST would be shed."""
        return self.counter.value >= self.max_in_flight

    @property
    def waiting(self) -> int:
        """Held connections waiting for room now."""
        return self._waiting

    def hold(self, release: Callable[[], bool]) -> None:
        """Remember a refused connection to read again when a request leaves."""
        self._held.append(release)
        self._waiting += 1

    def unhold(self) -> None:
        """A held connection is read again (room, or its hold ran out) or closed."""
        self._waiting -= 1

    def shed(self) -> None:
        """Count one shed request (here or in service.protocol)."""
        if self._on_shed is not None:
            self._on_shed()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or shed it at once if it is a POST and the server is full."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not scope.get(ADMITTED) and not self.counter.try_enter():
            self.shed()
            if self._on_refused is not None:
                self._on_refused(receive)
            await send(SHED_START)
            await send(SHED_BODY_MESSAGE)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.leave()

    def leave(self) -> None:
        """Count one POST out (here, or where ``service.protocol`` answers it), and read again
        the connection held longest, if any waits."""
        self.counter.leave()
        while self._held and not self._held.popleft()():
            pass  # that one was already released or closed: the next
