"""explore's measurement of one served model, its service and load replaced by fakes: where
its rate search leaves the model's answer (no server; the end-to-end runs are
tests/test_explore.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from loadtests import closedloop, explore, slo
from loadtests.closedloop import ClosedLoopResult
from loadtests.explore_results import QUICK
from loadtests.openloop_results import RatePoint, Slo
from loadtests.results import Percentiles
from modelrepo.layout import ModelName

SLO = Slo(99, 20)


def fake_model(monkeypatch: pytest.MonkeyPatch, capacity: float) -> explore.Pending:
    """A model that meets the SLO up to ``capacity`` req/s with the client keeping up, and
    misses above it; its closed-loop figures fixed."""
    latency = Percentiles(1, 2, 3, 4, 5)

    def run_closed_loop(url: str, bodies: list[bytes], clients: int, *args: Any) -> Any:
        return ClosedLoopResult(clients, 1.0, 100, 0, 100.0 * clients, latency)

    def measure_rate(url: str, model: str, bodies: list[bytes], rate: float, *a: Any) -> Any:
        met = rate <= capacity
        return RatePoint(model, rate, 1000, 1000, rate, latency, 4 if met else 40, met, 0.1)

    monkeypatch.setattr(closedloop, "run_closed_loop", run_closed_loop)
    monkeypatch.setattr(slo, "measure_rate", measure_rate)
    metadata = SimpleNamespace(
        family="strides", description="a net", parameters=10, macs=100, test_accuracy=0.98,
        epoch_seconds=[1.0],
    )  # fmt: skip
    version = SimpleNamespace(version=1, load_metadata=lambda: metadata)
    return explore.Pending(ModelName("small", "onnx"), version)  # type: ignore[arg-type]


def test_a_miss_with_the_client_keeping_up_bounds_the_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On --quick's ladder (200, 800 req/s) the model meets 200 and misses 800 with the client
    on time: its answer is 200, bounded by the miss at 800."""
    item = fake_model(monkeypatch, capacity=500)
    found = explore.measure_served("http://x", item, [b"{}"], QUICK, SLO, (0.1, 0.5), 1000)
    assert (found.max_rate, found.first_missed) == (200, 800)


def test_with_a_client_that_kept_up_with_no_rate_no_miss_bounds_the_rate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The calibration's client kept up with no rate: the same miss may be the client's, so the
    answer is a lower bound (first_missed None: ">= 200" in the report)."""
    item = fake_model(monkeypatch, capacity=500)
    found = explore.measure_served(
        "http://x", item, [b"{}"], QUICK, SLO, (0.1, 0.5), None, unmeasurable=True
    )
    assert (found.max_rate, found.first_missed) == (200, None)


def test_variants_chosen_narrow_the_family_in_catalogue_order() -> None:
    plan = explore.ExplorePlan(family="strides", chosen=("small-stride4", "small-stride2"))
    assert plan.variants() == ["small-stride2", "small-stride4"]
    assert plan.label == "strides (small-stride2, small-stride4)"
    whole = explore.ExplorePlan(family="strides")
    assert whole.variants() == [f"small-stride{n}" for n in (2, 3, 4, 5)]
    assert whole.label == "strides"
    picked = explore.ExplorePlan(family="all", chosen=("small-pool2", "small-stride2"))
    assert picked.label == "small-stride2, small-pool2"  # not "all (...)"


def test_a_variant_outside_the_family_is_refused_naming_the_familys() -> None:
    with pytest.raises(ValueError, match="not in family 'strides': small-pool2, nope; its va"):
        explore.ExplorePlan(family="strides", chosen=("small-stride2", "small-pool2", "nope"))
    assert explore.ExplorePlan(family="all", chosen=("small-pool2",)).variants() == ["small-pool2"]
