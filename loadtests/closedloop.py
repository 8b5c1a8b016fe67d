"""A short closed-loop HTTP measurement in this process: N clients, each sending its next
request as soon as its answer is back, over one keep-alive connection each.

``explore`` and ``tune`` measure dozens of models and configurations for a few seconds each;
starting a Locust process per measurement (about 2 s) would cost more than the measurement, so
they use this instead: plain asyncio streams and pre-encoded requests
(:func:`loadtests.openloop.encode_request`), fast enough for a few thousand requests per second
from one process. ``mnist-serve loadtest`` keeps Locust, whose figures these do not replace.
Only 127.0.0.1 targets, like the open-loop generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from loadtests.openloop import content_length, encode_request
from loadtests.results import Percentiles


@dataclass(frozen=True)
class ClosedLoopResult:
    """``clients`` closed-loop clients for ``seconds`` (after an unrecorded warm-up)."""

    clients: int
    seconds: float
    requests: int
    errors: int  # any status but 200, or a broken connection
    throughput_rps: float  # answers with status 200 per second
    latency_ms: Percentiles  # answers with status 200


# How long the warm-up may wait for every client's first answer (a cold model's first batch of
# a new size, on a busy machine) before the window opens anyway.
MAX_WARMUP_S = 30.0
# An answer not back after this long is an error and its connection is replaced: a stuck
# service must not hang explore or tune.
ANSWER_TIMEOUT_S = 30.0


async def _closed_loop(
    url: str, requests: list[bytes], clients: int, seconds: float, warmup_s: float
) -> ClosedLoopResult:
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1":
        raise ValueError(f"closed-loop load only targets 127.0.0.1, not {parts.hostname}")
    start = time.perf_counter()
    # The window opens when the warm-up time has passed and every client has had an answer
    # (or an error): a first wave slower than the window would otherwise leave it empty.
    warm = asyncio.Event()
    window: list[float] = []  # [measure_from, stop_at], once open
    latencies: list[float] = []
    errors = 0
    answered_once = 0

    def answered_first() -> None:
        nonlocal answered_once
        answered_once += 1
        if answered_once == clients:
            warm.set()

    async def open_window() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(warm.wait(), MAX_WARMUP_S)
        begin = max(time.perf_counter(), start + warmup_s)
        await asyncio.sleep(begin - time.perf_counter())
        window.extend((begin, begin + seconds))

    async def client(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", parts.port or 80)
        turn, first = offset, True
        try:
            while not window or time.perf_counter() < window[1]:
                sent = time.perf_counter()
                in_window = bool(window) and sent >= window[0]
                writer.write(requests[turn % len(requests)])
                turn += 1
                try:
                    async with asyncio.timeout(ANSWER_TIMEOUT_S):
                        head = await reader.readuntil(b"\r\n\r\n")
                        await reader.readexactly(content_length(head))
                    status = int(head[9:12])
                except (asyncio.IncompleteReadError, ConnectionError, ValueError, TimeoutError):
                    errors += in_window
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", parts.port or 80)
                    status = 0
                if first:
                    first = False
                    answered_first()
                if not in_window or status == 0:
                    continue
                if status == 200:
                    latencies.append((time.perf_counter() - sent) * 1000)
                else:
                    errors += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    opener = asyncio.create_task(open_window())
    await asyncio.gather(*(client(i * 7) for i in range(clients)))
    await opener
    # The requests counted are those sent within the window: its length is their time base
    # (until the last answer came back would add up to one latency, more for slower models).
    measured = window[1] - window[0]
    return ClosedLoopResult(
        clients=clients,
        seconds=round(measured, 3),
        requests=len(latencies) + errors,
        errors=errors,
        throughput_rps=round(len(latencies) / measured, 1),
        latency_ms=Percentiles.of(latencies),
    )


def run_closed_loop(
    url: str, bodies: Sequence[bytes], clients: int, seconds: float, warmup_s: float = 0.5
) -> ClosedLoopResult:
    """POST the JSON ``bodies`` in turn to ``url`` from ``clients`` closed-loop clients: a
    warm-up of at least ``warmup_s`` that lasts until every client has had an answer (at most
    :data:`MAX_WARMUP_S`), then ``seconds`` measured; the warm-up's answers are left out."""
    if clients < 1 or seconds <= 0 or warmup_s < 0:
        raise ValueError("clients >= 1, seconds > 0 and warm-up >= 0, please")
    requests = [encode_request(url, "POST", body, "application/json") for body in bodies]
    return asyncio.run(_closed_loop(url, requests, clients, seconds, warmup_s))
