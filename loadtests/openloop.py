"""An open-loop HTTP load generator: requests leave at scheduled times, whatever the answers.

A closed-loop client (wrk, Locust users) sends its next request only after the previous answer,
so an overloaded server slows its own load down and queueing delay goes unmeasured (coordinated
omission). Here every request has a scheduled send time (constant or Poisson spacing at the
asked rate) and its latency runs from that time, so time spent waiting for a free connection
counts too. The generator's own lateness (``lag``: actual send minus scheduled) is reported so
that a saturated generator is visible rather than mistaken for a slow server.

It speaks just enough HTTP/1.1 for this (pre-encoded requests, Content-Length responses) over
plain asyncio protocols, so one Python process can offer several thousand requests per second.
A pool of ``connections`` is opened first; more are opened as needed (up to
``max_connections``) and every one is reused when idle. Only
127.0.0.1 targets are allowed: this is for measuring our own server, not someone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One request: when it was due, when it left, when its answer was complete, its status."""

    scheduled: float
    sent: float
    done: float
    status: int  # 0: the connection failed or the run ended first

    @property
    def latency(self) -> float:
        """Seconds from the scheduled send time to the complete answer."""
        return self.done - self.scheduled


@dataclass
class OpenLoopResult:
    """Every request of one run at one rate, and the probes of cheap endpoints beside it."""

    rate: float
    seconds: float
    samples: list[Sample]
    probes: dict[str, list[float]] = field(default_factory=dict)  # path -> latencies (s)

    def statuses(self) -> Counter[int]:
        """How many answers of each status (0: failed or unanswered)."""
        return Counter(s.status for s in self.samples)

    def per_second(self, status: int) -> float:
        """Answers of ``status`` per second of the run."""
        return sum(s.status == status for s in self.samples) / self.seconds

    def latency_ms(self, status: int, percentile: float) -> float:
        """A latency percentile, in ms, over the answers of ``status`` (NaN if none)."""
        values = [s.latency for s in self.samples if s.status == status]
        return float(np.percentile(values, percentile)) * 1000 if values else float("nan")

    def lag_ms(self, percentile: float) -> float:
        """The generator's own lateness (send minus schedule), in ms."""
        values = [s.sent - s.scheduled for s in self.samples if s.sent]
        return float(np.percentile(values, percentile)) * 1000 if values else float("nan")


Record = Callable[[Sample, object], None]  # an answer (or a failure) and its request's tag


class _Connection(asyncio.Protocol):
    """One keep-alive connection; answers are matched to requests in order."""

    def __init__(
        self,
        on_free: Callable[[_Connection], None],
        record: Record,
        on_lost: Callable[[_Connection], None] | None = None,
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: tuple[float, float, object] | None = None  # (scheduled, sent, tag)
        self.closed = False
        self._on_free = on_free
        self._on_lost = on_lost
        self._record = record

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, scheduled: float, tag: object = None) -> None:
        self.pending = (scheduled, time.perf_counter(), tag)
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.pending is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).split(b"\r\n")
            status = int(head[0].split(b" ", 2)[1])
            length, close = 0, False
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            scheduled, sent, tag = self.pending
            self.pending = None
            self._record(Sample(scheduled, sent, time.perf_counter(), status), tag)
            if close:
                assert self.transport is not None
                self.transport.close()
            else:
                self._on_free(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._on_lost is not None:
            self._on_lost(self)
        if self.pending is not None:
            scheduled, sent, tag = self.pending
            self.pending = None
            self._record(Sample(scheduled, sent, time.perf_counter(), 0), tag)


# Connections opened at once mid-run, at most. When the client's loop falls behind for a moment
# (a collection, a burst), every connection looks busy until the loop reads their answers; with
# no cap each request then opened one, up to max_connections: on the 2-core machine the pool
# grew from 256 to 2,048 in one second at 12,000-24,000 req/s against a null server, and the
# opening, on the same loop, kept the client a second behind (docs/benchmarks.md, section AC).
OPENING_MAX = 8


class ConnectionPool:
    """Keep-alive connections to one loopback server, on the running event loop.

    :meth:`send` writes a request on an idle connection, else opens one (up to
    ``max_connections``, ``OPENING_MAX`` at a time), else queues it for the first to come free;
    each answer (or failure, status 0) goes to ``record`` with the request's tag.
    :func:`run_open_loop` and LoadGen's system under test (:mod:`loadtests.loadgen`) both send
    through it.
    """

    def __init__(self, url: str, record: Record, max_connections: int = 2048) -> None:
        parts = urlsplit(url)
        if parts.hostname != "127.0.0.1":
            raise ValueError(f"open-loop load only targets 127.0.0.1, not {parts.hostname}")
        self.host, self.port = "127.0.0.1", parts.port or 80
        self.max_connections = max_connections
        self.record = record
        self.idle: list[_Connection] = []
        self.live: set[_Connection] = set()
        self.waiting: deque[tuple[bytes, float, object]] = deque()  # due, no connection yet
        self.opening: set[asyncio.Task[None]] = set()

    def _connection(self) -> _Connection:
        return _Connection(self._on_free, self.record, self.live.discard)

    def _on_free(self, connection: _Connection) -> None:
        if self.waiting:
            connection.send(*self.waiting.popleft())
        else:
            self.idle.append(connection)

    async def open(self, count: int) -> None:
        """Open ``count`` idle connections (in 64s) before the load, as a real client's pool
        would be: opening hundreds in a burst mid-run overflows the server's accept queue and
        stalls the handshakes for seconds (SYN retries), measured as server latency."""
        loop = asyncio.get_running_loop()
        for _ in range(min(count, self.max_connections) // 64):
            opened = await asyncio.gather(
                *(loop.create_connection(self._connection, self.host, self.port) for _ in range(64))
            )
            for _, connection in opened:
                self.live.add(connection)
                self.idle.append(connection)

    async def _open_and_send(self, request: bytes, scheduled: float, tag: object) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(self._connection, self.host, self.port)
        except OSError:
            self.record(Sample(scheduled, 0.0, time.perf_counter(), 0), tag)
            return
        self.live.add(connection)
        connection.send(request, scheduled, tag)

    def send(self, request: bytes, scheduled: float, tag: object = None) -> None:
        """Send now on an idle connection, else open one, else wait for one to come free."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                connection.send(request, scheduled, tag)
                return
        if (
            len(self.opening) >= OPENING_MAX
            or len(self.live) + len(self.opening) >= self.max_connections
        ):
            self.waiting.append((request, scheduled, tag))
            return
        task = asyncio.get_running_loop().create_task(self._open_and_send(request, scheduled, tag))
        self.opening.add(task)
        task.add_done_callback(self.opening.discard)

    def close(self) -> None:
        """Close every connection."""
        for connection in self.live:
            if connection.transport is not None:
                connection.transport.close()


def content_length(head: bytes) -> int:
    """The Content-Length of an HTTP message head (0 when absent)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def encode_request(url: str, method: str, body: bytes, content_type: str) -> bytes:
    """The bytes of one keep-alive HTTP/1.1 request."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run_open_loop(
    url: str,
    body: bytes | Sequence[bytes],
    rate: float,
    seconds: float,
    *,
    content_type: str = "application/json",
    poisson: bool = False,
    connections: int = 256,
    max_connections: int = 2048,
    probe_paths: tuple[str, ...] = (),
    probe_every_s: float = 0.1,
    seed: int = 0,
    warmup_s: float = 0.0,
) -> OpenLoopResult:
    """POST ``body`` (or each of several bodies in turn) to ``url`` at ``rate`` per second for
    ``warmup_s + seconds``; see the module doc. Requests scheduled in the warm-up are sent like
    the others but left out of the result."""
    if rate <= 0 or seconds <= 0 or warmup_s < 0:
        raise ValueError("rate and seconds must be > 0, warm-up >= 0")
    samples: list[Sample] = []
    all_answered = asyncio.Event()
    sent_count = 0
    sending_over = False

    def record(sample: Sample, tag: object) -> None:
        samples.append(sample)
        if sending_over and len(samples) >= sent_count:
            all_answered.set()

    pool = ConnectionPool(url, record, max_connections)
    loop = asyncio.get_running_loop()
    bodies = [body] if isinstance(body, bytes) else list(body)
    requests = [encode_request(url, "POST", b, content_type) for b in bodies]
    netloc = urlsplit(url).netloc
    probes: dict[str, list[float]] = {path: [] for path in probe_paths}

    async def probe(path: str) -> None:
        reader, writer = await asyncio.open_connection(pool.host, pool.port)
        get = f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\n\r\n".encode()
        try:
            while True:
                started = time.perf_counter()
                writer.write(get)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(content_length(head))
                probes[path].append(time.perf_counter() - started)
                await asyncio.sleep(probe_every_s)
        finally:
            writer.close()

    probing = [loop.create_task(probe(path)) for path in probe_paths]
    await pool.open(connections)
    rng = random.Random(seed)
    start = time.perf_counter() + 0.05
    measured_from = start + warmup_s
    end = measured_from + seconds
    if poisson:
        due, schedule = start, []
        while (due := due + rng.expovariate(rate)) < end:
            schedule.append(due)
    else:  # by index, so float error never adds or drops a request
        schedule = [start + i / rate for i in range(round(rate * (warmup_s + seconds)))]
    for index, due in enumerate(schedule):
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        elif index % 64 == 0:
            await asyncio.sleep(0)  # late: send at once, but let answers in now and then
        pool.send(requests[(index + 1) % len(requests)], due)
        sent_count += 1
    sending_over = True
    if len(samples) < sent_count:
        # Answers still missing a while after the end count as failures (status 0).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_answered.wait(), timeout=5.0)
    for task in probing:
        task.cancel()
    finished = time.perf_counter()
    # Each unanswered request failed at its own scheduled time: one sent in the warm-up stays
    # out of the measured samples (all were once dated at the end, and counted).
    answered = Counter(s.scheduled for s in samples)
    for due in schedule[:sent_count]:
        if answered[due]:
            answered[due] -= 1
        else:
            samples.append(Sample(due, 0.0, finished, 0))
    pool.close()
    measured = [s for s in samples[:sent_count] if s.scheduled >= measured_from]
    return OpenLoopResult(rate, seconds, measured, probes)
