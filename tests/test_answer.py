"""The one-screen answer: what to deploy, by how much, at what cost, what would change it
(synthetic windows with known ratios; no server)."""

from __future__ import annotations

import numpy as np

from loadtests.analysis import Level, Levels, speedups
from loadtests.answer import Answer, answer, comparison_rows, disagreements
from loadtests.decision import Stop
from loadtests.described import ServedVariant
from loadtests.labels import Label
from loadtests.openloop_results import ClientCeiling, ClientRun, OpenLoopRecord, RatePoint, Slo
from loadtests.report import answer_html
from loadtests.results import LoadPlan, Percentiles, RunRecord
from tests.helpers import run_record


def windows(
    plan: LoadPlan, ratios: dict[int, float], noise: float, pairs: int = 12, seed: int = 0
) -> Levels:
    """Per level, ``pairs`` windows of each variant: depthwise ``ratios[level]`` times as fast
    as original, window by window, with multiplicative ``noise``."""
    rng = np.random.default_rng(seed)
    levels: Levels = {}
    for level, ratio in ratios.items():
        base = 1000 * np.exp(rng.normal(0, 0.1, pairs))  # the machine drifts
        for variant, factor in (("original", 1.0), ("depthwise", ratio)):
            throughput = list(base * factor * np.exp(rng.normal(0, noise, pairs)))
            label = Label(variant)
            levels[(label, level)] = Level(
                label,
                level,
                np.full(100, 1000.0 / np.mean(throughput)),
                throughput,
                [1.0] * pairs,
                [2.0] * pairs,
                0,
                100 * pairs,
                0.99,
                0.1,
                0.5,
                0.1,
            )
    return levels


def record_of(
    plan: LoadPlan, accuracy: tuple[float, float], stops: list[Stop] | None = None
) -> RunRecord:
    served = [
        ServedVariant("original", test_accuracy=accuracy[0]),
        ServedVariant("depthwise", test_accuracy=accuracy[1]),
    ]
    record = run_record(plan, served)
    record.stops = stops or []
    return record


PLAN = LoadPlan(concurrency=(1, 32), duration_s=1, precision=0.05, budget_s=120)


def test_a_clear_gain_is_recommended_with_its_cost_and_the_trade_off() -> None:
    """1.3x at 32 clients, but slower at 1 client and less accurate: depthwise is recommended,
    the effect is faster with its interval, the accuracy cost is given, and both the trade-off
    and the level where the verdict flips are named."""
    record = record_of(PLAN, (0.990, 0.980))
    levels = windows(PLAN, {1: 0.8, 32: 1.3}, noise=0.02)
    items = speedups(record, levels)
    found = answer(record, levels, items)
    assert found is not None and found.recommended == Label("depthwise")
    assert "at 32 clients" in found.why and "faster" in found.effect
    assert "98.00% vs 99.00%" in found.cost
    assert any("worth more than" in change for change in found.changes)
    assert any("at 1 client depthwise is slower" in change for change in found.changes)
    rows = comparison_rows(record, items)
    assert [row[-1] for row in rows] == ["slower", "faster"]


def test_equal_speed_goes_to_the_more_accurate_model() -> None:
    """Equivalent within ±5 % (TOST): the answer is the more accurate model, and says why."""
    record = record_of(PLAN, (0.990, 0.980))
    levels = windows(PLAN, {1: 1.0, 32: 1.0}, noise=0.005, pairs=16)
    found = answer(record, levels, speedups(record, levels))
    assert found is not None and found.recommended == Label("original")
    assert "equivalent" in found.why and "more accurate" in found.why
    # The same with the accuracies the other way round: depthwise, whatever the throughputs.
    found = answer(record_of(PLAN, (0.980, 0.990)), levels, speedups(record, levels))
    assert found is not None and found.recommended == Label("depthwise")


def test_an_undecided_comparison_says_what_would_decide_it() -> None:
    """A noisy small difference after the budget: inconclusive, with the minutes and the
    --budget that would decide it."""
    stops = [Stop(1, 8, 30.0, "budget spent", 80), Stop(32, 8, 30.0, "budget spent", 80)]
    record = record_of(PLAN, (0.99, 0.99), stops)
    levels = windows(PLAN, {1: 1.04, 32: 1.04}, noise=0.2, pairs=8, seed=3)
    found = answer(record, levels, speedups(record, levels))
    assert found is not None
    undecided = [change for change in found.changes if "undecided" in change]
    assert undecided and "--budget" in undecided[0] and "more minutes" in undecided[0]


def test_one_target_has_no_answer() -> None:
    plan = LoadPlan(variants=("depthwise",), concurrency=(1,))
    record = run_record(plan)
    levels = {k: v for k, v in windows(PLAN, {1: 1.0}, 0.1).items() if k[0].variant == "depthwise"}
    assert answer(record, levels, speedups(record, levels)) is None


def test_the_answer_block_says_the_same_in_markdown_and_html() -> None:
    """Each given fact once, with its label, in both forms; a missing one (no price) is left out."""
    found = Answer(
        recommended=Label("depthwise", "litert"),
        why="the highest throughput",
        effect="1.31x",
        cost="0.70 points",
        changes=["a GPU <card>"],
    )
    markdown = "\n".join(found.lines())
    page = answer_html(found)
    for form in (markdown, page):
        assert "Deploy depthwise@litert" in form and "Cost to serve" not in form
        assert "Effect:" in form and "1.31x" in form and "Cost in accuracy:" in form
        assert "What would change the answer:" in form
    assert "a GPU &lt;card&gt;" in page and "- **Effect:** 1.31x" in markdown


def test_a_model_that_failed_is_not_given_more_minutes() -> None:
    """depthwise failed every window at 32 clients: no time would decide that comparison, and
    the answer says so instead of asking for more budget for it."""
    stops = [Stop(1, 8, 30.0, "precision reached"), Stop(32, 8, 30.0, "a model failed its windows")]
    record = record_of(PLAN, (0.99, 0.99), stops)
    levels = windows(PLAN, {1: 1.5, 32: 1.0}, noise=0.02, pairs=8, seed=3)
    levels[(Label("depthwise"), 32)].throughput[:] = [0.0] * 8
    found = answer(record, levels, speedups(record, levels))
    assert found is not None
    said = " ".join(found.changes)
    assert "depthwise vs original at 32: no valid window pairs" in said
    assert "more minutes" not in said


def test_an_open_loop_whose_client_kept_up_with_no_rate_does_not_rank_the_models() -> None:
    """Original serves more at 32 clients; the open loop's rates favour depthwise but its
    client met the SLO at no calibration rate: the answer goes by the closed loop, and says
    why the open loop did not rank them. With a calibrated client the rates rank them."""
    record = record_of(PLAN, (0.990, 0.990))
    levels = windows(PLAN, {1: 1.0, 32: 0.7}, noise=0.01)
    runs = [ClientRun(rate, False, 30.0, 4.0) for rate in (1000, 500, 250, 125)]
    openloop = OpenLoopRecord(
        Slo(99, 20), 1, [100], ["original", "depthwise"], {"original": 100, "depthwise": 400}, []
    )
    openloop.client = ClientCeiling(0.0, runs)
    found = answer(record, levels, speedups(record, levels), openloop)
    assert found is not None and found.recommended == Label("original")
    assert "the open loop cannot rank them on this machine now" in found.why
    openloop.client = ClientCeiling(1000.0, [ClientRun(1000, True, 3.0, 0.2)])
    openloop.points = [rate_point("original", 200, met=False, lag_ms=0.1)]  # bounds original
    found = answer(record, levels, speedups(record, levels), openloop)
    assert found is not None and found.recommended == Label("depthwise")


def rate_point(model: str, rate: float, met: bool, lag_ms: float) -> RatePoint:
    """One open-loop run of ``model`` at ``rate``, the client ``lag_ms`` late at its p99."""
    latency = Percentiles(1, 2, 3, 4, 5)
    return RatePoint(model, rate, 10, 10, rate, latency, 4 if met else 40, met, lag_ms)


def test_two_lower_bounds_do_not_rank_the_models() -> None:
    """depthwise serves 1.4x original at 32 clients. In the open loop original met 212 req/s
    and depthwise 88, but each missed only with the client late (a hypervisor took 30-40 % of
    the CPU): both are lower bounds, which order nothing, so the closed loop decides and the
    answer says why. Once depthwise's miss at 100 req/s is the server's, original's 212 is
    apart from depthwise's bracket [88, 100] and the open loop ranks them."""
    record = record_of(PLAN, (0.990, 0.990))
    levels = windows(PLAN, {1: 1.4, 32: 1.4}, noise=0.01)
    late = Slo(99, 20).client_lag_limit_ms + 1
    points = [
        rate_point("original", 212, met=True, lag_ms=0.1),
        rate_point("original", 400, met=False, lag_ms=late),
        rate_point("depthwise", 88, met=True, lag_ms=0.1),
        rate_point("depthwise", 100, met=False, lag_ms=late),
    ]
    openloop = OpenLoopRecord(
        Slo(99, 20), 1, [100], ["original", "depthwise"], {"original": 212, "depthwise": 88}, points
    )
    openloop.client = ClientCeiling(3500.0, [ClientRun(3500, True, 3.0, 0.2)])
    found = answer(record, levels, speedups(record, levels), openloop)
    assert found is not None and found.recommended == Label("depthwise")
    assert "the highest throughput at 32 clients" in found.why
    assert "the open loop did not separate original (>= 212 req/s within" in found.why
    assert "from depthwise (>= 88 req/s); a rate with >= is a lower bound" in found.why
    items = speedups(record, levels)
    said = disagreements(openloop, Label("original"), items, 32, 0.05)
    assert len(said) == 1 and said[0].startswith("the runs disagree: at 32 clients depthwise")
    points[3] = rate_point("depthwise", 100, met=False, lag_ms=0.1)
    found = answer(record, levels, speedups(record, levels), openloop)
    assert found is not None and found.recommended == Label("original")
    assert found.why.startswith("the highest Poisson rate within p99 <= 20 ms (212 req/s)")
    assert not disagreements(openloop, Label("original"), items, 32, 0.05)  # the open loop ordered


def test_overlapping_brackets_are_not_called_lower_bounds() -> None:
    """original met 212 req/s and missed 400; depthwise met 200 and missed 300, both with the
    client keeping up: depthwise's miss (300) is above original's highest met rate, so the
    open loop does not separate them, but neither rate is a lower bound and none is said."""
    record = record_of(PLAN, (0.990, 0.990))
    levels = windows(PLAN, {1: 1.4, 32: 1.4}, noise=0.01)
    points = [
        rate_point("original", 212, met=True, lag_ms=0.1),
        rate_point("original", 400, met=False, lag_ms=0.1),
        rate_point("depthwise", 200, met=True, lag_ms=0.1),
        rate_point("depthwise", 300, met=False, lag_ms=0.1),
    ]
    openloop = OpenLoopRecord(
        Slo(99, 20),
        1,
        [100],
        ["original", "depthwise"],
        {"original": 212, "depthwise": 200},
        points,
    )
    openloop.client = ClientCeiling(3500.0, [ClientRun(3500, True, 3.0, 0.2)])
    found = answer(record, levels, speedups(record, levels), openloop)
    assert found is not None
    assert "did not separate original (212 req/s within p99 <= 20 ms) from depthwise (200" in (
        found.why
    )
    assert ">=" not in found.why and "lower bound" not in found.why
