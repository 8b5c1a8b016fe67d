"""Our reading of MLPerf LoadGen: its logs parsed right, its early-stopping rule reproduced
(p99 at 99 % confidence needs 459 requests when none is over the bound), and LoadGen itself
run against a real HTTP server on 127.0.0.1 through our system under test, a second or two
per run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests import loadgen
from loadtests.loadgen import min_queries, read_detail_log, run_server_scenario
from loadtests.openloop import content_length
from loadtests.openloop_results import Slo

CAPTURED = Path(__file__).parent / "data" / "loadgen-4000-queries-41-over"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
REFUSED = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno"


def test_the_early_stopping_rule_matches_loadgen_reference() -> None:
    """LoadGen's published reference: p99 at 99 % confidence with no query over the bound
    needs 459 queries (0.99^459 < 0.01 <= 0.99^458). With 41 over, the real LoadGen run
    captured here asked for 1,845 more after 4,000: 5,845 in all."""
    assert min_queries(0.99) == 459
    assert 0.99**459 < 0.01 <= 0.99**458
    assert min_queries(0.99, overlatency=41) == 4000 + 1845
    assert min_queries(0.90) < min_queries(0.99) < min_queries(0.999)
    with pytest.raises(ValueError):
        min_queries(1.0)


def test_a_captured_loadgen_log_is_read() -> None:
    """A real LoadGen 6.0.17 Server run (4,000 queries, 41 over a 20 ms bound): INVALID, p99
    over the bound, early stopping unmet and asking for 1,845 more queries."""
    result = read_detail_log(CAPTURED / loadgen.DETAIL_LOG)
    assert not result.valid and not result.latency_met and not result.early_stopping_met
    assert result.min_duration_met and result.min_queries_met
    assert (result.queries, result.overlatency, result.needs_more) == (4000, 41, 1845)
    assert result.latency_ms.p99 == pytest.approx(20.168573)
    assert result.latency_ms.p50 == pytest.approx(0.072824)
    assert result.target_qps == 2000 and result.scheduled_qps == pytest.approx(1968.8)
    assert result.version == loadgen.VERSION and not result.undecided
    summary = (CAPTURED / loadgen.SUMMARY_LOG).read_text()
    assert "Result is : INVALID" in summary and "at least 1845 more queries" in summary


def test_a_log_without_a_result_is_refused(tmp_path: Path) -> None:
    (tmp_path / "detail.txt").write_text(':::MLLOG {"key": "loadgen_version", "value": "x"}\n')
    with pytest.raises(loadgen.LoadGenError, match="no LoadGen result"):
        read_detail_log(tmp_path / "detail.txt")
    with pytest.raises(loadgen.LoadGenError, match="cannot read"):
        read_detail_log(tmp_path / "missing.txt")


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    """A real HTTP server on 127.0.0.1 (its own thread and event loop) answering at once;
    every n-th request is refused with 503 when n is put in the list it yields."""
    refuse_every: list[int] = []
    ready = threading.Event()
    port: list[int] = []
    loop = asyncio.new_event_loop()

    seen = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(content_length(head))
                seen[0] += 1
                refused = bool(refuse_every) and seen[0] % refuse_every[0] == 0
                writer.write(REFUSED if refused else OK)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def start() -> None:
        listening = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(listening.sockets[0].getsockname()[1])
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    ready.wait(5)
    yield f"http://127.0.0.1:{port[0]}/predict", refuse_every
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def run(url: str, folder: Path, queries: int, bound_ms: float = 100) -> loadgen.LoadGenRun:
    """LoadGen at 500 queries/s for at least 0.2 s and ``queries``, p99 within ``bound_ms``."""
    return run_server_scenario(
        url,
        [b"{}"] * 16,
        500,
        Slo(99, bound_ms),
        folder,
        min_duration_s=0.2,
        min_queries=queries,
        connections=64,
    )


@pytest.mark.slow
def test_loadgen_itself_undecided_then_valid(server: tuple[str, list[int]], tmp_path: Path) -> None:
    """Real LoadGen through our SUT: 100 fast answers meet p99 but are too few for early
    stopping, which asks for exactly what :func:`min_queries` says (459 in all); 460 make the
    run VALID. LoadGen's summary is where the run says it is. (The bound is a generous 1 s:
    what is tested is the count; a 150 ms stall of this process on 2 cores once broke 100 ms.)"""
    url, _ = server
    first = run(url, tmp_path / "short", 100, bound_ms=1000)
    result = first.result
    assert result.latency_met and not result.valid and result.undecided
    assert result.queries + (result.needs_more or 0) == min_queries(0.99) == 459
    assert first.ok == result.queries and first.failed == 0
    assert "Would need to run at least" in first.summary.read_text()
    second = run(url, tmp_path / "long", 460, bound_ms=1000).result
    assert second.valid and second.early_stopping_met and second.needs_more is None
    assert second.queries >= 460 and second.overlatency == 0
    assert second.latency_ms.p50 <= second.latency_ms.p99 < 1000


@pytest.mark.slow
def test_failed_requests_count_over_the_bound(
    server: tuple[str, list[int]], tmp_path: Path
) -> None:
    """Every 20th request refused (5 %): each is counted as failed and held until the bound
    has passed, so LoadGen counts it over the bound and the p99 claim is INVALID although
    every answer came at once."""
    url, refuse_every = server
    refuse_every.append(20)
    outcome = run(url, tmp_path / "refused", 500)
    result = outcome.result
    assert outcome.failed >= 20 and outcome.ok + outcome.failed == result.queries
    assert result.overlatency >= outcome.failed
    assert not result.valid and not result.latency_met and not result.undecided
    assert result.latency_ms.p99 > 100


def test_queries_issued_while_the_loop_is_busy_share_one_wake_up(
    server: tuple[str, list[int]],
) -> None:
    """LoadGen's thread hands queries to the client's loop with one wake-up for all it issues
    before the loop gets to them, not one each (a wake-up is a system call and a pass of the
    loop); every query is still sent, each timed from its own issue, and answered."""
    sut = loadgen._HttpSut(server[0], [b"{}"], 1.0, 8)
    done: list[int] = []
    sut._complete = done.append  # type: ignore[method-assign,assignment]  # no LoadGen here
    wake_ups = [0]
    hand_off = sut.loop.call_soon_threadsafe

    def counted(callback: object, *args: object) -> object:
        wake_ups[0] += 1
        return hand_off(callback, *args)  # type: ignore[arg-type]

    sut.loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
    busy = threading.Event()
    hand_off(busy.wait, 5)  # the loop is held until the queries are issued
    for query in range(100):
        sut.issue([SampleOf(query, 0)])
    busy.set()
    try:
        for _ in range(300):
            if len(done) == 100:
                break
            threading.Event().wait(0.01)
        assert sorted(done) == list(range(100)) and sut.ok == 100
        assert wake_ups[0] == 1
    finally:
        sut.loop.call_soon_threadsafe = hand_off  # type: ignore[method-assign]
        sut.close()


class SampleOf:
    """A query as LoadGen hands it to ``issue``: its id and the index of its sample."""

    def __init__(self, id: int, index: int) -> None:
        self.id = id
        self.index = index
