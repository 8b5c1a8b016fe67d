"""A load-test session: what ``mnist-serve loadtest`` and ``demo`` run, without the command line.

:func:`run_load_test` starts the service under test (or uses the one given), runs the
closed-loop plan and/or the open-loop sweep against it and stores the run in the history. Every
mode leaves ``results.json`` (an open-loop run on its own: the plan and the models served, no
steps), so one report is built for every mode; writing and showing it is the caller's. Progress goes
to a :class:`Listener` (the command line draws it with Rich; tests record it), so the workflow
runs and is tested without Typer. The demo's policy (which runtimes, which plan) lives here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol

from loadtests import client_ceiling, comparable, cost, history, power, runner, slo
from loadtests.defaults import DEMO_WARMUP_S
from loadtests.openloop_results import (
    OPENLOOP_FILE,
    ClientCeiling,
    ClientRun,
    OpenLoopRecord,
    RatePoint,
    Slo,
)
from loadtests.protocols import Protocol as WireProtocol
from loadtests.results import LoadPlan, RunRecord, Step, StepResult

if TYPE_CHECKING:
    from loadtests.decision import Stop
    from loadtests.sequential import Estimate
    from modelrepo.layout import ModelRepository


AUTO: Final = "auto"


@dataclass(frozen=True)
class Sweep:
    """An open-loop sweep to run after (or instead of) the closed-loop steps."""

    rates: tuple[float, ...]
    slo: Slo
    seconds: int
    min_requests: int
    # Every rate met: double up to this (req/s); AUTO: up to the client's own ceiling,
    # calibrated at the start (loadtests/client_ceiling.py), or a ClientCeiling calibrated
    # already (loadtest --tuned's second run); None: stop at the top rate.
    ceiling: float | Literal["auto"] | ClientCeiling | None = AUTO

    @classmethod
    def parse(
        cls,
        rates: str,
        target: str,
        seconds: int,
        min_requests: int,
        ceiling: str | float = AUTO,
    ) -> Sweep:
        """From the command line's --rates (``100,200``), --slo (``p99=20ms``) and --ceiling
        (``auto``, a rate, or 0: none); ValueError saying what is wrong otherwise."""
        arrival = tuple(float(part) for part in rates.split(",") if part.strip())
        if not arrival or not all(math.isfinite(r) and r > 0 for r in arrival):
            raise ValueError("--rates must be positive numbers")
        return cls(arrival, Slo.parse(target), seconds, min_requests, parse_ceiling(ceiling))


def parse_ceiling(text: str | float) -> float | Literal["auto"] | None:
    """--ceiling: ``auto``, a rate in requests/s, or 0 (none); ValueError otherwise."""
    if isinstance(text, str) and text.strip().lower() == AUTO:
        return AUTO
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"--ceiling must be auto, a rate in requests/s, or 0 for none: {text!r}")
    return rate or None


class Listener(Protocol):
    """What a session reports as it goes, in order of events."""

    def service_starting(self, models: Path) -> None:
        """A service is being started from ``models`` (no --url given)."""

    def closed_loop_started(self, plan: LoadPlan, url: str) -> None:
        """The closed-loop steps begin against ``url``."""

    def step(self, step: Step, index: int, total: int, result: StepResult | None) -> None:
        """A step starts (``result`` None) or has finished."""

    def level_checked(self, level: int, estimates: list[Estimate], stop: Stop | None) -> None:
        """The stopping rule looked at ``level``'s ratios; ``stop`` when the level is over."""

    def closed_loop_finished(self) -> None:
        """The closed-loop steps are over (also when they failed)."""

    def open_loop_started(self, plan: LoadPlan, sweep: Sweep) -> None:
        """The open-loop search begins."""

    def client_run(self, run: ClientRun) -> None:
        """One calibration run of the client against the null server is done."""

    def client_calibrated(self, ceiling: ClientCeiling) -> None:
        """The client's ceiling is known: the search goes no higher."""

    def rate_point(self, point: RatePoint) -> None:
        """One open-loop run is done."""

    def open_loop_finished(self, record: OpenLoopRecord, data: Path) -> None:
        """The search is over; its results are in ``data`` (openloop.json)."""

    def stored(self, run_id: int, path: Path) -> None:
        """The run is in the history at ``path``."""


@dataclass(frozen=True)
class Outcome:
    """What a session left: the results folder, its history id, which loops ran, and what the
    service served (``served``: the closed loop's record, or, without one, the record of the
    models served and their tuned configurations)."""

    out: Path
    run_id: int
    history: Path
    closed: RunRecord | None
    openloop: OpenLoopRecord | None
    served: RunRecord
    cost: cost.CostRecord | None = None


def run_load_test(
    plan: LoadPlan,
    out: Path,
    url: str | None,
    models: Path,
    listener: Listener,
    server_args: tuple[str, ...] = (),
    grpc_url: str | None = None,
    sweep: Sweep | None = None,
    closed: bool = True,
    pricing: cost.Pricing | None = None,
    history_path: Path | None = None,
) -> Outcome:
    """Run ``plan`` (closed loop) and/or ``sweep`` (open loop) against ``url``, or against one
    service started here for both; store the run in the history (``history_path``, default
    the one beside ``out``), keyed with ``server_args``; write its cost per inference
    (``cost.json``: ``pricing``, and the RAPL power over the loops where there is RAPL).
    LoadTestError when the target cannot be reached or a run fails."""
    out.mkdir(parents=True, exist_ok=True)
    if url is None:
        listener.service_starting(models)
    grpc = WireProtocol.KSERVE_GRPC in plan.protocols
    # A service started here with --tuned applies the models' tuned.json: recorded, and keyed.
    tuned_from = models if url is None and "--tuned" in server_args else None
    record = openloop = None
    with (
        runner.target_service(url, grpc_url, models, out, server_args, grpc=grpc) as target,
        power.PowerMeter() as meter,  # over the loops, not the service's start-up
    ):
        if closed:
            listener.closed_loop_started(plan, target.url)
            try:
                record = runner.run_plan(
                    plan,
                    out,
                    target,
                    server_args,
                    listener.step,
                    listener.level_checked,
                    tuned_from,
                )
            finally:
                listener.closed_loop_finished()
            served = record
        else:
            served = record_served(plan, out, target, server_args, tuned_from)
            served.save(out)
        if sweep is not None:
            openloop = run_sweep(plan, sweep, out, target.url, listener)
    costed = cost.build(pricing or cost.Pricing(), record, openloop, meter.reading, meter.problem)
    costed.save(out)
    path = history_path or history.default_path(out.parent)
    elsewhere = comparable.served_elsewhere(served)  # a --url service: how it said it served
    run_id = history.store(path, out, plan, record, openloop, server_args, served.tuned, elsewhere)
    listener.stored(run_id, path)
    return Outcome(out, run_id, path, record, openloop, served, costed)


def record_served(
    plan: LoadPlan,
    out: Path,
    target: runner.Target,
    server_args: tuple[str, ...],
    tuned_from: Path | None = None,
) -> RunRecord:
    """``results.json`` of a run without closed-loop steps: the plan, the machine and what the
    server serves (test accuracy, parameters, runtimes, tuned configurations), for the
    report's sections."""
    served = runner.check_target(target.url, plan, target.grpc_url)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return RunRecord(
        created_at=now,
        finished_at=now,
        target=target.url,
        grpc_target=target.grpc_url,
        started_server=target.started_here,
        server_args=list(server_args),
        plan=plan,
        machine=runner.machine(),
        variants=served,
        steps=[],
        engine=runner.served_engine(target.url) if served else None,
        tuned=runner.tuned_in_effect(tuned_from, plan, served),
    )


def calibrated(plan: LoadPlan, sweep: Sweep, out: Path, listener: Listener) -> ClientCeiling:
    """The client's ceiling on this machine (loadtests/client_ceiling.py); a calibration that
    cannot run leaves the search without a ceiling, saying why, rather than ending the run."""
    client = client_ceiling.calibrate(
        sweep.slo,
        slo.bodies(plan.mnist or None, plan.models()[0]),
        out / slo.LOADGEN_DIR / client_ceiling.FOLDER,
        sweep.min_requests,
        listener.client_run,
    )
    listener.client_calibrated(client)
    return client


def run_sweep(
    plan: LoadPlan, sweep: Sweep, out: Path, url: str, listener: Listener
) -> OpenLoopRecord:
    """The open-loop sweep and SLO search (loadtests/slo.py) into ``openloop.json``; with
    ``--ceiling auto``, the client's ceiling calibrated first (loadtests/client_ceiling.py)."""
    listener.open_loop_started(plan, sweep)
    client: ClientCeiling | None
    match sweep.ceiling:
        case "auto":
            client = calibrated(plan, sweep, out, listener)
            ceiling = client.limit
        case ClientCeiling() as client:  # calibrated already, by the run before (--tuned)
            ceiling = client.limit
        case rate:  # a rate, or None
            client, ceiling = None, rate
    record = slo.run_sweep(
        url,
        plan.models(),
        sweep.rates,
        sweep.seconds,
        sweep.slo,
        out,
        plan.mnist or None,
        on_point=listener.rate_point,
        min_requests=sweep.min_requests,
        ceiling=ceiling,
        client=client,
    )
    listener.open_loop_finished(record, out / OPENLOOP_FILE)
    return record


def demo_runtimes(repository: ModelRepository, variant: str) -> tuple[str, ...]:
    """savedmodel and the converted runtime with the fastest batch-1 time for ``variant``."""
    metadata = repository.get(variant).load_metadata()
    timed = {
        name: conversion.batch1_ms
        for name in metadata.usable_runtimes()
        if (conversion := metadata.conversion(name)) and conversion.batch1_ms is not None
    }
    return ("savedmodel", min(timed, key=timed.__getitem__)) if timed else ("savedmodel",)


def demo_plan(
    variants: tuple[str, ...],
    runtimes: tuple[str, ...],
    concurrency: tuple[int, ...],
    duration_s: int,
    repeats: int,
    mnist: str,
    precision: float = 0.0,
    budget_s: int = 0,
) -> LoadPlan:
    """The demo's closed-loop plan: the variants on the runtimes, a short warm-up per run."""
    return LoadPlan(
        variants=variants,
        runtimes=runtimes,
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=DEMO_WARMUP_S,
        repeats=repeats,
        mnist=mnist,
        precision=precision,
        budget_s=budget_s,
    )
