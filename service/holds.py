"""The holds: a client that resends at once while the server is full waits unread in its socket.

A retry storm (clients resending at once after every 503, ignoring ``Retry-After``) would spend
the server's time on refusals. So a connection refused for overload is held: its next request,
if it comes too soon, is not parsed and the socket not read (TCP backpressure) until a request
leaves the server (the admission guard calls the release) or the hold passes. A client just
served while others are held queues behind them the same way.

:class:`Holds` is a mixin of :class:`service.protocol.GuardedHttpToolsProtocol`, which calls
``_hold`` after a refusal, ``_queue_behind`` after an answer, and ``_held`` first thing in
``data_received``. The measurements behind the rules are in docs/benchmarks.md, sections L to N.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.admission import AdmissionGuard

HOLD_S = 0.05  # how long a refused client's next request may first wait unread for room
# A request this soon after its connection's answer was sent at once (only a closed-loop
# client or a retry storm is this fast): after an answer, while the server is full and others
# are held, it queues behind them (_queue_behind); after a 503, with hold_resends_only, it is
# the only one held (_hold).
RESEND_WINDOW_S = 0.005
MAX_DOUBLINGS = 16  # a hold doubles per refusal in a row; 50 ms x 2**16 is far past any ceiling


class Holds:
    """A connection's holds (the protocol's class attributes configure them)."""

    hold_s = HOLD_S
    max_hold_s = 1.0  # at most: the 503's Retry-After
    queue_window_s = RESEND_WINDOW_S
    hold_resends_only = False  # --shed-hold resends: _hold holds only an immediate resend

    _hold_timer: asyncio.TimerHandle | None = None
    _refusals_in_a_row = 0
    _holds = 0  # holds so far: a release meant for an earlier one does nothing
    _hold_until = 0.0  # loop time until which a refused client's next request waits unread
    _hold_wait = 0.0  # if set, how long that request then waits (queued behind held clients)
    _pending = b""  # what a held client sent, parsed on its release

    if TYPE_CHECKING:  # what the protocol provides
        guard: AdmissionGuard | None
        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport

        def data_received(self, data: bytes) -> None:
            """Feed the parser (a released hold hands over what it kept)."""

    def _hold(self) -> None:
        """A client was just refused: what it sends within its hold waits unread.

        The hold is ``hold_s``, doubled for each refusal in a row of a request that came too
        early, up to the ``Retry-After`` second the 503 asked for. A request arriving within it
        (a client resending at once, ignoring Retry-After: a retry storm) is not parsed: reading
        stops until the server has room again (a request leaves) or the hold passes, so the
        storm waits in its sockets instead of eating the capacity it wants (TCP backpressure).
        A request arriving after it is served as any other: a client that waited, or an
        open-loop client reusing the connection later, is not delayed at all.

        With ``hold_resends_only`` (``--shed-hold resends``) only a request sent within
        ``queue_window_s`` of the 503 is held: an open-loop client reusing its connections
        every few tens of ms is then refused at once rather than held, at some goodput
        (docs/benchmarks.md, section N).
        """
        # The doubling stops at the ceiling: past 1,024 refusals in a row, 2**n would overflow
        # a float (OverflowError in data_received, the connection lost).
        doubled = self.hold_s * 2.0 ** min(self._refusals_in_a_row, MAX_DOUBLINGS)
        hold = min(doubled, self.max_hold_s)
        self._refusals_in_a_row += 1
        if self.hold_resends_only:  # only a request sent at once waits, for the whole hold
            self._hold_until = self.loop.time() + self.queue_window_s
            self._hold_wait = hold
        else:
            self._hold_until = self.loop.time() + hold
            self._hold_wait = 0.0

    def _queue_behind(self) -> None:
        """A client just served, while the server is full and refused clients wait for room:
        its next request, if it comes at once (within ``queue_window_s``: a closed-loop client,
        a retry storm), waits unread behind them, as if refused, but without the 503 and the
        resend, which would only take the room the next in line is owed. It is parsed when
        room comes to it or after ``hold_s``. A request that comes later (an open-loop client
        reusing the connection) is read at once, as any other."""
        self._hold_until = self.loop.time() + self.queue_window_s
        self._hold_wait = self.hold_s

    def _held(self, data: bytes) -> bool:
        """Whether ``data`` arrived within a hold (then it waits, unread, for the release)."""
        if self._hold_timer is not None:  # already holding: more of the same request
            self._pending += data
            return True
        wait = self._hold_until - self.loop.time()
        self._hold_until = 0.0
        if self._hold_wait and wait > 0:  # queued behind held clients: a short window, a wait
            wait = self._hold_wait
        self._hold_wait = 0.0
        if wait <= 0:
            self._refusals_in_a_row = 0  # it waited its hold: a new start
            return False
        self._pending = data
        self.transport.pause_reading()
        self._holds += 1
        release = partial(self._release, self._holds)
        self._hold_timer = self.loop.call_later(wait, release)
        if self.guard is not None:
            self.guard.hold(release)
        return True

    def _end_hold(self) -> None:
        """Stop the hold's timer, and tell the guard this connection no longer waits."""
        assert self._hold_timer is not None
        self._hold_timer.cancel()
        self._hold_timer = None
        if self.guard is not None:
            self.guard.unhold()

    def _release(self, hold: int) -> bool:
        """End hold number ``hold``: parse what waited, read again (False if that hold is over,
        or the connection closed)."""
        if self._hold_timer is None or hold != self._holds:
            return False
        self._end_hold()
        if self.transport.is_closing():
            return False
        pending, self._pending = self._pending, b""
        self.transport.resume_reading()
        if pending:
            self.data_received(pending)  # now, before anything newer from the socket
        return True
