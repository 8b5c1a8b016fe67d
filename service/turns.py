"""A batch's answers handed back one per turn of the event loop while the server sheds.

A batch of 32 that comes back resolves 32 futures. Resolved at once, they wake 32 handlers in
the same turn of the event loop, and their rendering and writing (about 0.1 ms each) then holds
the loop for several milliseconds without reading a socket. Under overload, a request the
server would refuse at once waits all that time for its 503: at 4x on one core, the 503s took
6-9 ms at the median and 16-35 ms at p99 (docs/benchmarks.md, section AO). Handed back one per
turn, the loop polls its sockets between two answers, and a refusal waits for one answer's
rendering at most (0.5-0.9 ms at the median there).

Only with ``--shed-hold resends`` (whose clients must hear "no" fast), and only while the
server sheds (it refused a request within ``service.admission.SHED_LATELY_S``): below capacity,
one answer per turn cost up to a third of the throughput at 32 clients on one core (the
clients' next requests then trickle in one by one and the next batch splits), with no refusal
to speed up; and with the defaults' holds, whose 503s wait seconds anyway, it read and refused
held requests that would otherwise have waited, for less goodput. The executor, whose clients
are front ends, never does it.

:class:`Turns` keeps the queue of one batcher's (or one executor connection's) answers not yet
handed back: the first goes back at once, each next one in the following turn
(``loop.call_soon``), so it wakes its handler one turn after the one before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Turns(Generic[T]):
    """Futures resolved in order, one per turn of the event loop."""

    def __init__(self) -> None:
        self._queue: deque[tuple[asyncio.Future[T], T]] = deque()
        self._next_turn: asyncio.Handle | None = None

    def __len__(self) -> int:
        """Answers not yet handed back."""
        return len(self._queue)

    def resolve(self, future: asyncio.Future[T], value: T) -> None:
        """Resolve ``future`` with ``value``: now if no answer is waiting its turn, else one
        turn after the last of those (call from the event loop's thread)."""
        self._queue.append((future, value))
        if self._next_turn is None:
            self._hand_back()

    async def drained(self) -> None:
        """Return once every answer has been handed back."""
        while self._queue:
            await asyncio.sleep(0)

    def fail(self, error: Callable[[], BaseException]) -> None:
        """Fail every answer still waiting its turn, now, each with a new ``error()`` (its
        source is gone)."""
        if self._next_turn is not None:
            self._next_turn.cancel()
            self._next_turn = None
        while self._queue:
            future, _ = self._queue.popleft()
            if not future.done():
                future.set_exception(error())

    def _hand_back(self) -> None:
        """Resolve the oldest waiting answer whose caller still waits; the next one, waiting
        already or yet to come, in the next turn (this one is used)."""
        self._next_turn = None
        while self._queue:
            future, value = self._queue.popleft()
            if not future.done():  # a cancelled caller is skipped without using a turn
                future.set_result(value)
                self._next_turn = asyncio.get_running_loop().call_soon(self._hand_back)
                return
