"""uvicorn's fast HTTP protocol (httptools), with the limits it lacks against hostile clients.

uvicorn's httptools protocol bounds neither the size nor the number of headers, and a
connection that sends nothing, or half a request line, stays open for ever (its keep-alive
timeout only runs between requests). This subclass adds, per connection:

* a header timeout: a new connection must complete its first request's headers, and a
  request once begun must complete its headers, within ``header_timeout_s``, else the
  connection is closed;
* a limit on open connections (``max_connections``, like nginx's ``worker_connections``): one
  more gets 503 to its first request and is closed, while the open ones carry on;
* a limit on the bytes of an unfinished request line and headers (``max_header_bytes``) and on
  the number of headers (``max_headers``): past either, 431 and the connection is closed.

And it sheds load at the cheapest point there is: a POST is counted in by the admission guard
(``service.admission``) as soon as its headers are parsed, so the requests read in one loop turn
see each other; one that finds the guard full is answered with the guard's pre-encoded 503 right
there, with no ASGI task, no request cycle and no middleware, and its body is discarded as it
arrives. (Only on an otherwise idle keep-alive connection, so responses stay in order; anything
else takes the normal path, where the guard counts it in or sheds it.) A refused client's
immediate retry, and a just-served client's immediate next request while refused ones wait, wait
unread in their sockets (the holds, ``service.holds``).

And it never makes an early answer wait: a request whose connection closes after it and that
is answered before its body has all arrived gets its answer at once, then a lingering close,
as nginx does (``service.linger``).

And it answers the hot routes itself: a POST it counted in at its headers whose path is an
inference route (``hot``, the fast path's ``answer``) gets no ASGI task; the handler is called
directly and its response written in one piece (``service.cycle.write_answer``), with the
guard counting the request out after. Anything else (a pipelined request, any other route)
goes to the app through uvicorn's cycle as before.

It hooks the protocol's documented parser callbacks (``on_message_begin``, ``on_header``,
``on_headers_complete``) and ``data_received``; tests/test_hostile_connections.py checks each
limit against a real server, so an uvicorn upgrade that changes them fails there. (uvicorn's
h11 protocol has a size limit but runs 2-3x slower.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

from starlette.responses import Response
from starlette.types import Receive
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.admission import ADMITTED, SHED_RESPONSE, AdmissionGuard, whole_plain_post
from service.cycle import HotAnswer, write_answer
from service.holds import Holds
from service.linger import Linger
from service.settings import Settings
from service.shared import SharedState

log = logging.getLogger(__name__)

TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: 25\r\n\r\ntoo many open connections"
)


class GuardedHttpToolsProtocol(Holds, Linger, HttpToolsProtocol):
    """HttpToolsProtocol with header size, count and time limits (the class attributes), the
    holds (:class:`~service.holds.Holds`) and the lingering close
    (:class:`~service.linger.Linger`)."""

    header_timeout_s = 10.0
    max_header_bytes = 16_384
    max_headers = 100
    max_connections = 4096
    guard: AdmissionGuard | None = None  # shed POSTs here when it is full
    # With several worker processes, the server-wide count of open connections (else this
    # process's own, ``len(self.connections)``).
    shared: SharedState | None = None
    process = 0
    # The hot routes' answers (``service.fastpath.FastPath.answer``): an admitted POST to one
    # is answered here, written in one piece, without the ASGI layers (``_answer_hot``).
    hot: HotAnswer | None = None

    _header_timer: asyncio.TimerHandle | None = None
    # From the connection's start, or a request's first byte, until its headers are complete.
    # (Between requests uvicorn's keep-alive timeout applies; the rest of a body answered
    # early, 413 say, is read and discarded by uvicorn and is not counted as headers.)
    _in_headers = True
    _header_bytes = 0
    _header_count = 0
    _refusal = ""
    _over_limit = False
    _in_message = False  # the parser is inside a request (its headers or body)
    _hold_after_answer = False  # the app refused the request being answered (hold_refused)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse a connection over the limit; else start the clock for its first headers."""
        super().connection_made(transport)
        if self.shared is not None:
            self.shared.add_connection(self.process, 1)
            open_now = self.shared.connections()
        else:
            open_now = len(self.connections)
        # Answered once its first request's headers are in (closing before reading them would
        # reset the connection under the client's feet, losing the 503).
        self._over_limit = open_now > self.max_connections
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the header clock with the connection."""
        self._cancel_header_timer()
        self._end_linger()
        if self._hold_timer is not None:
            self._end_hold()
        if self.shared is not None:
            self.shared.add_connection(self.process, -1)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; count what arrives while the headers are still incomplete."""
        if self.transport.is_closing() or self.lingering:
            return  # refused, or answered and lingering: whatever else arrives is dropped
        if (self._hold_until or self._hold_timer is not None) and self._held(data):
            return  # a refused client resending within its hold: parsed on its release
        guard = self.guard
        if guard is not None and guard.full and not self._in_message and self._shed_whole(data):
            return
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            # The chunk that completes the headers is not counted (it may carry a body).
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(f"request headers over {self.max_header_bytes:,} bytes")

    def on_message_begin(self) -> None:
        """A new request (keep-alive or pipelined): its headers get the header clock too."""
        self._in_message = True
        super().on_message_begin()
        self._in_headers, self._header_bytes, self._header_count = True, 0, 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the headers."""
        self._header_count += 1
        if self._header_count > self.max_headers:
            # Stops the parser: uvicorn catches the parser error and calls send_400_response.
            self._refusal = f"more than {self.max_headers} headers"
            raise OverflowError(self._refusal)
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours (431) when a header limit stopped it."""
        if self._refusal:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        """Headers in: stop the clock, shed if the server is full, else hand over to uvicorn."""
        self._in_headers = False
        self._cancel_header_timer()
        if self._over_limit:
            log.warning("refusing a connection: over %d are open", self.max_connections)
            self.transport.write(TOO_MANY_CONNECTIONS)
            self.transport.close()
            return
        guard = self.guard
        if (
            guard is not None
            and self.parser.get_method() == b"POST"
            and (self.cycle is None or self.cycle.response_complete)  # nothing else pending
            and not self.parser.should_upgrade()
        ):
            # Admit it here, so that the next request parsed in this loop turn sees it counted
            # (its ASGI task, where the guard would count it, has not run yet); the guard
            # counts it out when the app is done.
            if guard.counter.try_enter():
                self.scope[ADMITTED] = True  # type: ignore[literal-required]
            elif self.parser.should_keep_alive():
                self._shed_at_headers(guard)
                return
        try:
            super().on_headers_complete()
        except BaseException:
            # uvicorn could not make a request of it (a URL httptools parsed but cannot split,
            # as "http://a:99999/x"): it answers 400 and closes; the slot must not stay taken.
            if guard is not None and self.scope.pop(ADMITTED, False):  # type: ignore[misc]
                guard.leave()
            raise
        self._linger_on_close()  # if the connection closes after this request

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """Start the request: a hot route admitted at its headers is answered here, anything
        else by the app."""
        hot, scope, guard = self.hot, cycle.scope, self.guard
        if hot is not None and guard is not None and app is self.app and scope.get(ADMITTED):
            try:
                answer = hot(scope, cycle.receive)  # type: ignore[arg-type]
            except BaseException:
                # Counted in at its headers, and going nowhere now (once: the caller's own
                # handler, in on_headers_complete, finds the mark gone).
                scope.pop(ADMITTED, None)  # type: ignore[misc]
                guard.leave()
                raise
            if answer is not None:
                task = self.loop.create_task(self._answer_hot(cycle, answer))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
        super()._start_asgi_task(cycle, app)

    async def _answer_hot(self, cycle: RequestResponseCycle, answer: Awaitable[Response]) -> None:
        """What uvicorn's ``run_asgi`` and the guard would do around a hot route's handler, with
        the status line, headers and body written at once (one system call, not two).

        Unlike ``run_asgi``, it runs no wrapper uvicorn may put around the app (the proxy
        headers middleware, off here; the message logger of ``--log-level trace``) and ignores
        ``reset_contextvars`` (off here)."""
        try:
            response = await answer
            if response.background is not None or not hasattr(response, "body"):
                await response(cycle.scope, cycle.receive, cycle.send)  # type: ignore[arg-type]
            else:
                if cycle.flow.write_paused and not cycle.disconnected:
                    await cycle.flow.drain()
                if not cycle.disconnected:
                    write_answer(cycle, response)
        except BaseException as exc:
            cycle.logger.error("Exception in ASGI application", exc_info=exc)  # as uvicorn
            if not cycle.response_started:
                await cycle.send_500_response()
            else:
                cycle.transport.close()
        finally:
            cycle.on_response = lambda: None
            assert self.guard is not None  # hot routes are answered here only behind a guard
            self.guard.leave()

    def _shed_at_headers(self, guard: AdmissionGuard) -> None:
        """The pre-encoded 503 for a POST whose headers are in, with no request cycle."""
        guard.shed()
        self.transport.write(SHED_RESPONSE)
        # A request already answered: uvicorn's body callbacks drop its body as it comes.
        self.cycle = SimpleNamespace(  # type: ignore[assignment]
            response_complete=True,
            disconnected=False,
            keep_alive=True,
            message_event=asyncio.Event(),
        )
        self._hold_after_answer = True
        self.on_response_complete()

    def on_message_complete(self) -> None:
        """The request is all in: the parser is between requests again."""
        self._in_message = False
        super().on_message_complete()

    def _shed_whole(self, data: bytes) -> bool:
        """Shed a whole plain POST (``service.admission.whole_plain_post``) that arrives on a
        connection with nothing of its own in flight, without parsing it: the cheapest refusal
        there is, when it matters most (the server is full). Anything else (False) goes to the
        parser, which sheds it just after its headers (``on_headers_complete``)."""
        cycle = self.cycle
        if self._over_limit or self.pipeline or (cycle is not None and not cycle.response_complete):
            return False
        if not whole_plain_post(data, self.max_header_bytes):
            return False
        guard = self.guard
        assert guard is not None
        guard.shed()
        self.transport.write(SHED_RESPONSE)
        self.server_state.total_requests += 1
        self._in_headers = False
        self._cancel_header_timer()
        if self.timeout_keep_alive_task is not None:  # idle from now, as after an answer
            self.timeout_keep_alive_task.cancel()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self._hold()
        return True

    def on_response_complete(self) -> None:
        """Start the next request, unless the connection is lingering to its close; after a
        refusal by the app (:func:`hold_refused`), hold the connection as a refusal here does."""
        if self.lingering:
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if self._hold_after_answer:
            self._hold_after_answer = False
            if self.guard is not None and not self.transport.is_closing():
                self._hold()
        else:
            self._refusals_in_a_row = 0  # served: the next refusal holds briefly again
            guard = self.guard
            if guard is not None and guard.full and guard.waiting:
                self._queue_behind()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            log.info("closing a connection: its headers took over %gs", self.header_timeout_s)
            self.transport.close()

    def _refuse(self, reason: str) -> None:
        if self.transport.is_closing():
            return
        log.info("refusing a request: %s", reason)
        body = reason.encode()
        self.transport.write(TOO_LARGE % (len(body), body))
        self.transport.close()
        self._in_headers = False
        self._cancel_header_timer()


def guarded_protocol(
    settings: Settings,
    guard: AdmissionGuard | None = None,
    shared: SharedState | None = None,
    process: int = 0,
    hot: HotAnswer | None = None,
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with the settings' limits (and the app's admission guard, to shed
    at the protocol level, and its hot routes, to answer them here), for
    ``uvicorn.Config(http=...)``."""
    return type(
        "ConfiguredHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_header_bytes": settings.max_header_bytes,
            "max_headers": settings.max_headers,
            "max_connections": settings.max_connections,
            "hold_resends_only": settings.shed_hold == "resends",
            "guard": guard,
            "shared": shared,
            "process": process,
            "hot": staticmethod(hot) if guard is not None and hot is not None else None,
        },
    )


def hold_refused(receive: Receive) -> None:
    """Once the request ``receive`` belongs to is answered, hold its connection unread.

    For requests refused for overload after the protocol let them in (by the admission guard,
    or because the model's queue would miss its deadline): they cost a request cycle already,
    but their client's next retry need not. uvicorn's ``receive`` is a method of the request's
    cycle, whose ``on_response`` is the protocol's ``on_response_complete``; with another
    server (the test client) this does nothing.
    """
    cycle = getattr(receive, "__self__", None)
    protocol = getattr(getattr(cycle, "on_response", None), "__self__", None)
    if isinstance(protocol, GuardedHttpToolsProtocol) and protocol.cycle is cycle:
        protocol._hold_after_answer = True
