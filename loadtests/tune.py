"""``mnist-serve tune``: each model's best serving configuration under a latency target, as
Triton's Model Analyzer finds one, within a time budget.

For each model, a coordinate search over :data:`SPACE`: the service's defaults first, then
every max batch size is tried (the others at their defaults), the best is kept, then every max
wait with it, then the intra-op threads, then the worker count. Each trial starts a service with
that configuration serving the model alone, measures p50 at one client
(:mod:`loadtests.closedloop`) and the highest Poisson rate within the SLO (:mod:`loadtests.slo`),
and stops it. Best: the highest rate, then the lowest p50; the two best and the defaults are
measured once more and judged on their lower rate. A trial that would not fit in what is left of
the budget is skipped and named; so are the grid's combinations the coordinate
search never tries. The best configuration, if it met the SLO at some rate, is saved beside the
model (:mod:`modelrepo.tuned`) for ``serve --tuned``, and the run is written to ``tune.md`` /
``tune.html`` / ``tune.json``.
"""

from __future__ import annotations

import html
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter

from loadtests import closedloop, history, served, slo, studies
from loadtests.explore_results import FULL, QUICK, ExploreBudget
from loadtests.openloop_results import RatePoint, Slo
from loadtests.probe import LoadTestError
from loadtests.report import html_table, markdown_table
from loadtests.results import JSON_CONFIG
from loadtests.tables import Table
from modelrepo.layout import ModelName, ModelRepository
from modelrepo.tuned import ServingConfig, TunedEntry, save_tuned
from service.settings import Settings

_SERVE = Settings.model_fields  # the service's defaults, from their one place
DEFAULTS = ServingConfig(
    max_batch_size=_SERVE["max_batch_size"].default,
    max_wait_ms=_SERVE["max_wait_ms"].default,
    intra_op_threads=_SERVE["intra_op_threads"].default,
    workers=_SERVE["workers"].default,
)
SPACE: dict[str, tuple[float, ...]] = {
    "max_batch_size": (1, 8, 16, 32, 64),
    "max_wait_ms": (0, 0.25, 1, 2),
    "intra_op_threads": (1, 2),
    "workers": (1, 0),  # one process; one front end per core (the default)
}
# The rate ladder reaches higher than explore's: a tuned model may sustain more.
TUNE_FULL = replace(FULL, rates=(400.0, 1200.0, 3000.0, 6000.0), bisections=2)
TUNE_QUICK = QUICK
START_S = 8.0  # a service's start and stop, on top of the measurement (estimate)
CONFIRM = 2  # the best configurations measured a second time


@dataclass(frozen=True)
class Trial:
    """One configuration, measured."""

    config: ServingConfig
    max_rate: float
    p50_ms: float
    seconds: float
    points: list[RatePoint]
    runs: int = 1  # > 1: measured again to confirm, pooled (the lowest rate, the median p50)

    @property
    def met_slo(self) -> bool:
        """Whether some rate tried met the SLO (the rate search found one)."""
        return self.max_rate > 0

    def key(self) -> tuple[float, float]:
        """What "best" sorts on: the highest rate, then the lowest p50."""
        return (self.max_rate, -self.p50_ms if not math.isnan(self.p50_ms) else -math.inf)


@dataclass
class ModelTuning:
    """One model's search: every trial, the best, what was skipped."""

    model: str
    version: int
    trials: list[Trial] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # candidates the budget left out
    failed: list[str] = field(default_factory=list)  # candidates whose service failed, and why
    untried: int = 0  # grid combinations the coordinate search does not visit
    saved: str | None = None  # where the best was saved

    def pooled(self) -> list[Trial]:
        """One trial per configuration: one measured more than once counts at the lowest rate
        it sustained (what it can be relied on for) and its median p50."""
        groups: dict[ServingConfig, list[Trial]] = {}
        for trial in self.trials:
            groups.setdefault(trial.config, []).append(trial)
        return [
            Trial(
                config,
                min(t.max_rate for t in runs),
                statistics.median(t.p50_ms for t in runs),
                round(sum(t.seconds for t in runs), 1),
                [p for t in runs for p in t.points],
                len(runs),
            )
            for config, runs in groups.items()
        ]

    @property
    def best(self) -> Trial | None:
        """The best configuration, pooled, among those measured again to confirm (and the
        defaults) when any were: one measured once keeps a reading that may have been lucky,
        and would otherwise win over the confirmed, whose lower rate counts (None if none
        ran)."""
        pooled = self.pooled()
        # The defaults stay eligible, confirmed or not: keeping them is never a lucky change.
        eligible = [t for t in pooled if t.runs > 1 or t.config == DEFAULTS]
        if not any(t.runs > 1 for t in pooled):
            eligible = pooled
        return max(eligible, key=Trial.key, default=None)

    @property
    def chosen(self) -> Trial | None:
        """The best, if it met the SLO: what is saved for ``serve --tuned`` (a configuration
        that missed it at every rate tried is no tuning to serve)."""
        best = self.best
        return best if best is not None and best.met_slo else None

    @property
    def at_defaults(self) -> Trial | None:
        """The service's defaults, pooled, if they ran."""
        return next((t for t in self.pooled() if t.config == DEFAULTS), None)


@dataclass
class TuneRecord:
    """A tune run: ``tune.json``."""

    __pydantic_config__ = JSON_CONFIG

    created_at: str
    slo: Slo
    budget_s: float
    spent_s: float
    models: list[ModelTuning]


def grid_size() -> int:
    """How many configurations the full grid holds."""
    return math.prod(len(values) for values in SPACE.values())


def measure(
    models_dir: Path,
    name: ModelName,
    config: ServingConfig,
    budget: ExploreBudget,
    target: Slo,
    bodies: list[bytes],
    out: Path,
) -> Trial:
    """Serve ``name`` alone with ``config`` and measure it."""
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

        best, points = slo.find_max_rate(at, budget.rates, budget.bisections)
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
) -> ModelTuning:
    """The coordinate search for one model, within ``budget_s``; saves the best beside it."""
    budget = TUNE_QUICK if quick else TUNE_FULL
    version = ModelRepository(models_dir).get(name.variant)
    bodies = slo.bodies(mnist, str(name))
    tuning = ModelTuning(str(name), version.version)
    deadline = time.monotonic() + budget_s
    estimate = START_S + budget.estimate_s
    current = DEFAULTS
    tried: set[ServingConfig] = set()

    def attempt(config: ServingConfig, label: str, folder: Path) -> Trial | None:
        """One trial; None (recorded, and the search goes on) if its service failed."""
        try:
            return measure(models_dir, name, config, budget, target, bodies, folder)
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


def trials_table(tuning: ModelTuning) -> Table:
    """A model's trials, best first (labelled so only if it met the SLO)."""
    best = tuning.chosen
    header = ["max batch", "max wait ms", "intra-op threads", "workers", "max rate in SLO",
              "p50 c=1 ms", "runs", "s", ""]  # fmt: skip
    rows = [
        [
            str(t.config.max_batch_size),
            f"{t.config.max_wait_ms:g}",
            str(t.config.intra_op_threads),
            str(t.config.workers or "per core"),
            f"{t.max_rate:,.0f}",
            f"{t.p50_ms:.3f}",
            str(t.runs),
            f"{t.seconds:.0f}",
            "best" if best and t.config == best.config else "defaults" * (t.config == DEFAULTS),
        ]
        for t in sorted(
            tuning.pooled(),
            key=lambda t: (best is not None and t.config == best.config, Trial.key(t)),
            reverse=True,
        )
    ]
    return header, rows


def verdict(tuning: ModelTuning) -> str:
    """One model's outcome in a sentence."""
    best, base = tuning.best, tuning.at_defaults
    if best is None:
        why = "every trial's service failed" if tuning.failed else "no trial fitted in the budget"
        return f"{tuning.model}: {why}; nothing saved."
    if not best.met_slo:
        lowest = min((p.rate for t in tuning.trials for p in t.points), default=math.nan)
        met_once = {t.config for t in tuning.trials if t.met_slo}
        confirmed = {t.config for t in tuning.pooled() if t.runs > 1}
        if met_once & confirmed:
            why = "the configurations that met the SLO once missed it when measured again"
        elif met_once:
            why = "the configurations that met the SLO were not measured again to confirm"
        else:
            why = (
                f"no configuration met the SLO, even at the lowest rate tried ({lowest:,.0f} req/s)"
            )
        return (
            f"{tuning.model}: {why}; the lowest p50 at one client was {best.p50_ms:.3f} ms "
            f"({best.config}); nothing saved (a tuned.json entry saved before is left as it "
            "was). Loosen the SLO or look at the service's log."
        )
    against = f" (defaults: {base.max_rate:,.0f} req/s, p50 {base.p50_ms:.3f} ms)" if base else ""
    return (
        f"{tuning.model}: best {best.config}: {best.max_rate:,.0f} req/s within the SLO, p50 "
        f"{best.p50_ms:.3f} ms at one client{against}; saved to {tuning.saved}."
    )


def write_tune_report(record: TuneRecord, out: Path) -> tuple[Path, Path, str]:
    """tune.json, tune.md and tune.html; returns the pages and a one-line summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_bytes(TypeAdapter(TuneRecord).dump_json(record, indent=2) + b"\n")
    title = f"mnist-serve tune: {', '.join(m.model for m in record.models)}"
    intro = (
        f"Coordinate search under {record.slo} within a {record.budget_s:.0f} s budget "
        f"({record.spent_s:.0f} s spent); the full grid holds {grid_size()} configurations."
    )
    md = [f"# {title}", "", intro, ""]
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for tuning in record.models:
        said = verdict(tuning)
        skipped = (
            f"Skipped for the budget: {', '.join(tuning.skipped)}."
            if tuning.skipped
            else "Nothing skipped for the budget."
        )
        skipped += f" Not visited by the coordinate search: {tuning.untried} grid configurations."
        if tuning.failed:
            skipped += f" Failed to serve: {'; '.join(tuning.failed)}."
        table = trials_table(tuning)
        md += [f"## {tuning.model}", "", said, "", skipped, "", markdown_table(table), ""]
        parts += [
            f"<h2>{html.escape(tuning.model)}</h2><p><b>{html.escape(said)}</b></p>",
            f"<p>{html.escape(skipped)}</p>",
            html_table(table),
        ]
    (out / "tune.md").write_text("\n".join(md))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f3f3f3}"
    )
    page = out / "tune.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    summary = "tune: " + "; ".join(
        f"{m.model} {m.chosen.config}"
        if m.chosen
        else f"{m.model} ({'none met the SLO' if m.best else 'none'})"
        for m in record.models
    )
    return out / "tune.md", page, summary


def run_tune(
    models_dir: Path,
    names: list[ModelName],
    target: Slo,
    budget_s: float,
    out: Path,
    quick: bool = False,
    on_trial: Callable[[str, Trial | None, str], None] | None = None,
    mnist: str | None = None,
) -> tuple[TuneRecord, Path, int]:
    """Tune every model (the budget shared equally), write the report, store the run."""
    started, begun = datetime.now(UTC), time.monotonic()
    done = []
    for index, name in enumerate(names):
        share = (budget_s - (time.monotonic() - begun)) / (len(names) - index)
        done.append(tune_model(models_dir, name, target, share, out, quick, on_trial, mnist))
    record = TuneRecord(
        created_at=started.isoformat(timespec="seconds"),
        slo=target,
        budget_s=budget_s,
        spent_s=round(time.monotonic() - begun, 1),
        models=done,
    )
    _, page, summary = write_tune_report(record, out)
    path = history.default_path(out.parent)
    run_id = studies.store(path, out, "tune", record.created_at, summary)
    return record, page, run_id
