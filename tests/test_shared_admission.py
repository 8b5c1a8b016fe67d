"""The server-wide admission count the front ends share (service.shared) survives a process
killed in the middle of entering or leaving it: nothing stays locked, and the supervisor takes
back the dead process's share."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from service.shared import SharedInFlight, SharedState, spawn_context


@pytest.mark.slow
def test_the_admission_count_survives_a_process_killed_inside_it() -> None:
    """A process SIGKILLed while entering and leaving as fast as it can leaves nothing locked:
    the others still enter at once, and the supervisor's ``forget`` takes back its share."""
    context = spawn_context()
    state = SharedState(context, limit=4, processes=2, models=1)
    child = context.Process(target=_enter_and_leave_for_ever, args=(state,))
    child.start()
    while state.pids()[0] == 0:
        time.sleep(0.01)
    time.sleep(0.3)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join(10)
    entered = threading.Event()
    ours = SharedInFlight(state, 1)

    def enter() -> None:
        if ours.try_enter():
            entered.set()

    worker = threading.Thread(target=enter, daemon=True)
    worker.start()
    assert entered.wait(2), "entering hung after a process was killed"
    state.forget(0)
    assert state.in_flight == 1
    ours.leave()
    assert state.in_flight == 0


def _enter_and_leave_for_ever(state: SharedState) -> None:
    state.set_pid(0, os.getpid())
    while True:
        if state.try_enter(0):
            state.leave(0)
