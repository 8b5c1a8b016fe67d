"""``loadtest --tuned``: the architectures compared each at its best, against the same
comparison at the service's defaults; does the answer change?

The load test runs twice with the same plan: once against a service at its defaults (in
``<out>/defaults``) and once against one started with ``--tuned`` (in ``<out>``), where each
model serves with the configuration ``mnist-serve tune`` saved for it. :func:`compare` ranks
the models in both runs by each measure (throughput at each concurrency level, p50 at the
lowest, the highest rate within the SLO) and says, per measure, whether the leader changed.
It is saved as ``tuned-comparison.json``; :mod:`loadtests.report` adds it to the report.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter

from loadtests.analysis import load_levels, load_openloop, speedups
from loadtests.answer import answer
from loadtests.described import runtime_of
from loadtests.openloop_results import OpenLoopRecord
from loadtests.results import RunRecord
from loadtests.tables import Table
from modelrepo.layout import ModelName

COMPARISON_FILE = "tuned-comparison.json"


@dataclass(frozen=True)
class Standing:
    """The models ranked best first by one measure, at the defaults and at their best;
    ``close``: those the run at their best did not separate from its leader (the open loop's
    brackets overlap: :meth:`OpenLoopRecord.ahead`; the closed loop's ranks are by means)."""

    measure: str
    defaults: list[str]
    tuned: list[str]
    close: list[str] = field(default_factory=list)

    @property
    def same_leader(self) -> bool:
        """Whether the same model leads in both runs."""
        return self.defaults[:1] == self.tuned[:1]

    @property
    def apart(self) -> bool:
        """Whether a new leader was separated from the old one at their best."""
        return self.same_leader or not self.defaults or self.defaults[0] not in self.close

    def leader_column(self) -> str:
        """The report's "same leader" cell."""
        return "yes" if self.same_leader else "no" if self.apart else "no (not apart)"

    def change(self) -> str:
        """The change of leader, in words (for a standing whose leader differs)."""
        before = self.defaults[0] if self.defaults else "no model"
        after = self.tuned[0] if self.tuned else "no model"
        said = f"{self.measure}: {before} led at the defaults, {after} at their best"
        if not self.apart:
            said += f" but not apart from {before} (the search did not separate them)"
        return said


@dataclass
class TunedComparison:
    """``tuned-comparison.json``: each model's tuned configuration and the standings."""

    configs: dict[str, str]  # model -> its tuned configuration, or why it had none
    standings: list[Standing]
    repeats: int = 1  # closed-loop repeats per step in each run
    answers: tuple[str, str] = ("", "")  # the model to deploy at the defaults, at their best

    @property
    def changed(self) -> list[Standing]:
        """The measures whose leader differs at their best."""
        return [s for s in self.standings if not s.same_leader]

    def verdict(self) -> str:
        """Whether the answer differs from the one at the defaults, in a sentence or two: the
        runs' answers (:mod:`loadtests.answer`), then the leader of each measure."""
        deploy = ""
        at_defaults, at_best = self.answers
        if at_defaults and at_best:
            deploy = (
                f"At their best (--tuned) the answer is the same: deploy {at_best}. "
                if at_defaults == at_best
                else f"At their best (--tuned) the answer changes: deploy {at_best}, where at "
                f"the defaults it was {at_defaults}. "
            )
        if not self.standings:
            return deploy + "Nothing else to compare."
        if not self.changed:
            leaders = sorted({s.tuned[0] for s in self.standings})
            return deploy + (
                "The leaders are those at the defaults: "
                f"{', '.join(leaders)} lead(s) on every measure."
            )
        noise = (
            " (one repeat per step: a change of leader between close models may be noise)"
            if self.repeats < 2
            else ""
        )
        return (
            deploy
            + "The leader differs from the defaults': "
            + "; ".join(s.change() for s in self.changed)
            + noise
        )

    def save(self, folder: Path) -> Path:
        """Write ``tuned-comparison.json`` into ``folder``."""
        path = folder / COMPARISON_FILE
        path.write_bytes(TypeAdapter(TunedComparison).dump_json(self, indent=2) + b"\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> TunedComparison | None:
        """The comparison in ``folder``, None if there is none (or it cannot be read)."""
        path = folder / COMPARISON_FILE
        try:
            return TypeAdapter(TunedComparison).validate_python(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            return None


def closed_standings(record: RunRecord) -> dict[str, list[str]]:
    """Per closed-loop measure, the targets (model, and protocol when several) best first:
    throughput by its mean over repeats (a failed one counts 0), p50 by its mean over the
    repeats that served (a target that never did comes last)."""
    out = {}
    levels = sorted({s.concurrency for s in record.steps})
    for level in levels:
        steps = [s for s in record.steps if s.concurrency == level]
        targets = list(dict.fromkeys(str(s.target) for s in steps))
        mine = {t: [s for s in steps if str(s.target) == t] for t in targets}
        rps = {t: statistics.fmean(s.throughput_rps for s in mine[t]) for t in targets}
        out[f"throughput at {level} client(s)"] = sorted(targets, key=lambda t: -rps[t])
        if level == levels[0]:
            served = {t: [s.latency_ms.p50 for s in mine[t] if not s.failed] for t in targets}
            p50 = {t: statistics.fmean(v) if v else math.inf for t, v in served.items()}
            out[f"p50 at {level} client(s)"] = sorted(targets, key=lambda t: p50[t])
    return out


def open_standings(record: OpenLoopRecord) -> dict[str, list[str]]:
    """The models by highest rate within the SLO, best first."""
    ranked = sorted(record.models, key=lambda m: -record.max_rate.get(m, 0.0))
    return {f"highest rate within {record.slo}": ranked}


def close_to_leader(record: OpenLoopRecord, ranked: list[str]) -> list[str]:
    """The models ``ranked`` (best first) that ``record``'s search did not separate from the
    first: their brackets overlap (:meth:`OpenLoopRecord.ahead`)."""
    return [m for m in ranked[1:] if not record.ahead(ranked[0], m)]


def standings_of(run: tuple[RunRecord | None, OpenLoopRecord | None]) -> dict[str, list[str]]:
    """Every measure's ranking in one run (its closed loop, its open loop, either optional)."""
    closed, openloop = run
    out = closed_standings(closed) if closed is not None else {}
    return out | (open_standings(openloop) if openloop is not None else {})


def compare(
    served: RunRecord,
    defaults: tuple[RunRecord | None, OpenLoopRecord | None],
    tuned: tuple[RunRecord | None, OpenLoopRecord | None],
    answers: tuple[str, str] = ("", ""),
) -> TunedComparison:
    """Rank the models by each measure in both runs (``answers``: each run's, by
    :func:`answer_in`). Each model's configuration is the one the ``--tuned`` run recorded in
    effect (``served``: that run's record, :attr:`RunRecord.tuned`, by the runtime that
    answered it), not ``tuned.json`` as it reads now."""
    closed, openloop = tuned
    opened = open_standings(openloop) if openloop is not None else {}
    before = standings_of(defaults)
    after = (closed_standings(closed) if closed is not None else {}) | opened
    # The models themselves (the closed-loop rankings name targets: "m via tfserving").
    names = [s.target.model for s in closed.steps] if closed is not None else []
    names += [ModelName.parse(m) for m in openloop.models] if openloop is not None else []
    configs = {}
    for name in dict.fromkeys(names):
        model = str(name)
        found = served.tuned.get(f"{name.variant}@{runtime_of(model, served.variants)}")
        configs[model] = str(found) if found else "not tuned: the service's settings"
    close = {}
    if openloop is not None:  # who the open loop's search did not separate from its leader
        close = {k: close_to_leader(openloop, after[k]) for k in opened}
    standings = [Standing(k, before[k], after[k], close.get(k, [])) for k in after if k in before]
    repeats = tuned[0].plan.repeats if tuned[0] is not None else 1
    return TunedComparison(configs, standings, repeats, answers)


def answer_in(folder: Path) -> str:
    """The ``model@runtime`` the run in ``folder`` says to deploy ("" if it names none)."""
    record, levels = load_levels(folder)
    items = speedups(record, levels) if record.steps else []
    found = answer(record, levels, items, load_openloop(folder))
    return str(found.recommended) if found is not None else ""


def tuned_lines(folder: Path) -> list[str]:
    """The report's verdict line on ``--tuned``, if this run has a comparison."""
    found = TunedComparison.load(folder)
    return [found.verdict()] if found is not None else []


def tuned_tables(folder: Path) -> dict[str, Table]:
    """The report's tables on ``--tuned``, if this run has a comparison."""
    found = TunedComparison.load(folder)
    if found is None:
        return {}
    standings = (
        ["measure", "at the defaults (best first)", "at their best", "same leader"],
        [
            [s.measure, ", ".join(s.defaults), ", ".join(s.tuned), s.leader_column()]
            for s in found.standings
        ],
    )
    configs = (["model", "tuned configuration"], [[m, c] for m, c in found.configs.items()])
    return {
        "At their best (--tuned) vs at the defaults": standings,
        "Tuned configurations": configs,
    }
