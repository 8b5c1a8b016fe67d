"""Load-test, explore and tune reports under the runs folder, listed for the web page and served
read-only.

A run is a folder directly under ``runs_dir`` holding a ``report.html`` (what ``mnist-serve
loadtest`` and ``demo`` write), an ``explore.html`` (``mnist-serve explore``) or a ``tune.html``
(``mnist-serve tune``). Nothing from a request is ever joined to a path: a request
names a run, the name must match :data:`RUN_NAME`, and the file served is the one the scan of
``runs_dir`` found under that name, after checking that it really lies inside ``runs_dir``
(a symbolic link pointing elsewhere is skipped).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
REPORT_FILE = "report.html"
RESULTS_FILE = "results.json"
# Each kind of run: its page and the JSON its summary comes from.
PAGES = {
    "loadtest": (REPORT_FILE, RESULTS_FILE),
    "explore": ("explore.html", "explore.json"),
    "tune": ("tune.html", "tune.json"),
}
MAX_RESULTS_BYTES = 5_000_000  # results.json is read for a summary only


@dataclass(frozen=True)
class Run:
    """One run with a report."""

    name: str
    report: Path
    created_at: str | None
    models: list[str]
    target: str | None
    kind: str = "loadtest"  # loadtest, explore or tune (a key of PAGES)


def find_runs(root: Path) -> dict[str, Run]:
    """Every run with a report directly under ``root``, newest first (by name, then time)."""
    if not root.is_dir():
        return {}
    base = root.resolve()
    runs = []
    for folder in root.iterdir():
        if not RUN_NAME.match(folder.name):
            continue
        for kind, (page, _) in PAGES.items():
            report = folder / page
            if not report.is_file() or not report.resolve().is_relative_to(base):
                continue  # none, or a link out of the runs folder
            runs.append(
                _describe(folder.name, report) if kind == "loadtest" else _study(kind, report)
            )
            break
    runs.sort(key=lambda r: (r.created_at or "", r.name), reverse=True)
    return {run.name: run for run in runs}


def _describe(name: str, report: Path) -> Run:
    created_at, models, target = None, [], None
    results = report.with_name(RESULTS_FILE)
    try:
        if results.is_file() and results.stat().st_size <= MAX_RESULTS_BYTES:
            record = json.loads(results.read_text())
            created_at = record.get("created_at")
            target = record.get("target")
            models = sorted({step["model"] for step in record.get("steps", []) if "model" in step})
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # a summary is a nicety: the report itself is still listed
    return Run(name, report, created_at, models, target)


def _study(kind: str, report: Path) -> Run:
    """An explore or tune run: its time and models from its JSON."""
    created_at, models = None, []
    data = report.with_name(PAGES[kind][1])
    try:
        if data.is_file() and data.stat().st_size <= MAX_RESULTS_BYTES:
            record = json.loads(data.read_text())
            created_at = record.get("updated_at") or record.get("created_at")
            key = "measurements" if kind == "explore" else "models"
            models = sorted({m["model"] for m in record.get(key, []) if "model" in m})
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # a summary is a nicety: the report itself is still listed
    return Run(report.parent.name, report, created_at, models, None, kind)
