"""The lingering close: an early answer reaches a client that is still sending its body.

A request whose connection closes after it (``Connection: close``, HTTP/1.0) and that is
answered before its body has all arrived (404, 413, 503, ...) gets its answer at once, then a
*lingering close*, as nginx does: the answer is followed by a FIN (``write_eof``), the rest of
the body is read and dropped as it comes, and the socket closes when the client closes it or
after ``linger_s``. Closing at once instead would turn the unread body into a TCP reset, which a
client such as urllib reads instead of the answer; waiting for the body before answering made
such clients wait for the body timeout.

:class:`Linger` is a mixin of :class:`service.protocol.GuardedHttpToolsProtocol`, which calls
``_linger_on_close`` once a request's headers are in, drops what arrives while ``lingering``,
and calls ``_end_linger`` when the connection is lost. tests/test_hostile_connections.py
checks it against a real server.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


class _LingeringTransport:
    """The transport as a closing request's cycle sees it: its ``close()`` lingers."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: Linger, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport

    def close(self) -> None:
        """Close, lingering if the request's body is still arriving."""
        self._protocol.linger_close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Linger:
    """A connection's lingering close (``linger_s``, a class attribute, bounds it)."""

    linger_s = 5.0  # how long a lingering close reads a closing client's unread body

    _linger_timer: asyncio.TimerHandle | None = None

    if TYPE_CHECKING:  # what the protocol provides
        cycle: RequestResponseCycle  # None before the first request
        flow: FlowControl
        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport

    @property
    def lingering(self) -> bool:
        """Answered and closing: whatever else arrives is dropped."""
        return self._linger_timer is not None

    def _linger_on_close(self) -> None:
        """A request's headers are in: if its connection closes after it, its answer's close
        lingers (its cycle sees a transport whose ``close()`` is :meth:`linger_close`)."""
        cycle = self.cycle
        if cycle is not None and not cycle.keep_alive:
            cycle.transport = _LingeringTransport(self, self.transport)  # type: ignore[assignment]

    def linger_close(self) -> None:
        """Close after an answer: at once if the request's body is all in, else lingering."""
        cycle, transport = self.cycle, self.transport
        if (
            cycle is None
            or not cycle.more_body
            or transport.is_closing()
            or not transport.can_write_eof()
        ):
            transport.close()
            return
        transport.write_eof()  # the answer, then FIN: the client reads it whole
        self._linger_timer = self.loop.call_later(self.linger_s, transport.close)
        self.flow.resume_reading()  # keep reading, and dropping, the rest of the body

    def _end_linger(self) -> None:
        """The connection is gone: stop the linger's clock."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
