"""``mnist-serve explore``: every model of a family, trained if missing, served on every
runtime, measured through HTTP, and set on a Pareto front of accuracy against served speed.

:func:`run_explore` strings it together, without the command line:

1. trains the family's variants that have no exported version (``training.pipeline``, every
   runtime converted), with the epochs (and, for the tests, the training subset) asked for,
   and converts exported ones to the runtimes they lack (``training.export``);
2. times each ``variant@runtime`` alone in this process at batch 1 and 32
   (:func:`modelrepo.runtimes.median_call_ms`, one thread, as the service runs them);
3. starts one service for all of them (:mod:`loadtests.served`) and measures each in turn:
   p50/p99 at one closed-loop client, throughput at 32 (:mod:`loadtests.closedloop`), then
   the highest Poisson rate within the SLO by a short search (:mod:`loadtests.slo`), up to
   the client's own ceiling, calibrated once a run (:mod:`loadtests.client_ceiling`);
4. saves ``explore.json`` after every model (a re-run skips what is measured, unless
   ``again``), writes the report (:mod:`loadtests.explore_report`) and stores the run in the
   history.

How long each measurement runs is :class:`loadtests.explore_results.ExploreBudget` (FULL, or
QUICK for the tests). Progress goes to a :class:`ExploreListener`.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from loadtests import client_ceiling, closedloop, history, runner, served, slo, studies
from loadtests.explore_results import FULL, QUICK, ExploreBudget, ExploreRecord, ModelMeasurement
from loadtests.openloop_results import ClientCeiling, ClientRun, RatePoint, Slo
from loadtests.results import ResultsError
from modelrepo.layout import RUNTIME_NAMES, ModelName, ModelRepository, ModelVersion
from training import catalog

if TYPE_CHECKING:
    from rich.console import Console

    from loadtests.explore_report import ExploreReport

FAMILIES = ("all", *dict.fromkeys(v.family for v in catalog.VARIANTS))
QUICK_TRAIN_LIMIT = 2_000  # --quick trains on this many images: seconds a variant
DEFAULT_SLO = Slo(99, 20)


def family_variants(family: str) -> list[str]:
    """A family's variants (every one for ``all``), in catalogue order."""
    return [v.name for v in catalog.VARIANTS if family in ("all", v.family)]


@dataclass(frozen=True)
class ExplorePlan:
    """What ``explore`` is asked to do."""

    family: str = "all"
    chosen: tuple[str, ...] = ()  # some of the family's variants only; () for all of them
    models_dir: Path = Path("models")
    out: Path = Path("runs/explore")
    runtimes: tuple[str, ...] = RUNTIME_NAMES
    epochs: int = 2
    train_limit: int | None = None
    slo: Slo = DEFAULT_SLO
    again: bool = False
    quick: bool = False
    mnist: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; known: {', '.join(FAMILIES)}")
        if not self.runtimes:
            raise ValueError("name at least one runtime")
        family = family_variants(self.family)
        if unknown := [v for v in self.chosen if v not in family]:
            raise ValueError(
                f"not in family {self.family!r}: {', '.join(unknown)}; its variants: "
                + ", ".join(family)
            )

    @property
    def budget(self) -> ExploreBudget:
        """The per-model measurement budget."""
        return QUICK if self.quick else FULL

    @property
    def label(self) -> str:
        """The family, and the variants chosen of it if only some were: the report's title
        ("strides (small-stride2, small-stride4)"; the chosen variants alone from ``all``)."""
        if not self.chosen:
            return self.family
        chosen = ", ".join(self.variants())
        return chosen if self.family == "all" else f"{self.family} ({chosen})"

    def variants(self) -> list[str]:
        """The family's variants (those ``chosen``, if any), in catalogue order."""
        return [v for v in family_variants(self.family) if not self.chosen or v in self.chosen]


class ExploreListener(Protocol):
    """What explore reports as it goes."""

    def training(self, variants: list[str]) -> None:
        """These variants have no exported version and are trained now."""

    def phase(self, name: str, total: int, seconds_each: float) -> None:
        """A phase over ``total`` models begins (``seconds_each``: the estimate per model)."""

    def model_done(self, model: str, summary: str) -> None:
        """One model of the current phase is done."""

    def skipped(self, models: list[str]) -> None:
        """These models were measured before and are kept (no ``again``)."""

    def client_run(self, run: ClientRun) -> None:
        """One calibration run of the client against the null server is done."""

    def client_calibrated(self, ceiling: ClientCeiling, kept: bool) -> None:
        """The client's ceiling is known (``kept``: from the run resumed): no model's search
        goes higher."""

    def finished(self, report: ExploreReport, run_id: int) -> None:
        """The report is written and the run stored in the history."""


@dataclass(frozen=True)
class Pending:
    """A model to measure: its name, version folder and runtime."""

    name: ModelName
    version: ModelVersion

    @property
    def model(self) -> str:
        """``variant@runtime``."""
        return str(self.name)


def unconverted(plan: ExplorePlan, version: ModelVersion) -> list[str]:
    """The plan's converted runtimes ``version`` lacks and never failed to convert to."""
    from modelrepo.layout import CONVERTED_RUNTIMES

    tried = version.load_metadata().runtimes
    present = version.runtimes()
    return [
        r for r in CONVERTED_RUNTIMES if r in plan.runtimes and r not in present and r not in tried
    ]


def train_missing(plan: ExplorePlan, console: Console, listener: ExploreListener) -> None:
    """Train and export (every runtime converted) the family's variants that have none, and
    convert the exported ones to the runtimes they lack."""
    repository = ModelRepository(plan.models_dir)
    missing = [v for v in plan.variants() if not repository.versions(v)]
    lacking = {
        v: (version, runtimes)
        for v in plan.variants()
        if v not in missing and (runtimes := unconverted(plan, version := repository.get(v)))
    }
    if not missing and not lacking:
        return
    from modelrepo.layout import CONVERTED_RUNTIMES
    from training.data import load_mnist
    from training.export import export_runtimes
    from training.pipeline import conversion_printer, train_and_export
    from training.train import TrainConfig

    mnist = load_mnist(plan.mnist or None)
    for variant, (version, runtimes) in lacking.items():
        console.print(f"converting {variant} version {version.version} to {', '.join(runtimes)}")
        export_runtimes(version, mnist, runtimes, conversion_printer(console, variant))
    if missing:
        listener.training(missing)
        config = TrainConfig(epochs=plan.epochs, limit=plan.train_limit)
        train_and_export(missing, mnist, config, plan.models_dir, console, CONVERTED_RUNTIMES)


def pending(plan: ExplorePlan, record: ExploreRecord) -> tuple[list[Pending], list[str]]:
    """The models to measure, and those measured before and kept."""
    repository = ModelRepository(plan.models_dir)
    todo, kept = [], []
    for variant in plan.variants():
        version = repository.get(variant)
        for runtime in version.runtimes():
            if runtime not in plan.runtimes:
                continue
            item = Pending(ModelName(variant, runtime), version)
            if not plan.again and record.get(item.model, version.version) is not None:
                kept.append(item.model)
            else:
                todo.append(item)
    return todo, kept


def one_thread() -> None:
    """TensorFlow on one intra-op thread, as the service runs it (other runtimes take theirs
    per model). Only before TensorFlow has run anything: after training in this process it
    keeps its default, and the SavedModel's alone times use every core."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)


def time_alone(item: Pending, calls: int) -> tuple[float, float]:
    """Median ms of one in-process call at batch 1 and at batch 32 (one thread)."""
    import numpy as np

    from modelrepo.contract import INPUT_SHAPE
    from modelrepo.runtimes import LoadOptions, load_runtime, median_call_ms

    runtime_name = item.name.runtime or "savedmodel"
    runtime = load_runtime(
        runtime_name, item.version.artifact(runtime_name), LoadOptions(gpu=False, threads=1)
    )
    rng = np.random.default_rng(0)
    one = rng.random((1, *INPUT_SHAPE), dtype=np.float32)
    many = rng.random((32, *INPUT_SHAPE), dtype=np.float32)
    b1 = median_call_ms(runtime, one, calls, warm=max(2, calls // 5))
    b32 = median_call_ms(runtime, many, max(3, calls // 4), warm=2)
    return round(b1, 4), round(b32, 4)


def measure_served(
    url: str,
    item: Pending,
    bodies: list[bytes],
    budget: ExploreBudget,
    target: Slo,
    alone: tuple[float, float],
    ceiling: float | None = None,
    on_point: Callable[[RatePoint], None] | None = None,
    unmeasurable: bool = False,
) -> ModelMeasurement:
    """One model through HTTP: one client, 32 clients, then its highest rate within the SLO
    (the ladder cut at the client's ``ceiling``, and doubled on up to it if every rate met;
    ``unmeasurable``: the client kept up with no calibration rate, so no miss bounds it)."""
    endpoint = f"{url}/predict/{item.model}"
    c1 = closedloop.run_closed_loop(endpoint, bodies, 1, budget.c1_s, budget.warmup_s)
    c32 = closedloop.run_closed_loop(endpoint, bodies, 32, budget.c32_s, budget.warmup_s)

    def measure(rate: float) -> RatePoint:
        point = slo.measure_rate(
            url, item.model, bodies, rate, budget.rate_s, target, budget.min_requests
        )
        if on_point is not None:
            on_point(point)
        return point

    ladder = slo.under_ceiling(budget.rates, ceiling)
    best, points = slo.find_max_rate(measure, ladder, budget.bisections, ceiling)
    # A miss with the client late bounds nothing, nor any when it kept up with no rate at all.
    upper = math.inf if unmeasurable else target.upper_end(points, item.model)
    metadata = item.version.load_metadata()
    return ModelMeasurement(
        model=item.model,
        variant=item.name.variant,
        runtime=item.name.runtime or "savedmodel",
        version=item.version.version,
        family=metadata.family,
        description=metadata.description,
        parameters=metadata.parameters,
        macs=metadata.macs,
        test_accuracy=metadata.test_accuracy,
        epoch_seconds=round(statistics.median(metadata.epoch_seconds), 3),
        c1_latency_ms=c1.latency_ms,
        c1_rps=c1.throughput_rps,
        c32_latency_ms=c32.latency_ms,
        c32_rps=c32.throughput_rps,
        errors=c1.errors + c32.errors,
        requests=c1.requests + c32.requests,
        max_rate=best,
        first_missed=None if math.isinf(upper) else upper,
        rate_points=points,
        alone_b1_ms=alone[0],
        alone_b32_ms=alone[1],
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        quick=budget is QUICK,
    )


def open_record(plan: ExplorePlan, console: Console) -> ExploreRecord:
    """The record in ``plan.out`` to resume, or a new one (``again`` keeps the file's other
    models but re-measures the plan's); one measured otherwise is kept aside, saying so."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if (plan.out / "explore.json").is_file():
        try:
            found = ExploreRecord.load(plan.out)
        except ResultsError:
            found = None
        if found is not None and found.slo == plan.slo and found.budget == plan.budget:
            return found
        # Measured otherwise (another SLO or budget, or an older version): kept aside, and
        # every model measured afresh, since figures of two budgets do not compare.
        (plan.out / "explore.json").replace(plan.out / "explore.json.old")
        console.print(
            f"[yellow]{plan.out / 'explore.json'} was measured with another SLO or budget (or "
            "an older version): kept as explore.json.old; every model is measured afresh[/]"
        )
    return ExploreRecord(now, now, plan.slo, plan.budget, runner.machine())


def run_explore(plan: ExplorePlan, console: Console, listener: ExploreListener) -> ExploreReport:
    """Train what is missing, measure every model not measured yet, write the report, store
    the run; LoadTestError when the service cannot start."""
    from loadtests.explore_report import write_explore_report

    train_missing(plan, console, listener)
    record = open_record(plan, console)
    todo, kept = pending(plan, record)
    if kept:
        listener.skipped(kept)
    budget = plan.budget
    if todo:
        alone: dict[str, tuple[float, float]] = {}
        listener.phase("model alone", len(todo), 1.0)
        one_thread()
        for item in todo:
            alone[item.model] = time_alone(item, budget.alone_calls)
            listener.model_done(item.model, f"{alone[item.model][0]:.3f} ms at batch 1")
        bodies = slo.bodies(plan.mnist or None, todo[0].model)
        if budget.calibrate and (
            record.client is None or record.client.problem or record.client.unmeasurable
        ):
            # Once a run (and again if it could not run, or the client kept up with no rate:
            # the machine may be quieter now); a resumed run keeps its ceiling.
            folder = plan.out / slo.LOADGEN_DIR / client_ceiling.FOLDER
            record.client = client_ceiling.calibrate(
                plan.slo, bodies, folder, budget.min_requests, listener.client_run
            )
            listener.client_calibrated(record.client, kept=False)
        elif record.client is not None:
            listener.client_calibrated(record.client, kept=True)
        ceiling = record.client.limit if record.client is not None else None
        unmeasurable = record.client is not None and record.client.unmeasurable
        served_variants = sorted({item.name.variant for item in todo})
        args: tuple[str, ...] = ("--variants", ",".join(served_variants), "--poll-s", "0")
        if set(plan.runtimes) != set(RUNTIME_NAMES):
            args += ("--runtimes", ",".join(plan.runtimes))
        with served.service(plan.models_dir, plan.out, *args) as url:
            listener.phase("served", len(todo), budget.estimate_s)
            for item in todo:
                measured = measure_served(
                    url,
                    item,
                    bodies,
                    budget,
                    plan.slo,
                    alone[item.model],
                    ceiling,
                    unmeasurable=unmeasurable,
                )
                record.put(measured)
                record.updated_at = measured.measured_at
                record.save(plan.out)
                listener.model_done(
                    item.model,
                    f"p50 {measured.c1_latency_ms.p50:.2f} ms, {measured.c32_rps:,.0f} req/s "
                    f"at 32, {measured.max_rate:,.0f} req/s within {plan.slo}",
                )
    record.save(plan.out)
    wanted = {item.model for item in todo} | set(kept)
    report = write_explore_report(record, plan.out, wanted, plan.label)
    path = history.default_path(plan.out.parent)
    run_id = studies.store(path, plan.out, "explore", record.updated_at, report.summary)
    listener.finished(report, run_id)
    return report
