"""``mnist-serve tune``'s results: the configurations searched, a trial, a model's search and
the run (``tune.json``); :mod:`loadtests.tune` fills them, :mod:`loadtests.tune_report` writes
them out.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from loadtests.openloop_results import ClientCeiling, RatePoint, Slo
from loadtests.results import JSON_CONFIG
from modelrepo.tuned import ServingConfig
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
    slo: Slo | None = None  # the target, to tell a miss with the client late (older files: None)
    unmeasurable: bool = False  # the client kept up with no calibration rate: no miss bounds

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
        ran). Among the rate's leader and the configurations its rate is not apart from
        (:meth:`unseparated`), the lowest p50 at one client wins."""
        leader, close = self.contenders()
        if leader is None or not close:
            return leader
        return min([leader, *close], key=lambda t: math.inf if math.isnan(t.p50_ms) else t.p50_ms)

    def contenders(self) -> tuple[Trial | None, list[Trial]]:
        """The rate's leader among the eligible trials (see :attr:`best`), and those it is
        not apart from."""
        pooled = self.pooled()
        # The defaults stay eligible, confirmed or not: keeping them is never a lucky change.
        eligible = [t for t in pooled if t.runs > 1 or t.config == DEFAULTS]
        if not any(t.runs > 1 for t in pooled):
            eligible = pooled
        leader = max(eligible, key=Trial.key, default=None)
        return leader, [] if leader is None else self.unseparated(leader, eligible)

    def unseparated(self, leader: Trial, others: list[Trial]) -> list[Trial]:
        """The ``others`` that met the SLO and whose rate search the leader's rate is not
        apart from: the lowest rate each missed with the client keeping up (:meth:`upper_end`)
        lies above the leader's, or there is none (it missed only with the client late). Two
        lower bounds order nothing; p50 at one client then decides."""
        if self.slo is None or not leader.met_slo:
            return []
        low = leader.max_rate
        return [t for t in others if t is not leader and t.met_slo and self.upper_end(t) > low]

    def upper_end(self, trial: Trial) -> float:
        """The lowest rate ``trial`` missed the SLO at with the client keeping up (infinity
        if none, or if the client kept up with no calibration rate: ``unmeasurable``)."""
        if self.slo is None or self.unmeasurable:
            return math.inf
        return self.slo.upper_end(trial.points, self.model)

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
    client: ClientCeiling | None = None  # the client's ceiling, calibrated once for the run


def grid_size() -> int:
    """How many configurations the full grid holds."""
    return math.prod(len(values) for values in SPACE.values())
