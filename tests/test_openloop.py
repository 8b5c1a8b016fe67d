"""The open-loop generator measures what a server really does: a known delay within 10 %, and
queueing it causes counted from the scheduled send time (no coordinated omission)."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable

import pytest

from loadtests.openloop import (
    OPENING_MAX,
    ConnectionPool,
    Sample,
    content_length,
    run_open_loop,
)

pytestmark = pytest.mark.anyio

DELAY_S = 0.05
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def start_server(delay_s: float, serial: bool) -> tuple[asyncio.Server, int]:
    """A real HTTP server on 127.0.0.1 answering every request after ``delay_s``; ``serial``:
    one request at a time for the whole server (a queue in front of a single worker)."""
    lock = asyncio.Lock()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(content_length(head))
                if serial:
                    async with lock:
                        await asyncio.sleep(delay_s)
                else:
                    await asyncio.sleep(delay_s)
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.slow
async def test_a_known_delay_is_measured_within_ten_percent() -> None:
    """50 ms per answer, 100 requests/s for 2 s: median latency 50-55 ms, rate as asked."""
    server, port = await start_server(DELAY_S, serial=False)
    async with server:
        result = await run_open_loop(f"http://127.0.0.1:{port}/x", b"{}", 100, 2.0, connections=16)
    assert result.statuses()[200] == 200
    median = statistics.median(s.latency for s in result.samples)
    assert DELAY_S <= median <= DELAY_S * 1.1, median
    assert result.per_second(200) == pytest.approx(100, rel=0.02)


@pytest.mark.slow
async def test_queueing_is_counted_from_the_scheduled_time() -> None:
    """A server that takes 50 ms per request, one at a time (20/s), offered 40/s for 1 s: the
    backlog grows, so late requests wait ~0.5 s more than early ones. A closed-loop client
    would report 50 ms for every request; open loop must show the growth."""
    server, port = await start_server(DELAY_S, serial=True)
    async with server:
        result = await run_open_loop(f"http://127.0.0.1:{port}/x", b"{}", 40, 1.0, connections=64)
    latencies = [s.latency for s in sorted(result.samples, key=lambda s: s.scheduled)]
    assert len(latencies) == 40 and result.statuses()[200] == 40
    assert latencies[0] < 0.1
    # ~1.05 s, counted from the schedule (a client timing from the send would report 50 ms);
    # above it only by what a busy machine adds to 40 serial sleeps
    expected = 40 * DELAY_S - 1.0 + DELAY_S
    assert 0.85 * expected <= latencies[-1] <= 1.5 * expected, latencies[-1]
    assert result.lag_ms(99) < 50  # the generator itself kept to its schedule (not ~1 s behind)


@pytest.mark.slow
async def test_poisson_arrivals_average_the_asked_rate() -> None:
    """Exponential gaps: over 3 s at 200/s, about 600 requests (within 4 standard deviations)."""
    server, port = await start_server(0.0, serial=False)
    async with server:
        result = await run_open_loop(
            f"http://127.0.0.1:{port}/x", b"{}", 200, 3.0, poisson=True, seed=3
        )
    assert abs(len(result.samples) - 600) < 4 * 600**0.5
    assert result.statuses()[200] == len(result.samples)


async def test_only_loopback_targets_are_allowed() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        await run_open_loop("http://example.com/x", b"{}", 10, 1.0)


async def counting_server(
    hold_s: Callable[[int], float],
) -> tuple[asyncio.Server, int, Callable[[], int]]:
    """A server on 127.0.0.1 answering the n-th request (from 1) after ``hold_s(n)``: the
    server, its port, and how many requests it has seen."""
    seen = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(content_length(head))
                seen += 1
                if (pause := hold_s(seen)) > 0:
                    await asyncio.sleep(pause)
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], lambda: seen


@pytest.mark.slow
async def test_the_warm_up_is_sent_but_not_measured() -> None:
    """1 s of warm-up then 1 s measured at 50/s: the server sees ~100 requests, the result holds
    the 50 scheduled after the warm-up, and its rate is over the measured second only."""
    server, port, seen = await counting_server(lambda n: 0.0)
    async with server:
        result = await run_open_loop(
            f"http://127.0.0.1:{port}/x", b"{}", 50, 1.0, connections=8, warmup_s=1.0
        )
    assert seen() == 100 and len(result.samples) == 50
    first = min(s.scheduled for s in result.samples)
    assert all(s.scheduled - first < 1.0 for s in result.samples)
    assert result.per_second(200) == pytest.approx(50)


@pytest.mark.slow
async def test_a_warm_up_request_never_answered_is_not_a_measured_failure() -> None:
    """The first three requests (in the warm-up) are never answered: they stay out of the
    measured samples (they were dated at the run's end, and counted as measured failures)."""
    server, port, _ = await counting_server(lambda n: 60.0 if n <= 3 else 0.0)  # kept
    async with server:
        result = await run_open_loop(
            f"http://127.0.0.1:{port}/x", b"{}", 20, 0.5, connections=8, warmup_s=0.5
        )
        server.close()
    assert len(result.samples) == 10 and all(s.status == 200 for s in result.samples), result


async def test_a_burst_opens_connections_a_few_at_a_time_and_the_rest_wait() -> None:
    """With no idle connection, a burst of 40 requests opens at most OPENING_MAX connections at
    once and queues the rest for the first to come free (one opened per request took a lagging
    client from 256 connections to 2,048 in a second); every request is answered, and a
    connection lost leaves the pool."""
    server, port = await start_server(DELAY_S, serial=False)
    answered: list[Sample] = []
    async with server:
        pool = ConnectionPool(f"http://127.0.0.1:{port}/x", lambda s, _: answered.append(s))
        for _ in range(40):
            pool.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
        assert len(pool.opening) == OPENING_MAX and len(pool.waiting) == 40 - OPENING_MAX
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(answered) == 40:
                break
        assert [s.status for s in answered] == [200] * 40
        assert OPENING_MAX <= len(pool.live) < 40 and not pool.waiting
        pool.close()  # each connection lost leaves the pool (no scan of the live ones)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not pool.live:
                break
        assert not pool.live
