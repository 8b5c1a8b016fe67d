"""Turns: answers handed back in order, one per turn of the event loop; failed at once."""

import asyncio

import pytest

from service.turns import Turns

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_one_answer_per_turn_in_order() -> None:
    loop = asyncio.get_running_loop()
    turns: Turns[int] = Turns()
    futures = [loop.create_future() for _ in range(3)]
    for i, future in enumerate(futures):
        turns.resolve(future, i)
    assert [f.done() for f in futures] == [True, False, False]  # the first at once
    assert len(turns) == 2
    await asyncio.sleep(0)  # one turn
    assert [f.done() for f in futures] == [True, True, False]
    await asyncio.sleep(0)
    assert [f.result() for f in futures] == [0, 1, 2]
    assert len(turns) == 0


async def test_a_cancelled_caller_does_not_use_a_turn() -> None:
    loop = asyncio.get_running_loop()
    turns: Turns[str] = Turns()
    first, cancelled, third = (loop.create_future() for _ in range(3))
    turns.resolve(first, "a")
    turns.resolve(cancelled, "b")
    turns.resolve(third, "c")
    cancelled.cancel()
    await asyncio.sleep(0)
    assert third.result() == "c"


async def test_fail_fails_what_waits_its_turn_and_stops_the_turns() -> None:
    loop = asyncio.get_running_loop()
    turns: Turns[int] = Turns()
    futures = [loop.create_future() for _ in range(3)]
    for i, future in enumerate(futures):
        turns.resolve(future, i)
    turns.fail(lambda: ConnectionError("gone"))
    assert futures[0].result() == 0
    errors = [f.exception() for f in futures[1:]]
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert errors[0] is not errors[1]  # each its own exception
    await asyncio.sleep(0)  # the cancelled turn does nothing
    late = loop.create_future()
    turns.resolve(late, 9)  # nothing waits: at once
    assert late.result() == 9
