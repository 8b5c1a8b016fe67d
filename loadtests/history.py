"""Run history: every closed-loop load test in one SQLite file, to compare runs over time.

Each run stores its plan, machine and versions (as JSON) and, per target and level, the
throughput and latency of every repeat. Two runs are *comparable* when they tested the same
models, protocols, levels and payloads on the same CPU: :func:`previous_comparable` finds the
last such run for the report, and :func:`compare` sets two runs side by side level by level,
each with its 95 % interval over repeats, and says whether the difference is beyond them;
:func:`compare_speedups` does the same for the speedup of one model over another.

The file is ``history.sqlite`` beside the run folders (``runs/``) unless
``MNIST_SERVE_HISTORY`` (or ``--history``) names another.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import TypeAdapter

from loadtests.results import LoadPlan, Machine, RunRecord
from loadtests.stats import Interval, mean_interval, ratio_interval

ENV_VAR = "MNIST_SERVE_HISTORY"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL,
    created_at TEXT NOT NULL,
    comparable TEXT NOT NULL,
    plan TEXT NOT NULL,
    machine TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,
    level INTEGER NOT NULL,
    repeat INTEGER NOT NULL,
    throughput_rps REAL NOT NULL,
    p50_ms REAL NOT NULL,
    p99_ms REAL NOT NULL,
    errors INTEGER NOT NULL,
    requests INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Run:
    """One stored load test."""

    id: int
    folder: str
    created_at: str
    comparable: str
    plan: LoadPlan
    machine: Machine


def default_path(runs_dir: Path) -> Path:
    """Where the history lives: $MNIST_SERVE_HISTORY, else ``runs_dir/history.sqlite``."""
    return Path(os.environ.get(ENV_VAR) or runs_dir / "history.sqlite")


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """The history database (created on first use), committed on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA)
        with db:  # a transaction
            yield db


def comparable_key(plan: LoadPlan, machine: Machine) -> str:
    """What must match for two runs to compare: models, protocols, levels, payloads, CPU."""
    key = {
        "variants": list(plan.variants),
        "runtimes": list(plan.runtimes),
        "protocols": list(plan.protocols),
        "concurrency": list(plan.concurrency),
        "mode": plan.mode,
        "cpu": machine.cpu,
    }
    return json.dumps(key, sort_keys=True)


def store(path: Path, folder: Path, record: RunRecord) -> int:
    """Add a run to the history; its id."""
    with connect(path) as db:
        cursor = db.execute(
            "INSERT INTO runs (folder, created_at, comparable, plan, machine) VALUES (?,?,?,?,?)",
            (str(folder), record.created_at, comparable_key(record.plan, record.machine),
             json.dumps(asdict(record.plan)), json.dumps(asdict(record.machine))),
        )  # fmt: skip
        run_id = int(cursor.lastrowid or 0)
        db.executemany(
            "INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (run_id, s.target or s.model, s.concurrency, s.repeat, s.throughput_rps,
                 s.latency_ms.p50, s.latency_ms.p99, s.errors, s.requests)
                for s in record.steps
            ],
        )  # fmt: skip
    return run_id


def runs(path: Path) -> list[Run]:
    """Every stored run, oldest first."""
    with connect(path) as db:
        rows = db.execute("SELECT * FROM runs ORDER BY id").fetchall()
    plans, machines = TypeAdapter(LoadPlan), TypeAdapter(Machine)
    return [
        Run(r[0], r[1], r[2], r[3], plans.validate_json(r[4]), machines.validate_json(r[5]))
        for r in rows
    ]


def get(path: Path, ref: str) -> Run:
    """A run by id or folder (name or path); KeyError naming what exists otherwise."""
    found = runs(path)
    for run in found:
        if ref == str(run.id) or ref in (run.folder, Path(run.folder).name):
            return run
    raise KeyError(f"no run {ref!r} in {path} (ids 1-{len(found)}; see `mnist-serve history`)")


def previous_comparable(path: Path, folder: Path, record: RunRecord) -> Run | None:
    """The latest earlier run with the same comparable key (not ``folder`` itself)."""
    if not path.is_file():
        return None
    key = comparable_key(record.plan, record.machine)
    earlier = [r for r in runs(path) if r.comparable == key and r.folder != str(folder)]
    return earlier[-1] if earlier else None


def throughputs(path: Path, run_id: int) -> dict[tuple[str, int], list[float]]:
    """Per (target, level), the throughput of each repeat."""
    with connect(path) as db:
        rows = db.execute(
            "SELECT target, level, throughput_rps FROM steps WHERE run_id = ? ORDER BY repeat",
            (run_id,),
        ).fetchall()
    out: dict[tuple[str, int], list[float]] = {}
    for target, level, value in rows:
        out.setdefault((target, level), []).append(value)
    return out


@dataclass(frozen=True)
class Change:
    """One figure (a target's throughput, or a speedup) at one level in two runs, each with its
    95 % interval over repeats."""

    target: str  # the target, or "candidate over baseline" for a speedup
    level: int
    before: Interval
    after: Interval

    @property
    def ratio(self) -> float:
        """After over before."""
        return self.after.mean / self.before.mean if self.before.mean else float("nan")

    @property
    def moved(self) -> bool:
        """Whether the intervals do not overlap (never, with one repeat: no interval)."""
        return not self.before.overlaps(self.after)


def compare(path: Path, before: Run, after: Run) -> list[Change]:
    """Throughput of every (target, level) measured in both runs."""
    first, second = throughputs(path, before.id), throughputs(path, after.id)
    return [
        Change(key[0], key[1], mean_interval(first[key]), mean_interval(second[key]))
        for key in sorted(first.keys() & second.keys(), key=lambda k: (k[1], k[0]))
    ]


def compare_speedups(
    path: Path, before: Run, after: Run, pairs: list[tuple[str, str]]
) -> list[Change]:
    """Each (baseline, candidate) pair's throughput ratio, per level, in both runs: did the
    speedup move?"""
    first, second = throughputs(path, before.id), throughputs(path, after.id)
    changes = []
    for baseline, candidate in pairs:
        for level in sorted({k[1] for k in first} & {k[1] for k in second}):
            keys = [(baseline, level), (candidate, level)]
            if not all(k in first and k in second for k in keys):
                continue
            changes.append(
                Change(
                    f"{candidate} over {baseline}",
                    level,
                    ratio_interval(first[keys[0]], first[keys[1]]),
                    ratio_interval(second[keys[0]], second[keys[1]]),
                )
            )
    return changes
