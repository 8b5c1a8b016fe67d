"""scripts/overload_load.py's reading of the C generator's result: which answers count as
refusals (ours 503, mosec's 429) and where their latency comes from."""

from __future__ import annotations

from loadtests import cgen
from tests.helpers import script_module

overload_load = script_module("overload_load")


def latency(count: int, p50: float, p99: float) -> cgen.Latency:
    """A latency class of ``count`` answers."""
    return cgen.Latency(count, p50, p99, p99, p99) if count else cgen.Latency(0, None, None, None)


def run_of(statuses: dict[int, int], shed: cgen.Latency, other: cgen.Latency) -> cgen.OpenLoopRun:
    """A 2-second run with these answers: 200s at 1/2 ms, the rest as given."""
    ok = latency(statuses.get(200, 0), 1.0, 2.0)
    return cgen.OpenLoopRun(
        offered_rate=100, duration_s=2.0, arrival="constant", scheduled=200, sent=200,
        completed=sum(statuses.values()), status_counts=statuses, ok=ok, shed=shed, other=other,
        timeouts=0, connection_errors=0, bad_responses=0, connect_errors=0,
        connections_opened=8, waited=0, lag=latency(200, 0.1, 0.2), elapsed_s=2.0, cpu_s=0.1,
    )  # fmt: skip


def test_our_503s_are_the_refusals_by_default() -> None:
    run = run_of({200: 60, 503: 140}, latency(140, 3.0, 9.0), latency(0, 0, 0))
    load = overload_load.Load.from_c(run, {})
    assert (load.good_s, load.shed_s, load.shed_p50, load.shed_p99) == (30, 70, 3.0, 9.0)


def test_mosecs_429s_are_its_refusals_timed_from_the_other_class() -> None:
    """The generator times 503s apart and every other non-2xx together: with mosec's 429 the
    refusals' latency is that class's, and its 429s count as refused, not failed."""
    run = run_of({200: 60, 429: 140}, latency(0, 0, 0), latency(140, 0.5, 4.5))
    load = overload_load.Load.from_c(run, {}, shed_status=429)
    assert (load.good_s, load.shed_s, load.failed_s) == (30, 70, 0)
    assert (load.shed_p50, load.shed_p99) == (0.5, 4.5)
    ours = overload_load.Load.from_c(run, {})  # read as ours: no 503 refused, none timed
    assert ours.shed_s == 0 and ours.shed_p99 != ours.shed_p99  # NaN


def test_other_errors_beside_429s_are_failures_and_leave_the_refusals_latency_unknown() -> None:
    """mosec answers 408 after its --timeout: timed with the 429s in the generator's "other"
    class, so those are counted as failed and the refusals' latency is not reported."""
    run = run_of({200: 60, 429: 130, 408: 10}, latency(0, 0, 0), latency(140, 0.5, 4.5))
    load = overload_load.Load.from_c(run, {}, shed_status=429)
    assert (load.good_s, load.shed_s, load.failed_s) == (30, 65, 5)
    assert load.unexpected == {408: 10}
    assert load.shed_p50 != load.shed_p50 and load.shed_p99 != load.shed_p99  # NaN
