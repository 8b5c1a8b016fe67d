"""The explore contract: what ``mnist-serve explore`` measured of each ``variant@runtime``
(``explore.json``) and how long it spends on each, typed like the load-test results.

An :class:`ExploreRecord` holds one :class:`ModelMeasurement` per model, each with the model's
training figures (from its ``metadata.json``), its served latency at one client, throughput at
32 clients, highest Poisson rate within the SLO (with the runs of that search) and its time alone
in-process at batch 1 and 32. It is saved after every model, so an interrupted run resumes where
it stopped. :class:`ExploreBudget` is the one place that says how long each measurement runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter

from loadtests.openloop_results import ClientCeiling, RatePoint, Slo
from loadtests.results import JSON_CONFIG, Machine, Percentiles, load_record

EXPLORE_FILE = "explore.json"
EXPLORE_SCHEMA = 1


@dataclass(frozen=True)
class ExploreBudget:
    """How long each model is measured: the per-model budget, in one place."""

    c1_s: float  # one client, closed loop
    c32_s: float  # 32 clients, closed loop
    warmup_s: float  # before each closed-loop measurement, not recorded
    rates: tuple[float, ...]  # the open-loop ladder (req/s), tried in order until one misses
    bisections: int  # then the gap is halved this often
    rate_s: float  # seconds per open-loop run (longer when min_requests needs it)
    min_requests: int  # measured per open-loop run, at least
    alone_calls: int  # model-alone timing: calls at batch 1 (a quarter of them at batch 32)
    # Calibrate the client's ceiling first (loadtests/client_ceiling.py): the ladder is cut
    # there, and a model that meets every rate is searched on upward to it.
    calibrate: bool = False

    @property
    def estimate_s(self) -> float:
        """Roughly how long one model takes to measure, from service start to report."""
        runs = len(self.rates) + self.bisections + 1  # one missed run is repeated
        # A model that meets the whole ladder doubles on past it: twice, typically, on a fast
        # machine; on a slow one the ceiling cuts the ladder instead (an overestimate there).
        runs += 2 if self.calibrate else 0
        per_run = max(self.rate_s, self.min_requests / max(self.rates)) + 0.5
        return self.c1_s + self.c32_s + 2 * self.warmup_s + runs * per_run


# About 14 s a model: 68 models (17 variants x 4 runtimes) in about 16 minutes on 2 cores.
FULL = ExploreBudget(
    c1_s=1.5,
    c32_s=1.5,
    warmup_s=0.5,
    rates=(400.0, 1200.0, 3000.0),
    bisections=1,
    rate_s=1.0,
    min_requests=400,
    alone_calls=50,
    calibrate=True,
)
# --quick: a shape check for the tests, seconds a model; its figures are not to be quoted.
QUICK = ExploreBudget(
    c1_s=0.4,
    c32_s=0.4,
    warmup_s=0.2,
    rates=(200.0, 800.0),
    bisections=0,
    rate_s=0.3,
    min_requests=60,
    alone_calls=8,
)
CLIENTS = (1, 32)


@dataclass(frozen=True)
class ModelMeasurement:
    """One ``variant@runtime``, served and alone."""

    model: str
    variant: str
    runtime: str
    version: int
    family: str
    description: str
    parameters: int
    macs: int
    test_accuracy: float
    epoch_seconds: float  # median training seconds per epoch
    c1_latency_ms: Percentiles  # one closed-loop client
    c1_rps: float
    c32_latency_ms: Percentiles
    c32_rps: float
    errors: int  # failed closed-loop requests (both levels)
    max_rate: float  # highest Poisson rate meeting the SLO (0: none did)
    # lowest rate that missed it with the client keeping up (None: none did; Slo.upper_end)
    first_missed: float | None
    rate_points: list[RatePoint]
    alone_b1_ms: float  # median in-process call at batch 1, one thread
    alone_b32_ms: float
    measured_at: str
    quick: bool = False
    requests: int = 0  # closed-loop requests sent, both levels (0: a file from before)

    @property
    def error_share(self) -> float:
        """The closed-loop requests that failed, as a fraction (NaN when not counted)."""
        return self.errors / self.requests if self.requests else math.nan


@dataclass
class ExploreRecord:
    """An explore run: ``explore.json``, grown model by model (and across resumed runs)."""

    __pydantic_config__ = JSON_CONFIG

    created_at: str
    updated_at: str
    slo: Slo
    budget: ExploreBudget
    machine: Machine
    measurements: list[ModelMeasurement] = field(default_factory=list)
    client: ClientCeiling | None = None  # the client's ceiling, calibrated once for the run
    schema: int = EXPLORE_SCHEMA

    def get(self, model: str, version: int) -> ModelMeasurement | None:
        """The measurement of ``model`` at ``version``, if there is one."""
        return next(
            (m for m in self.measurements if m.model == model and m.version == version), None
        )

    def put(self, measurement: ModelMeasurement) -> None:
        """Add ``measurement``, replacing an earlier one of the same model."""
        self.measurements = [m for m in self.measurements if m.model != measurement.model]
        self.measurements.append(measurement)

    def save(self, folder: Path) -> Path:
        """Write ``explore.json`` into ``folder`` (atomically: a resumed run reads it whole)."""
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f"{EXPLORE_FILE}.tmp"
        staging.write_bytes(TypeAdapter(ExploreRecord).dump_json(self, indent=2) + b"\n")
        return staging.replace(folder / EXPLORE_FILE)

    @classmethod
    def load(cls, folder: Path) -> ExploreRecord:
        """Read ``folder/explore.json``; :class:`ResultsError` saying what is wrong otherwise."""
        return load_record(
            ExploreRecord, folder / EXPLORE_FILE, EXPLORE_SCHEMA, "run explore again with --again"
        )
