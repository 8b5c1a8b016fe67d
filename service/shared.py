"""What the processes of one server share: admission, readiness and each model's queue.

With ``--workers N`` (``service.supervisor``) several processes serve one port, and what the
single process guarantees must hold for the server as a whole: ``max_in_flight`` is one limit
for all front ends, not N limits; ``/readyz`` says ready only when every process is; and a
model's queue deadline counts the requests every front end has sent it. These counters live in
shared memory (``multiprocessing`` raw arrays made by the supervisor before it starts the
processes, which inherit them), and each process writes only its own slots: reading costs a
few memory loads, writing one store, and no lock is ever held (a process killed mid-request
cannot leave the others waiting on it).

:class:`LocalInFlight` is the same interface for the single process: a plain integer.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.context import SpawnContext
from typing import Any, Protocol

# Slots of per-model queue figures: a model's executor index modulo this (indexes only grow, as
# versions come and go; two models sharing a slot only blur the admission estimate).
MODEL_SLOTS = 256
# A process's readiness, as /readyz of any process reads it.
LOADING, READY, FAILED = 0, 1, 2


class InFlight(Protocol):
    """The server's count of inference requests in flight, against its limit."""

    limit: int

    @property
    def value(self) -> int:
        """Requests in flight now."""
        ...

    def try_enter(self) -> bool:
        """Count one more, unless the limit is reached (then False)."""
        ...

    def leave(self) -> None:
        """Count one fewer."""
        ...


class LocalInFlight:
    """One process's count (the event loop is its only user: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.value = 0

    def try_enter(self) -> bool:
        """Count one more, unless the limit is reached."""
        if self.value >= self.limit:
            return False
        self.value += 1
        return True

    def leave(self) -> None:
        """Count one fewer."""
        self.value -= 1


class SharedState:
    """The counters every process of one server reads and writes (made by the supervisor)."""

    def __init__(self, context: SpawnContext, limit: int, processes: int, models: int) -> None:
        self.limit = limit
        self.processes = processes
        self.models = models
        self._pids = context.RawArray("i", processes + 1)  # the workers', then the executor's
        self._held = context.RawArray("i", processes)  # requests in flight, per process
        self._connections = context.RawArray("i", processes)  # open connections, per process
        self._ready = context.RawArray("b", processes)
        # Requests sent to each model and not answered yet, per front end (each writes its own
        # row, so no lock) and each model's running average batch time (the executor writes).
        self._outstanding = context.RawArray("i", processes * max(models, 1))
        self._batch_s = context.RawArray("d", max(models, 1))

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # raw arrays are passed to spawned children

    # Admission ------------------------------------------------------------------------------
    # No lock: each process writes only its own slot of ``_held``, and the count is their sum.
    # A process that dies (even by SIGKILL, in the middle of a call) leaves nothing locked, and
    # the supervisor takes its slot back with ``forget``.
    @property
    def in_flight(self) -> int:
        """Inference requests in flight in the whole server."""
        return sum(self._held)

    def try_enter(self, process: int) -> bool:
        """Count one more request in the server, held by ``process``, unless at the limit.

        Reserve, then check: two processes entering at once both see both reservations (and
        may both refuse, which is harmless), so the limit holds across processes. (Strictly,
        x86 may let a read pass the write before it; the Python instructions in between
        make that window nanoseconds wide, and even then the count is over by at most the
        processes racing.)
        """
        held = self._held
        held[process] += 1
        if sum(held) > self.limit:
            held[process] -= 1
            return False
        return True

    def leave(self, process: int) -> None:
        """Count one fewer."""
        self._held[process] -= 1

    def forget(self, process: int) -> None:
        """Take back what a process that died held (its requests will never leave)."""
        self._held[process] = 0
        for model in range(self.models):
            self._outstanding[process * self.models + model] = 0
        self._connections[process] = 0
        self._ready[process] = LOADING

    # Connections ----------------------------------------------------------------------------
    def add_connection(self, process: int, delta: int) -> None:
        """Count a connection opened (1) or closed (-1) by ``process`` (its own slot)."""
        self._connections[process] += delta

    def connections(self) -> int:
        """Open connections in the whole server."""
        return sum(self._connections)

    # Processes ------------------------------------------------------------------------------
    def set_pid(self, process: int, pid: int) -> None:
        """Record a process's pid (``process`` = ``processes``: the executor)."""
        self._pids[process] = pid

    def pids(self) -> list[int]:
        """The workers' pids, then the executor's (0: none)."""
        return list(self._pids)

    # Readiness ------------------------------------------------------------------------------
    def set_ready(self, process: int, state: int) -> None:
        """Record one process's readiness (LOADING, READY or FAILED)."""
        self._ready[process] = state

    def all_ready(self) -> bool:
        """Whether every process has said it is ready."""
        return all(state == READY for state in self._ready)

    def readiness(self) -> list[int]:
        """Each process's readiness."""
        return list(self._ready)

    # Model queues (executor mode) -----------------------------------------------------------
    def add_outstanding(self, process: int, model: int, delta: int) -> None:
        """Change a front end's count of requests waiting on ``model``."""
        self._outstanding[process * self.models + model % self.models] += delta

    def outstanding(self, model: int) -> int:
        """Requests waiting on ``model``, from every front end."""
        slot = model % self.models
        return sum(self._outstanding[p * self.models + slot] for p in range(self.processes))

    def set_batch_s(self, model: int, seconds: float) -> None:
        """Publish a model's running average batch time (the executor)."""
        self._batch_s[model % self.models] = seconds

    def batch_s(self, model: int) -> float:
        """A model's running average batch time."""
        return float(self._batch_s[model % self.models])


class SharedInFlight:
    """One process's view of the server-wide count (:class:`InFlight`)."""

    def __init__(self, state: SharedState, process: int) -> None:
        self.limit = state.limit
        self._state = state
        self._process = process

    @property
    def value(self) -> int:
        """Requests in flight in the whole server."""
        return self._state.in_flight

    def try_enter(self) -> bool:
        """Count one more, unless the server is at its limit."""
        return self._state.try_enter(self._process)

    def leave(self) -> None:
        """Count one fewer."""
        self._state.leave(self._process)


def spawn_context() -> SpawnContext:
    """The start method for every child process: spawn (TensorFlow and ONNX Runtime keep
    threads that a fork would not copy, and front ends must not inherit the parent's imports)."""
    return mp.get_context("spawn")
