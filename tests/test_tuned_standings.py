"""``loadtest --tuned``'s standings: each measure's models best first in both runs, and
whether a change of leader is one the measurement separated (synthetic records; no server)."""

from __future__ import annotations

import math

from loadtests.openloop_results import ClientCeiling, ClientRun, OpenLoopRecord, RatePoint, Slo
from loadtests.results import Percentiles, RunRecord
from loadtests.tuned_compare import Standing, compare


def test_standings_keep_protocols_apart_and_rank_a_failed_target_last() -> None:
    """Over two protocols, each target ranks on its own figures (they were once averaged per
    model); a target whose every request failed has no p50 and comes last (its NaN once sorted
    anywhere)."""
    from dataclasses import replace

    from loadtests.labels import Label
    from loadtests.protocols import Protocol
    from loadtests.results import LoadPlan, StepResult
    from loadtests.tuned_compare import closed_standings, compare
    from tests.helpers import run_record, step_result

    def step(variant: str, protocol: Protocol, rps: float, p50: float) -> StepResult:
        label = Label(variant, protocol=protocol, show_protocol=True)
        plain = step_result(variant, 1, 0, rps, errors=100 if math.isnan(p50) else 0)
        latency = replace(plain.latency_ms, p50=p50)
        return replace(plain, target=label, protocol=protocol, latency_ms=latency)

    native, tfserving = Protocol.NATIVE, Protocol.TFSERVING
    steps = [
        step("original", native, 100, 2.0),
        step("depthwise", native, 150, 1.0),
        step("original", tfserving, 300, 0.5),
        step("depthwise", tfserving, 0, math.nan),
    ]
    plan = LoadPlan(concurrency=(1,), protocols=(native, tfserving))
    found = closed_standings(run_record(plan, steps=steps))
    assert found["p50 at 1 client(s)"] == [
        "original via tfserving", "depthwise via native", "original via native",
        "depthwise via tfserving",
    ]  # fmt: skip
    assert found["throughput at 1 client(s)"][:2] == [
        "original via tfserving",
        "depthwise via native",
    ]
    # The configurations are per model, once each (the target names once crashed the parse).
    run = run_record(plan, steps=steps)
    compared = compare(run, (run, None), (run, None))
    assert list(compared.configs) == ["original", "depthwise"]
    assert set(compared.configs.values()) == {"not tuned: the service's settings"}


def test_each_models_configuration_is_the_one_its_run_recorded_in_effect() -> None:
    """The configurations come from the ``--tuned`` run's record, by the runtime that answered
    each model (a bare name: its variant's default runtime, here onnx), not from ``tuned.json``
    as it reads when the comparison is made (once read from the repository, as savedmodel)."""
    from loadtests.described import ServedVariant
    from loadtests.results import LoadPlan
    from modelrepo.tuned import ServingConfig
    from tests.helpers import run_record

    config = ServingConfig(max_batch_size=8, max_wait_ms=0.5, intra_op_threads=1, workers=1)
    plan = LoadPlan(variants=("original", "depthwise"))
    served = [
        ServedVariant("original", runtime="savedmodel"),
        ServedVariant("depthwise", runtime="onnx"),
    ]
    run = run_record(plan, variants=served)
    run.tuned = {"depthwise@onnx": config, "original@onnx": config}
    defaults, tuned = openloop_of([("a", 100, True, False)]), openloop_of([("a", 100, True, False)])
    defaults.models = tuned.models = ["original", "depthwise@onnx", "depthwise"]
    found = compare(run, (None, defaults), (None, tuned)).configs
    assert found == {
        "original": "not tuned: the service's settings",  # served on savedmodel, not tuned there
        "depthwise@onnx": str(config),
        "depthwise": str(config),
    }


def record_of() -> RunRecord:
    """The record of a run that served models a and b, neither tuned."""
    from loadtests.results import LoadPlan
    from tests.helpers import run_record

    return run_record(LoadPlan(variants=("a", "b")))


def openloop_of(points: list[tuple[str, float, bool, bool]]) -> OpenLoopRecord:
    """An open-loop record of models a and b from (model, rate, met, client late) runs."""
    late = Slo(99, 20).client_lag_limit_ms + 1
    runs = [
        RatePoint(m, r, 10, 10, r, Percentiles(1, 2, 3, 4, 5), 4 if met else 40, met,
                  late if lagged else 0.1)
        for m, r, met, lagged in points
    ]  # fmt: skip
    best = {m: max((p.rate for p in runs if p.model == m and p.met), default=0.0) for m in "ab"}
    record = OpenLoopRecord(Slo(99, 20), 1, [100], ["a", "b"], best, runs)
    record.client = ClientCeiling(4000.0, [ClientRun(4000, True, 3.0, 0.2)])
    return record


def test_a_new_open_loop_leader_not_apart_from_the_old_is_said_to_be_so() -> None:
    """At the defaults a met 400 req/s and b missed 400 on time: a leads. At their best b met
    600 and a 500, but each missed the next rate only with the client late: two lower bounds,
    so b's lead is not apart from a, and the verdict and the table say so. Once a misses 600
    on time, b's lead is separated."""
    defaults = openloop_of([("a", 400, True, False), ("b", 200, True, False),
                            ("b", 400, False, False)])  # fmt: skip
    tuned = openloop_of([("a", 500, True, False), ("a", 1000, False, True),
                         ("b", 600, True, False), ("b", 1200, False, True)])  # fmt: skip
    found = compare(record_of(), (None, defaults), (None, tuned))
    (standing,) = found.standings
    assert (standing.defaults[0], standing.tuned[0], standing.close) == ("a", "b", ["a"])
    assert "b at their best but not apart from a" in found.verdict()
    assert standing.leader_column() == "no (not apart)"
    tuned.points[1] = RatePoint("a", 600, 10, 10, 600, Percentiles(1, 2, 3, 4, 5), 40, False, 0.1)
    found = compare(record_of(), (None, defaults), (None, tuned))
    assert found.standings[0].close == []
    assert "b at their best" in found.verdict() and "not apart" not in found.verdict()
    assert found.standings[0].leader_column() == "no"


def test_a_run_that_ranked_no_model_changes_the_leader_in_words() -> None:
    """A run whose measure ranked nothing (its open loop measured no model) still reads."""
    standing = Standing("highest rate within p99 <= 20 ms", [], ["b"])
    assert not standing.same_leader and standing.apart and standing.leader_column() == "no"
    assert standing.change().startswith("highest rate within p99 <= 20 ms: no model led")
