"""``mnist-serve tune``: each model's best serving configuration under a latency target, as
Triton's Model Analyzer finds one, within a time budget.

For each model, a coordinate search over :data:`SPACE`: the service's defaults first, then
every max batch size is tried (the others at their defaults), the best is kept, then every max
wait with it, then the intra-op threads, then the worker count. Each trial starts a service with
that configuration serving the model alone, measures p50 at one client
(:mod:`loadtests.closedloop`) and the highest Poisson rate within the SLO (:mod:`loadtests.slo`),
and stops it. Best: the highest rate, then the lowest p50 (also among rates the search did not
separate: lower bounds order nothing); the two best and the defaults are
measured once more and judged on their lower rate. A trial that would not fit in what is left of
the budget is skipped and named; so are the grid's combinations the coordinate
search never tries. The best configuration, if it met the SLO at some rate, is saved beside the
model (:mod:`modelrepo.tuned`) for ``serve --tuned``, and the run is written to ``tune.md`` /
``tune.html`` / ``tune.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from loadtests import client_ceiling, closedloop, history, served, slo, studies
from loadtests.explore_results import FULL, QUICK, ExploreBudget
from loadtests.openloop_results import ClientRun, RatePoint, Slo
from loadtests.probe import LoadTestError
from loadtests.tune_report import write_tune_report
from loadtests.tune_results import DEFAULTS, SPACE, ModelTuning, Trial, TuneRecord, grid_size
from modelrepo.layout import ModelName, ModelRepository
from modelrepo.tuned import ServingConfig, TunedEntry, save_tuned

# The rate ladder reaches higher than explore's: a tuned model may sustain more.
TUNE_FULL = replace(FULL, rates=(400.0, 1200.0, 3000.0, 6000.0), bisections=2)
TUNE_QUICK = QUICK
START_S = 8.0  # a service's start and stop, on top of the measurement (estimate)
CONFIRM = 2  # the best configurations measured a second time


def measure(
    models_dir: Path,
    name: ModelName,
    config: ServingConfig,
    budget: ExploreBudget,
    target: Slo,
    bodies: list[bytes],
    out: Path,
    ceiling: float | None = None,
) -> Trial:
    """Serve ``name`` alone with ``config`` and measure it (its rate search cut at, and
    doubled on up to, the client's ``ceiling``)."""
    started = time.monotonic()
    args = (
        "--variants", name.variant, "--runtimes", name.runtime or "savedmodel", "--poll-s", "0",
        *config.args(),
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with served.service(models_dir, out, *args) as url:
        model = str(name)
        c1 = closedloop.run_closed_loop(
            f"{url}/predict/{model}", bodies, 1, budget.c1_s, budget.warmup_s
        )

        def at(rate: float) -> RatePoint:
            return slo.measure_rate(
                url, model, bodies, rate, budget.rate_s, target, budget.min_requests
            )

        ladder = slo.under_ceiling(budget.rates, ceiling)
        best, points = slo.find_max_rate(at, ladder, budget.bisections, ceiling)
    return Trial(config, best, c1.latency_ms.p50, round(time.monotonic() - started, 1), points)


def tune_model(
    models_dir: Path,
    name: ModelName,
    target: Slo,
    budget_s: float,
    out: Path,
    quick: bool = False,
    on_trial: Callable[[str, Trial | None, str], None] | None = None,
    mnist: str | None = None,
    ceiling: float | None = None,
    unmeasurable: bool = False,
) -> ModelTuning:
    """The coordinate search for one model, within ``budget_s``; saves the best beside it
    (``unmeasurable``: the client kept up with no calibration rate, so no miss bounds a
    trial's rate: :meth:`ModelTuning.unseparated`)."""
    budget = TUNE_QUICK if quick else TUNE_FULL
    version = ModelRepository(models_dir).get(name.variant)
    bodies = slo.bodies(mnist, str(name))
    tuning = ModelTuning(str(name), version.version, slo=target, unmeasurable=unmeasurable)
    deadline = time.monotonic() + budget_s
    estimate = START_S + budget.estimate_s
    current = DEFAULTS
    tried: set[ServingConfig] = set()

    def attempt(config: ServingConfig, label: str, folder: Path) -> Trial | None:
        """One trial; None (recorded, and the search goes on) if its service failed."""
        try:
            return measure(models_dir, name, config, budget, target, bodies, folder, ceiling)
        except LoadTestError as err:
            reason = str(err).splitlines()[0]
            tuning.failed.append(f"{label}: {reason}")
            if on_trial is not None:
                on_trial(str(name), None, f"failed {label}: {reason}")
            return None

    # The defaults first (the comparison every tuning is judged against), then one setting
    # at a time from the best so far.
    steps = [("defaults", 0.0), *((s, v) for s, values in SPACE.items() for v in values)]
    for index, (setting, value) in enumerate(steps):
        if index and setting != steps[index - 1][0]:
            best = tuning.best
            current = best.config if best is not None else current
        candidate = (
            DEFAULTS
            if setting == "defaults"
            else current.model_copy(update={setting: type(getattr(current, setting))(value)})
        )
        if candidate in tried:
            continue
        label = "defaults" if setting == "defaults" else f"{setting}={value:g}"
        if time.monotonic() + estimate > deadline:
            tuning.skipped.append(label)
            if on_trial is not None:
                on_trial(str(name), None, f"skipped {label}: out of budget")
            continue
        tried.add(candidate)
        folder = out / "trials" / f"{name.variant}-{name.runtime}-{len(tried)}"
        if (trial := attempt(candidate, label, folder)) is None:
            continue
        estimate = max(estimate, trial.seconds)
        tuning.trials.append(trial)
        if on_trial is not None:
            on_trial(str(name), trial, str(candidate))
    # One measurement each on a busy machine can crown a lucky configuration: the two best
    # (and the defaults, the comparison) are measured once more, budget allowing.
    ranked = sorted(tuning.pooled(), key=Trial.key, reverse=True)
    confirm = [t.config for t in ranked[:CONFIRM]]
    ran_defaults = tuning.at_defaults is not None  # not if their service failed
    confirm += [DEFAULTS] if ran_defaults and DEFAULTS not in confirm else []
    for config in confirm:
        if time.monotonic() + estimate > deadline:
            tuning.skipped.append(f"confirming {config}")
            continue
        folder = out / "trials" / f"{name.variant}-{name.runtime}-confirm-{len(tuning.trials)}"
        if (trial := attempt(config, f"confirming {config}", folder)) is None:
            continue
        tuning.trials.append(trial)
        if on_trial is not None:
            on_trial(str(name), trial, f"{config} (again, to confirm)")
    tuning.untried = max(0, grid_size() - len(tried) - len(tuning.skipped))
    best = tuning.chosen
    if best is not None:
        entry = TunedEntry(
            config=best.config,
            version=version.version,
            slo=str(target),
            max_rate=best.max_rate,
            p50_ms=round(best.p50_ms, 4),
            tuned_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        tuning.saved = str(
            save_tuned(models_dir, name.variant, name.runtime or "savedmodel", entry)
        )
    return tuning


def run_tune(
    models_dir: Path,
    names: list[ModelName],
    target: Slo,
    budget_s: float,
    out: Path,
    quick: bool = False,
    on_trial: Callable[[str, Trial | None, str], None] | None = None,
    mnist: str | None = None,
    on_run: Callable[[ClientRun], None] | None = None,
) -> tuple[TuneRecord, Path, int]:
    """Tune every model (the budget shared equally, the calibration's time taken from it),
    its rate searches up to the client's ceiling calibrated first (loadtests/client_ceiling.py,
    each run to ``on_run``; not with ``quick``); write the report, store the run."""
    started, begun = datetime.now(UTC), time.monotonic()
    budget = TUNE_QUICK if quick else TUNE_FULL
    client = None
    if names and budget.calibrate:
        folder = out / slo.LOADGEN_DIR / client_ceiling.FOLDER
        bodies = slo.bodies(mnist, str(names[0]))
        client = client_ceiling.calibrate(target, bodies, folder, budget.min_requests, on_run)
    ceiling = client.limit if client is not None else None
    unmeasurable = client is not None and client.unmeasurable
    done = []
    for index, name in enumerate(names):
        share = (budget_s - (time.monotonic() - begun)) / (len(names) - index)
        done.append(
            tune_model(
                models_dir, name, target, share, out, quick, on_trial, mnist, ceiling, unmeasurable
            )
        )
    record = TuneRecord(
        created_at=started.isoformat(timespec="seconds"),
        slo=target,
        budget_s=budget_s,
        spent_s=round(time.monotonic() - begun, 1),
        models=done,
        client=client,
    )
    _, page, summary = write_tune_report(record, out)
    path = history.default_path(out.parent)
    run_id = studies.store(path, out, "tune", record.created_at, summary)
    return record, page, run_id
