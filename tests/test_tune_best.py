"""``tune``'s choice of the best configuration when the rate search leaves lower bounds: two
configurations whose rates are not apart are decided by p50 at one client (synthetic trials;
no server)."""

from __future__ import annotations

from loadtests.openloop_results import RatePoint, Slo
from loadtests.rate_claims import WHY_LOWER_BOUND
from loadtests.results import Percentiles
from loadtests.tune_report import verdict
from loadtests.tune_results import DEFAULTS, ModelTuning, Trial

SLO = Slo(99, 20)
LATE = SLO.client_lag_limit_ms + 1


def point(rate: float, met: bool, lag_ms: float) -> RatePoint:
    """One run of the tuned model at ``rate``, the client ``lag_ms`` late at its p99."""
    latency = Percentiles(1, 2, 3, 4, 5)
    return RatePoint("a@onnx", rate, 10, 10, rate, latency, 4 if met else 40, met, lag_ms)


def test_a_lower_bound_does_not_beat_a_faster_one_client_configuration() -> None:
    """batch 64 met 2,000 req/s and missed 2,400 only with the client late; the defaults met
    1,600 and missed 2,000 with the client keeping up. 2,000 is a lower bound above the
    defaults' bracket [1,600, 2,000]: apart, batch 64 wins. Once the defaults' miss is also the
    client's, both are lower bounds: the lower p50 at one client (the defaults') wins, and the
    verdict says why."""
    batched = DEFAULTS.model_copy(update={"max_batch_size": 64})
    defaults_points = [point(1600, True, 0.1), point(2000, False, 0.1)]
    tuning = ModelTuning("a@onnx", 1, slo=SLO)
    tuning.trials = [
        Trial(DEFAULTS, 1600, 0.4, 20, defaults_points),
        Trial(batched, 2000, 0.9, 20, [point(2000, True, 0.1), point(2400, False, LATE)]),
    ]
    best = tuning.best
    assert best is not None and best.config == batched
    assert "did not separate" not in verdict(tuning)
    defaults_points[1] = point(2000, False, LATE)
    best = tuning.best
    assert best is not None and best.config == DEFAULTS
    tuning.saved = "tuned.json"
    said = verdict(tuning)
    assert "The rate search did not separate 2 configurations (up to 2,000 req/s" in said
    assert "the lowest p50 at one client chose among them" in said
    # Why they are bounds, in the load test's reports' words.
    assert f"is a lower bound when it {WHY_LOWER_BOUND}" in said


def test_a_configuration_that_met_nothing_is_not_a_contender() -> None:
    """A configuration that missed every rate, only with the client late, has no lower bound
    to offer: it does not take the best from one that met the SLO, however low its p50."""
    fast = DEFAULTS.model_copy(update={"max_wait_ms": 0.0})
    tuning = ModelTuning("a@onnx", 1, slo=SLO)
    tuning.trials = [
        Trial(DEFAULTS, 1600, 0.4, 20, [point(1600, True, 0.1)]),
        Trial(fast, 0, 0.1, 20, [point(400, False, LATE)]),
    ]
    best = tuning.best
    assert best is not None and best.config == DEFAULTS


def test_with_a_client_that_kept_up_with_no_rate_no_miss_separates_configurations() -> None:
    """The calibration's client kept up with no rate: batch 64's 2,000 req/s is not apart from
    the defaults' 1,600 however their misses went, so p50 at one client chooses, and the
    verdict says why."""
    batched = DEFAULTS.model_copy(update={"max_batch_size": 64})
    tuning = ModelTuning("a@onnx", 1, slo=SLO)
    tuning.trials = [
        Trial(DEFAULTS, 1600, 0.4, 20, [point(1600, True, 0.1), point(2000, False, 0.1)]),
        Trial(batched, 2000, 0.9, 20, [point(2000, True, 0.1), point(2400, False, 0.1)]),
    ]
    best = tuning.best
    assert best is not None and best.config == batched
    tuning.unmeasurable = True
    best = tuning.best
    assert best is not None and best.config == DEFAULTS
    assert "the client kept up with no calibration rate, so no miss bounds a rate" in verdict(
        tuning
    )
