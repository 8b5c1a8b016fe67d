"""Run history: every closed-loop load test in one SQLite file, to compare runs over time.

Each run stores its plan, machine and versions (as JSON) and, per target and level, the
throughput and latency of every repeat. Two runs are *comparable* when they tested the same
models, protocols, levels and payloads on the same CPU, against a service started with the
same options and, with ``--tuned``, the same tuned configurations, or (``--url``) one that
reported the same engine (:mod:`loadtests.comparable`):
:func:`previous_comparable` finds the last such run for the report. This module stores and
finds runs and reads their figures back (:func:`figures`, :func:`rates`);
:mod:`loadtests.changes` sets two runs side by side, and ``mnist-serve history check`` judges
that comparison as a regression gate (:mod:`loadtests.gate`).

The file is ``history.sqlite`` beside the run folders (``runs/``) unless
``MNIST_SERVE_HISTORY`` (or ``--history``) names another.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import TypeAdapter

from loadtests.comparable import comparable_key, served_elsewhere
from loadtests.labels import Label
from loadtests.openloop_results import OpenLoopRecord
from loadtests.protocols import Protocol
from loadtests.results import RESULTS_FILE, LoadPlan, Machine, RunRecord, StepResult
from modelrepo.tuned import ServingConfig

ENV_VAR = "MNIST_SERVE_HISTORY"
# PRAGMA user_version of the file: 2 since the steps keep their target's parts in columns; 3
# since the comparable key holds the service's options (``--tuned``).
VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL,
    created_at TEXT NOT NULL,
    comparable TEXT NOT NULL,
    plan TEXT NOT NULL,
    machine TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rates (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    model TEXT NOT NULL,
    slo TEXT NOT NULL,
    max_rate REAL NOT NULL,
    first_missed REAL
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,  -- the label as displayed, for people reading the file
    variant TEXT NOT NULL,
    runtime TEXT,
    protocol TEXT NOT NULL,
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
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'steps'").fetchone()
        if tables[0] and version < 2:
            with db:
                migrate(db)
        if tables[0] and version < 3:
            with db:
                key_server_options(db, path)
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version = {VERSION}")
        with db:  # a transaction
            yield db


def migrate(db: sqlite3.Connection) -> None:
    """A history from before version 2 (steps keyed by their displayed target only): give each
    step its target's parts, found by matching the display text against the labels its run's
    plan makes (the text is not parsed)."""
    for column in ("variant", "runtime", "protocol"):
        db.execute(f"ALTER TABLE steps ADD COLUMN {column} TEXT")
    for run_id, plan_json in db.execute("SELECT id, plan FROM runs").fetchall():
        for label in TypeAdapter(LoadPlan).validate_json(plan_json).targets():
            db.execute(
                "UPDATE steps SET variant = ?, runtime = ?, protocol = ? "
                "WHERE run_id = ? AND target = ?",
                (label.variant, label.runtime, str(label.protocol), run_id, str(label)),
            )
    # A step no label of its plan names cannot be read: dropped.
    db.execute("DELETE FROM steps WHERE variant IS NULL OR protocol IS NULL")


def key_server_options(db: sqlite3.Connection, path: Path) -> None:
    """A history from before version 3 (keys without the service's options): each run whose
    ``results.json`` can still be found (its folder as stored, from here or beside the
    history) and names options (a ``loadtest --tuned`` run) gets them in its key, so that it
    stops matching the runs at the defaults. A run whose folder is gone keeps its key."""
    for run_id, folder, plan_json, machine_json in db.execute(
        "SELECT id, folder, plan, machine FROM runs"
    ).fetchall():
        options = stored_options(Path(folder), path)
        if options:
            plan = TypeAdapter(LoadPlan).validate_json(plan_json)
            machine = TypeAdapter(Machine).validate_json(machine_json)
            key = comparable_key(plan, machine, options)
            db.execute("UPDATE runs SET comparable = ? WHERE id = ?", (key, run_id))


def stored_options(folder: Path, path: Path) -> list[str]:
    """The service options a run's ``results.json`` recorded, read as plain JSON (a file of an
    older schema has them too), or [] when it cannot be found or read."""
    places = [folder] if folder.is_absolute() else [folder, path.parent.parent / folder]
    for place in [*places, path.parent / folder.name]:
        try:
            data = json.loads((place / RESULTS_FILE).read_bytes())
        except (OSError, ValueError):
            continue
        options = data.get("server_args") if isinstance(data, dict) else None
        return [str(o) for o in options] if isinstance(options, list) else []
    return []


def store(
    path: Path,
    folder: Path,
    plan: LoadPlan,
    closed: RunRecord | None = None,
    openloop: OpenLoopRecord | None = None,
    server_args: Sequence[str] | None = None,
    tuned: Mapping[str, ServingConfig] | None = None,
    elsewhere: Mapping[str, object] | None = None,
) -> int:
    """Add a run to the history: its closed-loop steps, its open-loop search, or both; its id.
    ``server_args``, ``tuned`` and ``elsewhere``: the options of the service it started, the
    tuned configurations it ran and how a service it did not start served (default: the
    closed-loop record's)."""
    found = closed or openloop
    if found is None or found.machine is None:
        raise ValueError("a run to store needs closed-loop results or an open-loop record")
    if server_args is None:
        server_args = closed.server_args if closed is not None else ()
    if tuned is None:
        tuned = closed.tuned if closed is not None else {}
    if elsewhere is None:
        elsewhere = served_elsewhere(closed)
    with connect(path) as db:
        row = (
            str(folder),
            found.created_at,
            comparable_key(plan, found.machine, server_args, tuned, elsewhere),
            json.dumps(asdict(plan)),
            json.dumps(asdict(found.machine)),
        )
        cursor = db.execute(
            "INSERT INTO runs (folder, created_at, comparable, plan, machine) VALUES (?,?,?,?,?)",
            row,
        )
        run_id = int(cursor.lastrowid or 0)
        db.executemany(
            "INSERT INTO steps (run_id, target, variant, runtime, protocol, level, repeat, "
            "throughput_rps, p50_ms, p99_ms, errors, requests) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [step_row(run_id, s) for s in (closed.steps if closed else [])],
        )
        if openloop is not None:
            db.executemany(
                "INSERT INTO rates VALUES (?,?,?,?,?)",
                [
                    (run_id, model, str(openloop.slo), rate, _finite(openloop.bracket(model)[1]))
                    for model, rate in openloop.max_rate.items()
                ],
            )
    return run_id


def step_row(run_id: int, s: StepResult) -> tuple[object, ...]:
    """One step as a row of the ``steps`` table. A step without a successful request has no
    latency (NaN, which SQLite would store as NULL): its p50 and p99 are stored as infinity,
    as the open loop counts a failed request, with throughput 0 and errors == requests."""
    t = s.target
    return (
        run_id,
        str(t),
        t.variant,
        t.runtime,
        str(t.protocol),
        s.concurrency,
        s.repeat,
        s.throughput_rps,
        _latency(s.latency_ms.p50),
        _latency(s.latency_ms.p99),
        s.errors,
        s.requests,
    )


def _latency(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


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
    """A run by id or folder (its path, or its name when no other folder has it; the newest
    run there, when ``--out`` was reused); KeyError naming what exists otherwise."""
    found = runs(path)
    for run in reversed(found):
        if ref in (str(run.id), run.folder):
            return run
    for run in reversed(found):  # the same folder spelled otherwise (absolute, or ./runs/x)
        if same_folder(Path(run.folder), Path(ref), path):
            return run
    named = [run for run in found if Path(run.folder).name == ref]
    if len({run.folder for run in named}) > 1:  # e.g. every `loadtest --tuned` has a "defaults"
        which = ", ".join(f"{run.id} ({run.folder})" for run in named)
        raise KeyError(f"{ref!r} names several folders in {path}: give an id or a path: {which}")
    if named:
        return named[-1]
    raise KeyError(f"no run {ref!r} in {path} (ids 1-{len(found)}; see `mnist-serve history`)")


def same_folder(stored: Path, ref: Path, path: Path) -> bool:
    """Whether ``ref`` is the folder stored as ``stored`` in the history at ``path``: a relative
    one was stored from the working directory of its run, which is taken to be here or the
    history's parent's parent (``runs/history.sqlite`` in the directory above ``runs``)."""
    if len(ref.parts) < 2 and not ref.is_absolute():
        return False  # a bare name: get() matches names apart, refusing one that several share
    places = [stored] if stored.is_absolute() else [stored, path.parent.parent / stored]
    target = ref.resolve()
    return any(place.resolve() == target for place in places)


def locate(folder: Path) -> Path:
    """The history holding the run in ``folder``: the one beside it, else the one beside its
    parent (a ``loadtest --tuned`` run's ``OUT/defaults``), else the one beside it (no such run
    yet)."""
    candidates = [default_path(folder.parent), default_path(folder.parent.parent)]
    for path in candidates:
        if path.is_file():
            with suppress(KeyError):
                get(path, str(folder))
                return path
    return candidates[0]


def previous_comparable(path: Path, folder: Path, record: RunRecord) -> Run | None:
    """The latest run with the same comparable key and closed-loop steps stored before
    ``folder``'s run (its newest, as :func:`get` finds it; before any run, if it has none yet):
    a report rebuilt later never takes a later run, or itself, for the one before, and a reused
    ``--out`` compares with its own previous run."""
    if not path.is_file():
        return None
    this: int | None
    try:
        found = get(path, str(folder))
        this, key = found.id, found.comparable
    except KeyError:
        this = None
        key = comparable_key(
            record.plan,
            record.machine,
            record.server_args,
            record.tuned,
            served_elsewhere(record),
        )
    measured = kinds(path)
    earlier = [
        r
        for r in runs(path)
        if r.comparable == key
        and "closed" in measured.get(r.id, set())
        and (this is None or r.id < this)
    ]
    return earlier[-1] if earlier else None


def kinds(path: Path) -> dict[int, set[str]]:
    """How each run was measured: "closed" (closed-loop steps), "open" (searched rates), or
    both; a run with neither is absent."""
    found: dict[int, set[str]] = {}
    with connect(path) as db:
        for kind, table in (("closed", "steps"), ("open", "rates")):
            for (run_id,) in db.execute(f"SELECT DISTINCT run_id FROM {table}"):
                found.setdefault(run_id, set()).add(kind)
    return found


class Figure(StrEnum):
    """A per-repeat figure of the ``steps`` table (the value is its column)."""

    THROUGHPUT = "throughput_rps"
    P50 = "p50_ms"
    P99 = "p99_ms"


def throughputs(path: Path, run: Run) -> dict[tuple[Label, int], list[float]]:
    """Per (target, level), the throughput of each repeat."""
    return figures(path, run, Figure.THROUGHPUT)


def figures(path: Path, run: Run, figure: Figure) -> dict[tuple[Label, int], list[float]]:
    """Per (target, level), ``figure`` of each repeat."""
    with connect(path) as db:
        rows = db.execute(
            f"SELECT variant, runtime, protocol, level, {Figure(figure).value} FROM steps "
            "WHERE run_id = ? ORDER BY repeat",
            (run.id,),
        ).fetchall()
    out: dict[tuple[Label, int], list[float]] = {}
    for variant, runtime, protocol, level, value in rows:
        label = run.plan.label(variant, runtime, Protocol(protocol))
        out.setdefault((label, level), []).append(value)
    return out


def rates(path: Path, run_id: int) -> dict[tuple[str, str], tuple[float, float | None]]:
    """Per (model, SLO), the open-loop search's bracket of a run."""
    with connect(path) as db:
        rows = db.execute(
            "SELECT model, slo, max_rate, first_missed FROM rates WHERE run_id = ?", (run_id,)
        ).fetchall()
    return {(model, slo): (rate, missed) for model, slo, rate, missed in rows}
