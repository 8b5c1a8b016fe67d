"""The results contract: what a load test writes and what the report, the history and the
claims view read, as typed records saved and loaded here only.

Every load test (``mnist-serve loadtest``, ``demo``) leaves ``results.json``: a
:class:`RunRecord` holding the :class:`LoadPlan`, the :class:`Machine`, what the server said of
itself (:mod:`loadtests.described`) and one :class:`StepResult` per measured window (none for
an open-loop run alone). An open-loop sweep also leaves ``openloop.json``
(:mod:`loadtests.openloop_results`). Both are dataclasses, validated by pydantic when loaded, so a
missing or mistyped field fails with the field's name instead of a ``KeyError`` deep in the
report. Latency percentiles are computed in one place, :meth:`Percentiles.of`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError

from loadtests import defaults
from loadtests.decision import Stop
from loadtests.described import ServedBatching, ServedEngine, ServedVariant, runtime_of
from loadtests.labels import Label, Step
from loadtests.protocols import PROTOCOLS, Protocol
from loadtests.shaping import TensorLayout
from modelrepo.layout import ModelName, check_runtimes
from modelrepo.tuned import ServingConfig

RESULTS_FILE = "results.json"
# Bumped when a record's shape changes; an older file is refused with a clear message.
SCHEMA = 3
# NaN (no successful request) and infinity (a failed request under an SLO) survive a round trip.
JSON_CONFIG = ConfigDict(ser_json_inf_nan="constants")


class ResultsError(ValueError):
    """A results file that is missing, from an older version, or not a valid record."""


@dataclass(frozen=True)
class Percentiles:
    """Latency percentiles of a sample, in ms (NaN when it is empty)."""

    p50: float
    p90: float
    p95: float
    p99: float
    p999: float

    LEVELS: ClassVar[tuple[float, ...]] = (50, 90, 95, 99, 99.9)

    @classmethod
    def of(cls, latency_ms: np.ndarray | list[float]) -> Percentiles:
        """The percentiles of ``latency_ms``: the one place they are computed."""
        values = np.asarray(latency_ms, dtype=float)
        if not len(values):
            return cls(*[math.nan] * len(cls.LEVELS))
        return cls(*(float(v) for v in np.percentile(values, cls.LEVELS)))

    @classmethod
    def labels(cls) -> list[str]:
        """Column names: p50, p90, p95, p99, p99.9."""
        return [f"p{q:g}" for q in cls.LEVELS]

    def values(self) -> list[float]:
        """The percentiles in :attr:`LEVELS` order."""
        return [self.p50, self.p90, self.p95, self.p99, self.p999]


@dataclass(frozen=True)
class LoadPlan:
    """What to run: the same closed-loop load for each variant."""

    variants: tuple[str, ...] = ("original", "depthwise")
    runtimes: tuple[str, ...] = ()  # empty: the server's default runtime, bare variant names
    protocols: tuple[Protocol, ...] = (Protocol.NATIVE,)
    concurrency: tuple[int, ...] = defaults.CONCURRENCY
    duration_s: int = defaults.WINDOW_S
    warmup_s: int = defaults.WARMUP_S
    repeats: int = defaults.REPEATS
    mode: str = "json"
    processes: int = 1
    mnist: str = ""
    # > 0: windows until each ratio is within ±precision (sequential). 0, fixed windows, unless
    # asked: the command line asks for defaults.PRECISION.
    precision: float = 0.0
    budget_s: int = 0  # the closed loop's time budget when sequential (0: none)

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("name at least one variant")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants repeat: {self.variants}")
        if len(set(self.runtimes)) != len(self.runtimes):
            raise ValueError(f"runtimes repeat: {self.runtimes}")
        check_runtimes(self.runtimes)
        known = ", ".join(PROTOCOLS)
        try:  # names given as text (the command line, tests) become the enumeration
            object.__setattr__(self, "protocols", tuple(Protocol(p) for p in self.protocols))
        except ValueError as err:
            raise ValueError(f"protocols must be among {known}: {err}") from err
        if not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols must be distinct, among {known}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"concurrency levels must be >= 1, got {self.concurrency}")
        if self.duration_s < 1 or self.warmup_s < 0 or self.repeats < 1:
            raise ValueError("duration >= 1 s, warm-up >= 0 s and repeats >= 1, please")
        if self.mode not in ("json", "png"):
            raise ValueError(f"mode must be json or png, got {self.mode!r}")
        if self.mode == "png" and self.protocols != (Protocol.NATIVE,):
            raise ValueError("--mode png uploads pictures: the native protocol only")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if not 0 <= self.precision < 1 or self.budget_s < 0:
            raise ValueError("precision between 0 and 100 %, budget >= 0 s, please")

    def model_names(self) -> list[ModelName]:
        """The models under test: runtime by runtime, each variant (or bare variants)."""
        return [ModelName(v, r) for r in self.runtimes or (None,) for v in self.variants]

    def models(self) -> tuple[str, ...]:
        """The models' names as addressed (``depthwise@onnx``, or a bare variant)."""
        return tuple(str(name) for name in self.model_names())

    def label(self, variant: str, runtime: str | None, protocol: Protocol) -> Label:
        """A target's label: the model, and its protocol (shown when several are swept)."""
        return Label(variant, runtime, Protocol(protocol), len(self.protocols) > 1)

    def targets(self) -> list[Label]:
        """The targets in the plan's order: protocol by protocol, each model."""
        return [
            self.label(name.variant, name.runtime, protocol)
            for protocol in self.protocols
            for name in self.model_names()
        ]

    def steps(self) -> list[Step]:
        """Every run in order: per level, per repeat, the targets in alternating order."""
        steps = []
        targets = self.targets()
        for level in self.concurrency:
            for repeat in range(self.repeats):
                order = targets if repeat % 2 == 0 else list(reversed(targets))
                steps += [Step(target, level, repeat) for target in order]
        return steps

    @property
    def seconds(self) -> float:
        """Roughly how long the whole plan takes (at most, when sequential with a budget)."""
        from loadtests.sequential import run_seconds

        fixed = len(self.concurrency) * run_seconds(self, self.repeats)
        return max(fixed, self.budget_s) if self.precision > 0 and self.budget_s else fixed


@dataclass(frozen=True)
class Failure:
    """The failed requests of a step with one status: ``HTTP 400``, ``gRPC INVALID_ARGUMENT``,
    ``no answer`` (connection failed) or ``malformed answer``; the server's first message."""

    status: str
    count: int
    message: str = ""

    def __str__(self) -> str:
        said = f": {self.message}" if self.message else ""
        return f"{self.count} x {self.status}{said}"


@dataclass
class StepResult:
    """What one run measured, from the client's exact per-request samples."""

    model: str  # as addressed: variant, or variant@runtime
    variant: str
    runtime: str  # the runtime that answered (from the server's /variants when not named)
    protocol: Protocol
    target: Label  # what was measured (see LoadPlan.label)
    concurrency: int
    repeat: int
    requests: int
    errors: int
    window_s: float
    throughput_rps: float
    latency_ms: Percentiles  # successful requests only
    mean_ms: float
    accuracy: float  # right answers among the digits sent (not the test-set accuracy)
    server_queue_ms_p50: float
    server_model_ms_p50: float
    generator_cpu_s: float
    generator_busy: float
    samples: str  # the .npz of every request, relative to the run folder
    warnings: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)  # every failed request, by status
    cpu_steal: float | None = None  # the CPU the hypervisor took in the window (steal.py)

    @property
    def failed(self) -> bool:
        """Whether not a single request succeeded (none measured counts as failed too)."""
        return self.errors >= self.requests

    @property
    def failure_line(self) -> str:
        """Why a step failed or had errors, for the report: each status with its first message."""
        if not self.requests:
            return "no request finished in the measured window"
        return "; ".join(str(f) for f in self.failures) or f"{self.errors} errors"


@dataclass(frozen=True)
class Machine:
    """The machine and software the numbers were measured on."""

    cpu: str
    cores: int | None
    platform: str
    python: str
    tensorflow: str
    locust: str


@dataclass(frozen=True)
class ProtocolLayout:
    """How a model's digits were shaped over one tensor protocol (from its metadata)."""

    protocol: Protocol
    layout: TensorLayout

    def __str__(self) -> str:
        return f"{self.layout} over {self.protocol}"


@dataclass
class RunRecord:
    """A closed-loop load test: ``results.json``."""

    __pydantic_config__ = JSON_CONFIG

    created_at: str
    finished_at: str
    target: str
    grpc_target: str | None
    started_server: bool
    server_args: list[str]
    plan: LoadPlan
    machine: Machine
    variants: list[ServedVariant]
    steps: list[StepResult]
    schema: int = SCHEMA
    engine: ServedEngine | None = None  # mnist-serve's engine (None: another server)
    stops: list[Stop] = field(default_factory=list)  # why each level's measurement ended
    # How each model was fed over each tensor protocol, from its metadata.
    layouts: list[ProtocolLayout] = field(default_factory=list)
    # The tuned configurations a service started with --tuned ran, by variant@runtime.
    tuned: dict[str, ServingConfig] = field(default_factory=dict)

    @property
    def failed_steps(self) -> list[StepResult]:
        """The steps without a single successful request."""
        return [s for s in self.steps if s.failed]

    @property
    def stalled_steps(self) -> list[StepResult]:
        """The failed steps that are stalls: no request finished, none failed, while another
        window of the same target at the same load served. A window of a second in which
        nothing came back, amid windows that served, is the machine or the client stopping
        for a moment (docs/benchmarks.md, section AC), not the model; the comparisons leave
        its pair out, and the run does not fail for it."""
        served = {(s.target, s.concurrency) for s in self.steps if not s.failed}
        return [
            s for s in self.failed_steps if s.requests == 0 and (s.target, s.concurrency) in served
        ]

    @property
    def broken_steps(self) -> list[StepResult]:
        """The failed steps that fail the run: every one but the stalls."""
        stalled = self.stalled_steps
        return [s for s in self.failed_steps if s not in stalled]

    def variant(self, name: str) -> ServedVariant | None:
        """What the server said of a variant, if it was served."""
        return next((v for v in self.variants if v.name == name), None)

    def batching(self) -> dict[str, ServedBatching]:
        """How each model measured batched, as its service said on ``/variants`` (a bare
        variant: its default runtime's), by the name the plan addressed it by; a model the
        service said nothing of (a version before it did, another server) is left out."""
        found = {}
        for model in self.plan.models():
            variant = self.variant(ModelName.parse(model).variant)
            runtime = runtime_of(model, self.variants)  # the one answering it
            for served in variant.runtimes if variant else []:
                if served.runtime == runtime and served.batching is not None:
                    found[model] = served.batching
        return found

    def save(self, folder: Path) -> Path:
        """Write ``results.json`` into ``folder``."""
        return save_record(self, folder / RESULTS_FILE)

    @classmethod
    def load(cls, folder: Path) -> RunRecord:
        """Read ``folder/results.json``; :class:`ResultsError` saying what is wrong otherwise."""
        return load_record(cls, folder / RESULTS_FILE)


Record = TypeVar("Record")


def save_record(record: Any, path: Path) -> Path:
    """Write a typed record (a pydantic-validated dataclass) as JSON at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(TypeAdapter(type(record)).dump_json(record, indent=2) + b"\n")
    return path


def load_record(
    kind: type[Record],
    path: Path,
    schema: int = SCHEMA,
    again: str = "run the load test again",
) -> Record:
    """Read a record of ``kind`` (written at ``schema``) from ``path``; :class:`ResultsError`
    naming the file and the problem (unreadable, not JSON, another schema: ``again`` says what
    to do, a missing or mistyped field)."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as err:
        raise ResultsError(f"cannot read {path}: {err.strerror or err}") from err
    except ValueError as err:
        raise ResultsError(f"{path} is not JSON: {err}") from err
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema", "none") if isinstance(data, dict) else "none"
        raise ResultsError(
            f"{path} has schema {found}, this mnist-serve reads {schema}: it was written by "
            f"another mnist-serve (or is not a {kind.__name__} file); {again}"
        )
    try:
        return TypeAdapter(kind).validate_python(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5]
        )
        raise ResultsError(f"{path} is not a valid {kind.__name__}: {problems}") from err
