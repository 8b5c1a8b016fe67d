"""The open loop's results contract: ``openloop.json``, an :class:`OpenLoopRecord` of one
:class:`RatePoint` per run (with MLPerf LoadGen's :class:`LoadGenVerdict` where LoadGen judged
it), and the latency target searched for, :class:`Slo`. Saved and loaded with the closed loop's
machinery (:func:`loadtests.results.save_record`, :func:`loadtests.results.load_record`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from loadtests import steal
from loadtests.results import (
    JSON_CONFIG,
    SCHEMA,
    Machine,
    Percentiles,
    load_record,
    save_record,
)

if TYPE_CHECKING:
    from loadtests.openloop import OpenLoopResult

OPENLOOP_FILE = "openloop.json"
# A loose SLO would let LoadGen pass a client seconds behind: past this, the client lagged.
MAX_CLIENT_LAG_MS = 5.0
SLO_PATTERN = re.compile(r"^p(\d+(?:\.\d+)?)=(\d+(?:\.\d+)?)ms$")


@dataclass(frozen=True)
class Slo:
    """A latency target: the ``percentile`` of all requests within ``limit_ms``."""

    percentile: float
    limit_ms: float

    @classmethod
    def parse(cls, text: str) -> Slo:
        """``p99=20ms`` -> Slo(99, 20); ValueError naming the expected form otherwise."""
        match = SLO_PATTERN.match(text.strip())
        if not match or not 0 < float(match.group(1)) < 100 or float(match.group(2)) <= 0:
            raise ValueError(f"SLO {text!r} is not of the form p99=20ms")
        return cls(float(match.group(1)), float(match.group(2)))

    def __str__(self) -> str:
        return f"p{self.percentile:g} <= {self.limit_ms:g} ms"

    @property
    def client_lag_limit_ms(self) -> float:
        """How late the client may send its p99 request before a run measures the client
        rather than the server: ``MAX_CLIENT_LAG_MS``, or a quarter of the bound if less."""
        return min(MAX_CLIENT_LAG_MS, self.limit_ms / 4)

    def client_lagged(self, point: RatePoint) -> bool:
        """Whether ``point`` missed the target with the client itself late (its lag p99 past
        :attr:`client_lag_limit_ms`): the miss may be the client's, so it bounds nothing."""
        return not point.met and point.lag_p99_ms > self.client_lag_limit_ms

    def upper_end(self, points: list[RatePoint], model: str) -> float:
        """The upper end of ``model``'s answer: the lowest rate it missed the target at with
        the client keeping up; infinity when there is none (its answer is a lower bound)."""
        counted = (
            p.rate for p in points if p.model == model and not p.met and not self.client_lagged(p)
        )
        return min(counted, default=math.inf)

    def latency_ms(self, result: OpenLoopResult) -> float:
        """The SLO's percentile over every request, failures counting as infinitely slow."""
        values = [s.latency * 1000 if s.status == 200 else math.inf for s in result.samples]
        # "higher": an actual sample, so an infinite one stays infinite (no inf - inf = NaN).
        return (
            float(np.percentile(values, self.percentile, method="higher")) if values else math.inf
        )

    def met(self, result: OpenLoopResult) -> bool:
        """Whether the run kept the target."""
        return self.latency_ms(result) <= self.limit_ms


@dataclass(frozen=True)
class LoadGenVerdict:
    """MLPerf LoadGen's judgement of one Server-scenario run (read by :mod:`loadtests.loadgen`,
    the only module that knows LoadGen's logs)."""

    valid: bool  # LoadGen's "Result is : VALID"
    latency_met: bool  # "Performance constraints satisfied": the percentile within the bound
    early_stopping_met: bool  # enough queries to say so at 99 % confidence
    min_duration_met: bool
    min_queries_met: bool
    queries: int
    overlatency: int  # queries over the bound (failed requests included)
    needs_more: int | None  # early stopping not satisfied: at least this many more queries
    target_qps: float
    scheduled_qps: float
    completed_qps: float
    latency_ms: Percentiles  # over every query, from LoadGen's scheduled issue times
    p97_ms: float
    mean_ms: float
    max_ms: float
    version: str
    summary: str = ""  # LoadGen's mlperf_log_summary.txt, relative to the run folder

    @property
    def undecided(self) -> bool:
        """The percentile was within the bound, but too few queries to say so (LoadGen's early
        stopping): a claim here "needs N more requests", not a verdict."""
        return self.latency_met and not self.early_stopping_met and not self.valid

    def percentile_ms(self, percentile: float) -> float:
        """LoadGen's latency at ``percentile`` (one of the levels it reports; NaN otherwise)."""
        levels = dict(zip(Percentiles.LEVELS, self.latency_ms.values(), strict=True))
        return levels.get(percentile, self.p97_ms if percentile == 97 else math.nan)


@dataclass(frozen=True)
class ClientRun:
    """One calibration run: LoadGen with our client against the null server at ``rate``."""

    rate: float
    valid: bool  # LoadGen's VALID, and the client's lag within its limit: the client kept up
    p99_ms: float  # latency from the scheduled send, the server doing nothing
    lag_p99_ms: float  # how late the client itself sent
    attempt: int = 1  # 2: the rate was missed once and run again (the second verdict stands)
    cpu_steal: float | None = None  # the CPU the hypervisor took meanwhile (loadtests/steal.py)

    @property
    def summary(self) -> str:
        """One line for the console: the rate, what the client saw, kept up or not."""
        kept = "kept up" if self.valid else "did not keep up"
        again = " (second run)" if self.attempt > 1 else ""
        return (
            f"client on a null server at {self.rate:,.0f} req/s: p99 {self.p99_ms:.2f} ms, "
            f"lag p99 {self.lag_p99_ms:.2f} ms{steal.note(self.cpu_steal)}, {kept}{again}"
        )


UNMEASURABLE = (
    "This machine cannot measure the SLO now: no model's miss will bound its rate (the search "
    "runs for the record). Try a looser --slo, a client on another machine (--url), or a "
    "quieter machine."
)


@dataclass(frozen=True)
class ClientCeiling:
    """The highest rate this machine's client sustains within the SLO against a server that
    does nothing (:mod:`loadtests.client_ceiling`): the open loop's search goes no higher,
    since above it a miss would be the client's, not the model's."""

    rate: float  # the highest calibration rate the client kept up with (0: none)
    runs: list[ClientRun]
    capped: bool = False  # kept up with every rate tried: the client may go higher still
    problem: str = ""  # the calibration could not run: why

    @property
    def limit(self) -> float | None:
        """The rate no search goes above (None: the calibration found none)."""
        return self.rate or None

    @property
    def unmeasurable(self) -> bool:
        """The calibration ran and the client kept up with none of its rates, down to
        ``client_ceiling.FLOOR``, against a server that does nothing: on this machine, now, a
        model's miss cannot be told from the client's, so no miss bounds a model's rate."""
        return bool(self.runs) and not self.rate and not self.problem

    @property
    def search_note(self) -> str:
        """A report's sentence on what the ceiling did to the rate search."""
        if self.unmeasurable:
            return f"No miss bounds a model's rate: {self.summary}."
        if self.limit is None:
            return f"The rate search had no ceiling: {self.summary}."
        return (
            "The rate search went no higher than the client's ceiling (its rates cut there, "
            f"or doubled on up to it): {self.summary}."
        )

    @property
    def summary(self) -> str:
        """One line: the ceiling and how it was found."""
        if self.problem:
            return f"the client's ceiling is unknown: the calibration failed ({self.problem})"
        if not self.rate:
            low = min((r.rate for r in self.runs), default=0.0)
            worst = max((r.cpu_steal or 0.0 for r in self.runs), default=0.0)
            why = (
                f" (the hypervisor took up to {steal.percent(worst)} of the CPU meanwhile: "
                f"{steal.ADVICE})"
                if steal.noisy(worst)
                else ""
            )
            return (
                f"the client kept up with no calibration rate, down to {low:,.0f} req/s, "
                f"against a null server{why}"
            )
        at = next(r for r in self.runs if r.rate == self.rate and r.valid)
        kept = {r.rate for r in self.runs if r.valid}
        above = min((r.rate for r in self.runs if r.rate not in kept), default=None)
        missed = f", missed {above:,.0f}" if above is not None else ", the calibration's top"
        worst = max((r.cpu_steal or 0.0 for r in self.runs), default=0.0)
        if steal.noisy(worst):
            missed += f"; CPU steal up to {steal.percent(worst)}: {steal.ADVICE}"
        return (
            f"{self.rate:,.0f} req/s, what LoadGen with our client kept up with against a null "
            f"server on this machine (p99 {at.p99_ms:.2f} ms{missed})"
        )


@dataclass(frozen=True)
class RatePoint:
    """One open-loop run of one model at one arrival rate."""

    model: str
    rate: float
    requests: int
    ok: int
    goodput_rps: float
    latency_ms: Percentiles  # every request, from its scheduled send time
    slo_ms: float  # the SLO's percentile over every request, failures over the bound
    met: bool  # with LoadGen: its verdict is VALID
    lag_p99_ms: float  # how late the generator itself sent (send minus schedule)
    # 2: the first run was not VALID and the second run's verdict stands; 3: the first was
    # INVALID, the second undecided, and the third (with the requests LoadGen asked for) stands
    runs: int = 1
    loadgen: LoadGenVerdict | None = None  # None: measured by the asyncio generator
    first: LoadGenVerdict | None = None  # with runs 2 or 3: LoadGen's verdict on the first run
    # The CPU the hypervisor took during the run whose verdict stands (loadtests/steal.py)
    cpu_steal: float | None = None

    @property
    def undecided(self) -> bool:
        """LoadGen could not decide: the percentile met the bound on too few requests."""
        return self.loadgen is not None and self.loadgen.undecided

    @property
    def verdict(self) -> str:
        """VALID, INVALID, or how many more requests LoadGen's early stopping needs."""
        if self.loadgen is None:
            return "met" if self.met else "missed"
        if self.undecided:
            return f"undecided: needs {self.loadgen.needs_more or 0:,} more requests"
        return "VALID" if self.loadgen.valid else "INVALID"


@dataclass
class OpenLoopRecord:
    """An open-loop sweep with its SLO search: ``openloop.json``."""

    __pydantic_config__ = JSON_CONFIG

    slo: Slo
    seconds_per_run: float
    rates: list[float]
    models: list[str]  # in the order given; the first is the baseline of the ratios
    max_rate: dict[str, float]  # per model, the highest rate that met the SLO (0: none did)
    points: list[RatePoint]
    created_at: str = ""
    machine: Machine | None = None
    min_requests: int = 0  # each run measured at least this many requests
    warmup_s: float = 0.0  # sent before each run and not measured
    ceiling: float | None = None  # the search doubled a rate met at the top up to this
    client: ClientCeiling | None = None  # the ceiling, when calibrated at the start
    generator: str = ""  # what sent the load and judged each rate (LoadGen and its version)
    schema: int = SCHEMA

    def ratio_to(self, model: str, baseline: str) -> float:
        """``model``'s highest rate under the SLO over ``baseline``'s (NaN if that is 0)."""
        base = self.max_rate[baseline]
        return self.max_rate[model] / base if base else math.nan

    def bracket(self, model: str) -> tuple[float, float]:
        """Where the search left ``model``'s answer: the highest rate that met the SLO (0 if
        none) and the lowest that missed it with the client keeping up (infinity if none did:
        :meth:`Slo.upper_end`; or if the client kept up with no calibration rate:
        :attr:`ClientCeiling.unmeasurable`)."""
        if self.client is not None and self.client.unmeasurable:
            return self.max_rate.get(model, 0.0), math.inf
        return self.max_rate.get(model, 0.0), self.slo.upper_end(self.points, model)

    def open_ended(self, model: str) -> bool:
        """Whether ``model``'s answer is a lower bound only: it met every rate tried, or
        missed only where the client itself lagged (or where it could not keep up)."""
        return math.isinf(self.bracket(model)[1])

    def ahead(self, model: str, other: str) -> bool:
        """Whether the search separated ``model`` above ``other``: ``other`` missed the SLO,
        with the client keeping up and LoadGen decided, at or below the highest rate ``model``
        met. Two lower bounds (">= 212" against ">= 88") order nothing."""
        if other not in self.max_rate:
            return True
        missed = self.bracket(other)[1]
        return missed <= self.bracket(model)[0] and self.undecided(other) is None

    def lagged_misses(self, model: str) -> list[RatePoint]:
        """``model``'s misses below its answer's upper end with the client late: not counted
        against it (:meth:`Slo.client_lagged`)."""
        high = self.bracket(model)[1]
        return [
            p
            for p in self.points
            if p.model == model and p.rate < high and self.slo.client_lagged(p)
        ]

    def undecided(self, model: str) -> RatePoint | None:
        """The run at the upper end of ``model``'s answer, if LoadGen could not decide there
        (needs more requests): where its search stopped."""
        high = self.bracket(model)[1]
        at = (p for p in self.points if p.model == model and not p.met and p.rate == high)
        point = next(at, None)
        return point if point is not None and point.undecided else None

    def at_max_rate(self, model: str) -> RatePoint | None:
        """The run of ``model`` at its highest rate under the SLO (None if none met it)."""
        rate = self.max_rate.get(model, 0.0)
        return next((p for p in self.points if p.model == model and p.rate == rate), None)

    def save(self, folder: Path) -> Path:
        """Write ``openloop.json`` into ``folder``."""
        return save_record(self, folder / OPENLOOP_FILE)

    @classmethod
    def load(cls, folder: Path) -> OpenLoopRecord:
        """Read ``folder/openloop.json``; :class:`ResultsError` saying what is wrong otherwise."""
        return load_record(cls, folder / OPENLOOP_FILE)
