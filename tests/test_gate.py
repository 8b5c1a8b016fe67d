"""The regression gate (`mnist-serve history check`): its rule on synthetic runs, its exit
codes, and (slow) a real regression caught against a real server."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from loadtests import changes, gate, history
from loadtests.gate import Metric, Verdict, judge
from loadtests.results import LoadPlan, Percentiles, RunRecord
from loadtests.stats import Interval, change_interval
from mnist_serve.cli import app
from tests.helpers import SERVER_ARGS, Server, run_record, run_server, step_result
from training.data import Mnist


def interval(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high)


@pytest.mark.parametrize(
    ("metric", "low", "high", "verdict"),
    [
        (Metric.THROUGHPUT, 0.60, 0.70, Verdict.REGRESSED),  # surely more than 5 % down
        (Metric.THROUGHPUT, 0.90, 0.96, Verdict.WORSE),  # surely down, maybe by under 5 %
        (Metric.THROUGHPUT, 0.80, 1.01, Verdict.STEADY),  # could be no change: noise
        (Metric.THROUGHPUT, 1.02, 1.30, Verdict.BETTER),
        (Metric.SPEEDUP, 0.50, 0.94, Verdict.REGRESSED),
        (Metric.MAX_RATE, 0.40, 0.90, Verdict.REGRESSED),
        (Metric.P99, 1.06, 1.50, Verdict.REGRESSED),  # latency up is bad
        (Metric.P99, 1.01, 1.20, Verdict.WORSE),
        (Metric.P99, 0.60, 0.70, Verdict.BETTER),  # latency down is good
        (Metric.P99, 0.99, 3.00, Verdict.STEADY),
        (Metric.THROUGHPUT, math.nan, math.nan, Verdict.NOT_JUDGED),  # one repeat
    ],
)
def test_the_rule(metric: Metric, low: float, high: float, verdict: Verdict) -> None:
    assert judge(metric, interval(low, high), 0.05) is verdict


def test_the_threshold_is_respected() -> None:
    """A surely 8 % lower throughput fails a 5 % gate and passes a 10 % one."""
    assert judge(Metric.THROUGHPUT, interval(0.90, 0.94), 0.05) is Verdict.REGRESSED
    assert judge(Metric.THROUGHPUT, interval(0.90, 0.94), 0.10) is Verdict.WORSE
    assert judge(Metric.P99, interval(1.06, 1.10), 0.05) is Verdict.REGRESSED
    assert judge(Metric.P99, interval(1.06, 1.10), 0.10) is Verdict.WORSE


def test_change_interval_is_the_ratio_of_means_with_welch_on_the_log_scale() -> None:
    """By hand with scipy's t quantile: the delta method's variance of log(mean_a / mean_b)
    and Welch-Satterthwaite degrees of freedom."""
    from scipy import stats

    before, after = [500.0, 520, 480], [300.0, 330, 310, 305]
    found = change_interval(before, after)
    ratio = np.mean(after) / np.mean(before)
    rel_b = np.var(before, ddof=1) / (3 * np.mean(before) ** 2)
    rel_a = np.var(after, ddof=1) / (4 * np.mean(after) ** 2)
    df = (rel_a + rel_b) ** 2 / (rel_a**2 / 3 + rel_b**2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(rel_a + rel_b)
    assert found.mean == pytest.approx(ratio)
    assert found.low == pytest.approx(ratio * math.exp(-half), rel=1e-9)
    assert found.high == pytest.approx(ratio * math.exp(half), rel=1e-9)
    one = change_interval([500.0], [300.0, 310])
    assert one.mean == pytest.approx(305 / 500) and math.isnan(one.low)
    assert math.isnan(change_interval([0.0, 0.0], [1.0, 2.0]).mean)  # nothing before
    assert change_interval([400.0, 410], [0.0, 0.0]) == Interval(0.0, 0.0, 0.0, 2)  # collapsed
    strict = change_interval([1.0, 1.1], [1.2, 1.3, 1.25], 0.999)
    assert (strict.confidence, strict.n) == (0.999, 2)  # what it was computed at, and from


def test_thresholds_parse() -> None:
    assert gate.parse_threshold("5%") == pytest.approx(0.05)
    assert gate.parse_threshold("0.1") == pytest.approx(0.1)
    for bad in ("5", "-1%", "abc", "100%"):
        with pytest.raises(ValueError, match=r"5% or 0\.05"):
            gate.parse_threshold(bad)


def run_of(throughput: list[float], p99: list[float], levels: tuple[int, ...] = (8,)) -> RunRecord:
    """depthwise at each level, one step per repeat with these throughputs and p99s."""
    steps = [
        step_result(
            "depthwise", level, r, value, latency_ms=Percentiles(1.0, 1.5, 1.8, p99[r], 2 * p99[r])
        )
        for level in levels
        for r, value in enumerate(throughput)
    ]
    plan = LoadPlan(variants=("depthwise",), concurrency=levels, repeats=len(throughput))
    return run_record(plan, steps=steps)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["history", "check", *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


STEADY_T, STEADY_P99 = [500.0, 510, 490], [4.0, 4.2, 3.9]


def test_the_check_passes_a_steady_run_and_fails_a_slower_one(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    runs = {
        "a": run_of(STEADY_T, STEADY_P99),
        "b": run_of([505.0, 495, 500], [4.1, 3.9, 4.0]),  # the same server again: noise
        "c": run_of([350.0, 340, 360], [4.1, 3.9, 4.0]),  # 30 % fewer requests/s
        "d": run_of([505.0, 495, 500], [6.0, 6.3, 5.9]),  # p99 50 % higher
        "e": run_of([485.0, 483, 487], [4.1, 3.9, 4.0]),  # surely 3 % slower: under 5 %
    }
    for name, record in runs.items():
        history.store(db, tmp_path / name, record.plan, record)
    code, out = invoke("2", "--history", str(db))  # b against a (the run before it)
    assert code == 0, out
    assert "PASS run 2 against run 1" in out
    code, out = invoke("3", "--history", str(db))  # c against b
    assert code == 1, out
    assert "FAIL" in out and "regressed: throughput of depthwise at 8 clients" in out
    code, out = invoke("4", "--against", "1", "--history", str(db))
    assert code == 1 and "regressed: p99 of depthwise at 8 clients" in out, out
    assert "throughput of depthwise" not in out.split("FAIL")[1]  # only the p99 moved
    code, out = invoke("--against", "2", "--history", str(db))  # the latest run: e
    assert code == 0 and "worse, within threshold" in out, out
    code, out = invoke("--against", "2", "--max-regression", "2%", "--history", str(db))
    assert code == 0, out  # its interval (-5.7 % to -0.2 %, two figures) is not all beyond 2 %
    assert "-5.7% to -0.2%" in out, out  # at 95 % alone it would be -5.1 % to -0.9 %
    code, out = invoke("--against", "2", "--max-regression", "0.1%", "--history", str(db))
    assert code == 1, out  # ... but it is all beyond 0.1 %: fails
    code, out = invoke("5", "--against", "3", "--history", str(db))  # e against c: better
    assert code == 0 and "better" in out, out


def test_a_speedup_and_an_open_loop_rate_are_gated(tmp_path: Path) -> None:
    from tests.test_history import pair, searched

    db = tmp_path / "h.sqlite"
    for name, ratios, capacity in (("a", [1.5, 1.52, 1.49], 800), ("b", [1.2, 1.21, 1.19], 800)):
        run = pair("2026-11-24", ratios)
        history.store(db, tmp_path / name, run.plan, run, searched(capacity))
    code, out = invoke("--history", str(db))
    assert code == 1 and "regressed: speedup of depthwise over original at 8 clients" in out, out
    before, after = history.get(db, "a"), history.get(db, "b")
    rates = {j.subject: j for j in gate.check(db, before, after, 0.05).judged if j.level is None}
    assert rates["depthwise (p99 <= 20 ms)"].verdict is Verdict.STEADY  # same search both times
    # A search that met the SLO up to 400/s, after one that met it at 800 but missed at 1,600.
    lower = changes.RateChange("depthwise", "p99 <= 20 ms", (800.0, 1600.0), (400.0, 800.0))
    judged = gate.judge_rate(lower, 0.05)
    assert judged.verdict is Verdict.WORSE  # 400/800 at worst, 800/800 at best: surely lower
    halved = changes.RateChange("depthwise", "p99 <= 20 ms", (800.0, 1600.0), (400.0, 600.0))
    assert gate.judge_rate(halved, 0.05).verdict is Verdict.REGRESSED  # at best 600/800


def test_nothing_to_compare_exits_2(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    code, out = invoke("--history", str(db))
    assert code == 2 and "no history" in out, out
    first = run_of(STEADY_T, STEADY_P99)
    history.store(db, tmp_path / "a", first.plan, first)
    code, out = invoke("--history", str(db))
    assert code == 2 and "no run before run 1 with the same plan" in out, out
    other = run_of(STEADY_T, STEADY_P99, levels=(1,))  # another plan
    history.store(db, tmp_path / "b", other.plan, other)
    code, out = invoke("--history", str(db))
    assert code == 2 and "no run before run 2" in out, out
    code, out = invoke("2", "--against", "1", "--history", str(db))  # forced: no step in common
    assert code == 2 and "no step (target and level)" in out, out
    code, out = invoke("2", "--against", "2", "--history", str(db))  # itself: always "steady"
    assert code == 2 and "run 2 is the same run" in out, out
    code, out = invoke("1", "--against", "2", "--history", str(db))
    assert code == 2 and "--against must name a run before run 1; run 2 is later" in out, out
    single = run_of([500.0], [4.0], levels=(1,))
    history.store(db, tmp_path / "c", single.plan, single)
    single = run_of([300.0], [9.0], levels=(1,))
    history.store(db, tmp_path / "d", single.plan, single)
    code, out = invoke("--history", str(db))
    assert code == 2 and "--repeats 2 or more" in out, out
    code, out = invoke("9", "--history", str(db))
    assert code == 2 and "no run '9'" in out, out
    code, out = invoke("--max-regression", "5", "--history", str(db))
    assert code == 2 and "5% or 0.05" in out, out
    missing = tmp_path / "nowhere" / "h.sqlite"
    compared = CliRunner().invoke(app, ["history", "compare", "1", "2", "--history", str(missing)])
    assert compared.exit_code == 2 and "no history at" in compared.output
    assert not missing.parent.exists()  # not created by reading it
    # A CI history's first run passes with --pass-if-nothing-to-compare; usage errors do not.
    flag = "--pass-if-nothing-to-compare"
    code, out = invoke(flag, "1", "--history", str(db))  # run 1 has no run before it
    assert code == 0 and "nothing to compare" in out, out
    usages = [["9"], ["--max-regression", "5"], ["2", "--against", "2"], ["--max-regresion"]]
    for usage in usages:
        code, out = invoke(*usage, flag, "--history", str(db))
        assert code == 2, (usage, out)
    for usage in [[], ["9"]]:  # a history that is not there: a wrong path, not a first run
        code, out = invoke(*usage, flag, "--history", str(tmp_path / "elsewhere.sqlite"))
        assert code == 2 and "no history at" in out, (usage, out)


# The end-to-end test checks the gate's verdicts on real runs, not its sensitivity (the rule's
# tests above do that at 5 %). Its two load tests of one server run on a shared 2-core machine:
# in one CI run the second came out 21 % slower at 8 clients and its p99 60 % higher, with 95 %
# intervals of -32 % to -9 % and +30 % to +97 %. So it gates at 50 %, and its regression is
# several times that: a far heavier model published under the same name.
E2E_THRESHOLD = "50%"


def heavy_depthwise(mnist: Mnist, root: Path) -> Path:
    """A repository whose ``depthwise`` is two 5x5 convolutions of 128 filters at full resolution
    (about 320 M multiply-accumulates an image), as a
    SavedModel only: the regression of someone publishing a much bigger net under the name."""
    import keras

    from modelrepo.layout import ModelRepository
    from training.catalog import Variant
    from training.export import export_model
    from training.train import TrainConfig, train_variant

    def build() -> keras.Sequential:
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(128, 5, padding="same", activation="relu"),
                keras.layers.Conv2D(128, 5, padding="same", activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )

    heavy = Variant("depthwise", "test", "a much heavier net under the same name", "-", build)
    few = Mnist(
        mnist.x_train[:256],
        mnist.y_train[:256],
        mnist.x_test[:256],
        mnist.y_test[:256],
        mnist.source,
    )
    repository = ModelRepository(root)
    export_model(train_variant(heavy, few, TrainConfig(epochs=1)), few, repository, runtimes=())
    return root


@pytest.mark.slow
def test_a_real_regression_fails_the_check_and_the_same_server_passes(
    server: Server,
    models_dir: Path,
    mnist: Mnist,
    mnist_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two load tests of the same server pass; a server whose ``depthwise`` is a far heavier
    net fails, naming the throughput at 8 clients."""
    from loadtests import session
    from tests.test_session import Recorder

    db = tmp_path / "history.sqlite"
    monkeypatch.setenv(history.ENV_VAR, str(db))
    plan = LoadPlan(
        variants=("depthwise",),
        concurrency=(1, 8),
        duration_s=2,
        warmup_s=1,
        repeats=5,
        mnist=str(mnist_path),
    )

    def load_test(name: str, url: str) -> None:
        session.run_load_test(plan, tmp_path / name, url, models_dir, Recorder())

    load_test("first", server.url)
    load_test("again", server.url)
    code, out = invoke("--max-regression", E2E_THRESHOLD, "--all")
    print(out)  # shown with pytest -s: the figures of both checks
    same = 2
    if code == 1:
        # The VM can change pace between two runs a few seconds apart: in one CI run (on
        # 2026-12-04) the same server's p99 at 8 clients went from 12.9 ms to 26.8 ms, all
        # five repeats of the second run slower (interval +64 % to +162 %). The gate was right
        # that the figure moved; the machine moved it. Measure the same server once more: the
        # gate must pass that run against the one before it (one that always failed still
        # fails here).
        load_test("once more", server.url)
        code, out = invoke("--max-regression", E2E_THRESHOLD, "--all")
        print(out)
        same = 3
    assert code == 0, out
    assert f"PASS run {same} against run {same - 1}" in out
    heavy = heavy_depthwise(mnist, tmp_path / "heavy")
    log = tmp_path / "slow-server.log"
    # Batching as the first server does: a --url run compares only with runs against a service
    # reporting the same engine and batching (loadtests.comparable).
    with run_server(heavy, log, "--runtimes", "savedmodel", *SERVER_ARGS) as slow:
        slow.wait_ready()
        load_test("slow", slow.url)
    code, out = invoke("--max-regression", E2E_THRESHOLD, "--all")
    print(out)
    assert code == 1, out
    assert f"FAIL run {same + 1} against run {same}" in out
    assert "regressed: throughput of depthwise at 8 clients" in out


def test_the_intervals_hold_for_all_the_figures_together() -> None:
    """Bonferroni: 12 figures at 99.58 % each leave 5 % for the run, not 5 % per figure."""
    from loadtests.gate import family_confidence

    assert family_confidence(1) == pytest.approx(0.95)
    assert family_confidence(12) == pytest.approx(1 - 0.05 / 12)
    assert family_confidence(0) == pytest.approx(0.95)  # nothing judged: the plain level


def failed_pair(depthwise: list[float]) -> RunRecord:
    """original and depthwise at 8 clients, three repeats; a 0 is a step that failed (no
    success: NaN latencies, errors)."""
    steps = []
    for r, (original, value) in enumerate(zip([100.0, 101, 99], depthwise, strict=True)):
        steps.append(step_result("original", 8, r, original))
        failed = Percentiles(math.nan, math.nan, math.nan, math.nan, math.nan)
        extra = {"latency_ms": failed, "errors": 100} if value == 0 else {}
        steps.append(step_result("depthwise", 8, r, value, **extra))
    return run_record(LoadPlan(concurrency=(8,)), steps=steps)


def test_a_failed_model_is_judged_not_a_crash(tmp_path: Path) -> None:
    """A run where one model failed every step: its throughput regressed, its speedup is not
    judged, and nothing raises (an infinite p99 and no valid pair once crashed the check)."""
    db = tmp_path / "history.sqlite"
    good, failed = failed_pair([150.0, 151, 149]), failed_pair([0.0, 0.0, 0.0])
    history.store(db, tmp_path / "good", good.plan, good)
    history.store(db, tmp_path / "failed", failed.plan, failed)
    found = gate.check(db, *gate.pick_runs(db, None, None), 0.05)
    verdicts = {(j.metric, j.subject): j.verdict for j in found.judged}
    assert verdicts[Metric.THROUGHPUT, "depthwise"] is Verdict.REGRESSED
    assert verdicts[Metric.SPEEDUP, "depthwise over original"] is Verdict.NOT_JUDGED
    assert verdicts[Metric.P99, "depthwise"] is Verdict.NOT_JUDGED  # infinite: no interval
    code, output = invoke("--history", str(db))
    assert code == 1 and "regressed" in output  # a failure, told as one


def test_the_gate_skips_an_open_loop_run_of_the_same_plan(tmp_path: Path) -> None:
    """Closed, then open loop only, then closed again: the check compares the two closed runs
    (the open-loop one shares no figure with them and once hid the regression)."""
    from tests.test_history import pair, searched

    db = tmp_path / "history.sqlite"
    before, after = pair("2026-11-24", [1.5, 1.52, 1.49]), pair("2026-11-25", [1.0, 1.01, 0.99])
    history.store(db, tmp_path / "closed-1", before.plan, before)
    history.store(db, tmp_path / "open-1", before.plan, None, searched(800))
    history.store(db, tmp_path / "closed-2", after.plan, after)
    earlier, later = gate.pick_runs(db, None, None)
    assert (earlier.id, later.id) == (1, 3)
    code, output = invoke("--history", str(db))
    assert code == 1 and "speedup of depthwise over original" in output


def test_the_report_compares_with_a_run_before_it_and_a_reused_folder_with_its_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report rebuilt after a later run does not take that run for the one before; a reused
    --out (CI's runs/ci) compares its newest run with the run before it."""
    from loadtests.analysis import against_previous

    monkeypatch.delenv(history.ENV_VAR, raising=False)
    runs = tmp_path / "runs"
    db = history.default_path(runs)
    fast, slow = run_of([500.0, 510, 490], [4.0, 4.2, 3.9]), run_of([300.0, 310, 290], [4.0] * 3)
    history.store(db, runs / "loadtest-1", fast.plan, fast)
    history.store(db, runs / "loadtest-2", slow.plan, slow)
    assert against_previous(runs / "loadtest-1", fast) is None  # nothing came before run 1
    again = run_of([505.0, 495, 500], [4.0, 4.2, 3.9])
    history.store(db, runs / "loadtest-1", again.plan, again)  # --out reused
    compared = against_previous(runs / "loadtest-1", again)
    assert compared is not None and (compared.before.id, compared.after.id) == (2, 3)
    assert history.get(db, "loadtest-1").id == 3
    monkeypatch.chdir(runs)  # the folder named another way: never compared with itself
    by_name = against_previous(Path("loadtest-2"), slow)
    assert by_name is not None and (by_name.before.id, by_name.after.id) == (1, 2)


def test_the_gate_prefers_a_run_measured_every_way_the_later_one_was(tmp_path: Path) -> None:
    """Closed and open loop, then open loop only, then both again: the check compares the two
    runs that have both, so the closed-loop figures are gated too."""
    from tests.test_history import pair, searched

    db = tmp_path / "history.sqlite"
    before, after = pair("2026-11-24", [1.5, 1.52, 1.49]), pair("2026-11-25", [1.0, 1.01, 0.99])
    history.store(db, tmp_path / "both-1", before.plan, before, searched(800))
    history.store(db, tmp_path / "open-1", before.plan, None, searched(800))
    history.store(db, tmp_path / "both-2", after.plan, after, searched(800))
    earlier, later = gate.pick_runs(db, None, None)
    assert (earlier.id, later.id) == (1, 3)
