"""scripts/bench_memory.py against real servers: it sums a whole process tree's memory once
every worker reports its in-process models."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import script_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def memory() -> ModuleType:
    """The script as a module."""
    return script_module("bench_memory")


def test_measures_the_whole_tree_once_every_copy_is_warm(
    memory: ModuleType, models_dir: Path
) -> None:
    """One process against the hybrid on SavedModel and ONNX: the hybrid's workers both run
    the ONNX models themselves (never a SavedModel), and its tree (supervisor, executor, two
    front ends) holds more than the one process."""
    variants = sorted(p.name for p in models_dir.iterdir() if p.is_dir())
    single, _ = memory.measure(models_dir, memory.DESIGNS["single"], "savedmodel,onnx", 2)
    hybrid, here = memory.measure(
        models_dir, memory.DESIGNS["hybrid (default)"], "savedmodel,onnx", 2
    )
    assert sorted(name.split("@")[0] for name in here) == variants
    assert all("@onnx:" in name for name in here), here
    assert 100 < single < hybrid, (single, hybrid)
