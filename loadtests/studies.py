"""Explore and tune runs in the run history: one row each, beside the load tests.

The load tests' tables (``runs``, ``steps``, ``rates``, :mod:`loadtests.history`) stay as they
are; these runs go to their own ``studies`` table of the same ``history.sqlite``: the kind
(``explore`` or ``tune``), the folder holding its report, when, and a one-line summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loadtests.history import connect

Kind = Literal["explore", "tune"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    folder TEXT NOT NULL,
    created_at TEXT NOT NULL,
    summary TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Study:
    """One stored explore or tune run."""

    id: int
    kind: str
    folder: str
    created_at: str
    summary: str


def store(path: Path, folder: Path, kind: Kind, created_at: str, summary: str) -> int:
    """Add an explore or tune run to the history at ``path``; its id."""
    with connect(path) as db:
        db.executescript(SCHEMA)
        cursor = db.execute(
            "INSERT INTO studies (kind, folder, created_at, summary) VALUES (?,?,?,?)",
            (kind, str(folder), created_at, summary),
        )
        return int(cursor.lastrowid or 0)


def studies(path: Path) -> list[Study]:
    """Every stored explore and tune run, oldest first."""
    if not path.is_file():
        return []
    with connect(path) as db:
        db.executescript(SCHEMA)
        rows = db.execute("SELECT id, kind, folder, created_at, summary FROM studies ORDER BY id")
        return [Study(*row) for row in rows.fetchall()]
