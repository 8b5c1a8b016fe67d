"""The load-test runner for real: real Locust runs against a real service (fixed and sequential
windows, distributed mode, every protocol), and each way a run can fail said clearly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from loadtests.described import ServedBatching
from loadtests.labels import Label
from loadtests.procs import free_port
from loadtests.protocols import GENERATOR_ERROR, PROTOCOLS
from loadtests.report import build_report
from loadtests.results import LoadPlan, RunRecord, Step
from loadtests.runner import LoadTestError, Target, run_plan, target_service
from loadtests.windows import summarize
from tests.helpers import REPO, Server, shared_server_batching


@pytest.mark.slow
def test_a_service_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    """An empty model folder: the service exits at once; the load test says so, with its log."""
    (tmp_path / "models").mkdir()
    service = target_service(None, None, tmp_path / "models", tmp_path, ("--strict-models",))
    with pytest.raises(LoadTestError, match=r"did not start \(log: .*server\.log\)"), service:
        pass


def test_refused_connection_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LoadTestError, match="cannot reach"):
        run_plan(
            LoadPlan(concurrency=(1,), duration_s=1, repeats=1),
            tmp_path,
            Target(url, None, started_here=False),
        )
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_short_real_run_against_a_real_service(
    server: Server, tmp_path: Path, mnist_path: Path
) -> None:
    plan = LoadPlan(
        runtimes=("savedmodel", "onnx"),
        concurrency=(1, 4),
        duration_s=2,
        warmup_s=1,
        repeats=1,
        mnist=str(mnist_path),
    )
    seen: list[Step] = []

    def on_step(step: Step, index: int, total: int, result: object) -> None:
        if result is not None:
            seen.append(step)

    record = run_plan(plan, tmp_path, Target(server.url, None, False), on_step=on_step)
    assert len(seen) == 8 and len(record.steps) == 8
    assert {(s.variant, s.runtime) for s in record.steps} == {
        (v, r) for v in ("original", "depthwise") for r in ("savedmodel", "onnx")
    }
    for step in record.steps:
        assert step.throughput_rps > 0 and step.errors == 0 and step.requests > 20
        assert step.accuracy > 0.85
        assert step.server_model_ms_p50 > 0
        assert step.cpu_steal is not None and 0 <= step.cpu_steal <= 1  # read per window
    p50s = [step.latency_ms.p50 for step in record.steps]
    assert any(p != round(p) for p in p50s), "percentiles must keep sub-millisecond precision"
    assert RunRecord.load(tmp_path) == record  # the file round-trips to the same record
    written = build_report(tmp_path)
    # How each model batched, as the service said (the shared server's SERVER_ARGS).
    served = ServedBatching(**shared_server_batching())  # type: ignore[arg-type]
    assert record.batching() == {str(m): served for m in plan.model_names()}
    assert written.html.stat().st_size > 20_000 and len(written.comparisons[1]) == 8
    assert record.stops and all(stop.reason == "fixed windows" for stop in record.stops)
    said = f"| batching, as served | original@savedmodel: {served}; depthwise@savedmodel: {served};"
    assert said in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_the_last_window_of_a_run_is_measured_whole(
    server: Server, tmp_path: Path, mnist_path: Path
) -> None:
    """Locust's --run-time timer counts from its event loop's cached clock, which its start-up
    leaves 1-2 s stale: it fired that much early and cut the run's last window (the baseline's,
    as ABCD DCBA ends on A), which read a third of its neighbours at 32 clients and nothing at
    one in make demo. The Locust file now quits when the schedule is over."""
    plan = LoadPlan(
        variants=("depthwise",), runtimes=("onnx",), concurrency=(2,), duration_s=1, warmup_s=1,
        repeats=6, mnist=str(mnist_path),
    )  # fmt: skip
    record = run_plan(plan, tmp_path, Target(server.url, None, False))
    counts = [step.requests for step in sorted(record.steps, key=lambda s: s.repeat)]
    assert len(counts) == 6 and min(counts[:-1]) > 20
    assert counts[-1] >= 0.6 * float(np.median(counts[:-1])), counts


@pytest.mark.slow
def test_sequential_windows_against_a_real_service(
    server: Server, tmp_path: Path, mnist_path: Path
) -> None:
    """The sequential plan for real: one Locust run drives both models in alternating
    one-second windows (each window its own samples), the stopping rule decides when the
    level ends, and the report opens with the answer."""
    plan = LoadPlan(
        runtimes=("onnx",),
        concurrency=(4,),
        duration_s=1,
        warmup_s=1,
        repeats=2,
        mnist=str(mnist_path),
        precision=0.3,
        budget_s=45,
    )
    checks: list[object] = []
    record = run_plan(
        plan,
        tmp_path,
        Target(server.url, None, False),
        on_check=lambda level, found, stop: checks.append(stop),
    )
    (stop,) = record.stops
    assert stop.reason in ("precision reached", "budget spent") and checks[-1] == stop
    assert stop.pairs >= 8 and len(record.steps) == 2 * stop.pairs  # MIN_PAIRS at least
    order = [s.target.variant for s in record.steps[:4]]
    assert order == ["original", "depthwise", "depthwise", "original"]
    for step in record.steps:
        assert step.requests > 20 and step.errors == 0 and step.window_s == pytest.approx(0.9)
        assert (tmp_path / step.samples).is_file()
    assert len({s.samples for s in record.steps}) == len(record.steps)
    written = build_report(tmp_path)
    assert written.answer is not None and "## The answer" in written.markdown.read_text()
    (row,) = written.comparisons[1]
    assert row[-1] in ("faster", "slower", "equivalent", "inconclusive") and row[-2] == str(
        stop.pairs
    )


@pytest.mark.slow
def test_unreadable_digits_are_named_before_any_locust(server: Server, tmp_path: Path) -> None:
    """Read once by the runner: with --processes, each Locust worker stopping on it left the
    master waiting for them until the run's time limit."""
    bad = tmp_path / "bad.npz"
    bad.write_text("not digits")
    plan = LoadPlan(
        variants=("depthwise",), concurrency=(1,), duration_s=1, repeats=1, processes=2,
        mnist=str(bad),
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(LoadTestError, match="the digits to send cannot be read"):
        run_plan(plan, tmp_path, Target(server.url, None, False))
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_locustfile_runs_on_its_own(server: Server, tmp_path: Path, mnist_path: Path) -> None:
    samples = tmp_path / "samples.npz"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            "--headless",
            "--host",
            server.url,
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "2s",
            "--variant",
            "original",
            "--mode",
            "png",
            "--mnist",
            str(mnist_path),
            "--samples-out",
            str(samples),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(samples) as data:
        assert len(data["latency_ms"]) > 10 and data["ok"].all()


@pytest.mark.slow
def test_distributed_mode_gathers_every_workers_samples(
    server: Server, tmp_path: Path, mnist_path: Path
) -> None:
    plan = LoadPlan(
        variants=("depthwise",),
        concurrency=(4,),
        duration_s=2,
        warmup_s=1,
        repeats=1,
        processes=2,
        mnist=str(mnist_path),
    )
    record = run_plan(plan, tmp_path, Target(server.url, None, False))
    (step,) = record.steps
    assert step.requests > 50 and step.errors == 0
    assert step.generator_cpu_s > 0  # reported by the workers, summed by the master
    assert not [w for w in step.warnings if "last report" in w]  # both reached the master


@pytest.mark.slow
def test_load_test_speaks_every_protocol(
    models_dir: Path, tmp_path: Path, mnist_path: Path
) -> None:
    """One model over the four protocols against a service the load test starts (gRPC on)."""
    plan = LoadPlan(
        variants=("depthwise",),
        runtimes=("onnx",),
        protocols=PROTOCOLS,
        concurrency=(2,),
        duration_s=2,
        warmup_s=1,
        repeats=1,
        mnist=str(mnist_path),
    )
    with target_service(None, None, models_dir, tmp_path, grpc=True) as target:
        record = run_plan(plan, tmp_path, target)
    assert record.started_server and record.grpc_target == target.grpc_url
    assert [s.protocol for s in record.steps] == list(PROTOCOLS)
    for step in record.steps:
        assert step.errors == 0 and step.requests > 20, step
        assert step.accuracy > 0.85 and step.runtime == "onnx"
    written = build_report(tmp_path)
    # One Locust run drove all four in turn (HTTP and gRPC users); each compared with native.
    assert [row[1] for row in written.comparisons[1]] == [
        f"depthwise@onnx via {p}" for p in PROTOCOLS[1:]
    ]
    assert "## Comparisons" in written.markdown.read_text()


@pytest.mark.slow
def test_every_scheduled_target_is_encoded_before_the_clock_starts(
    tmp_path: Path, mnist_path: Path
) -> None:
    """Locust's init (before the run's timer) encodes each slot's payloads, reading MNIST
    once: built on first use (about half a second each, no user sending meanwhile) they ate
    into the first windows. In a subprocess: the Locust file patches gevent and gRPC."""
    from loadtests.schedule import Schedule, Slot

    slots = tuple(Slot(f"{v}@onnx", "native") for v in ("original", "depthwise"))
    Schedule(slots, (0, 1, 1, 0), 1.0, 1.0).save(tmp_path / "schedule.json")
    probe = (
        "import time; from types import SimpleNamespace as N;"
        "import loadtests.locustfile as lf; from loadtests.payloads import mnist_data;"
        f"options = N(schedule={str(tmp_path / 'schedule.json')!r}, mnist={str(mnist_path)!r},"
        " mode='json');"
        "lf.on_init(N(parsed_options=options, runner=None));"
        "print(len(lf.SLOT_PAYLOADS), mnist_data.cache_info().misses)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "1"]  # both targets encoded, MNIST read once


@pytest.mark.slow
def test_unreadable_digits_stop_locust_with_the_cause(tmp_path: Path) -> None:
    """The payloads are built in Locust's init: a bad MNIST file ends the run with exit 1 and
    the cause on stderr (the runner shows both). Built in a task, the error only emptied the
    windows under --exit-code-on-error 0, and the report said "no request finished"."""
    from loadtests.schedule import Schedule, Slot

    Schedule((Slot("depthwise@onnx", "native"),), (0,), 1.0, 0.5).save(tmp_path / "s.json")
    bad = tmp_path / "bad.npz"
    bad.write_text("not digits")
    locust = Path(sys.executable).with_name("locust")
    done = subprocess.run(
        [str(locust), "-f", "loadtests/locustfile.py", "MnistUser", "--headless", "-u", "1",
         "-r", "1", "-t", "2s", "--host", f"http://127.0.0.1:{free_port()}",
         "--schedule", str(tmp_path / "s.json"), "--mnist", str(bad),
         "--exit-code-on-error", "0", "--loglevel", "WARNING", "--only-summary"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 1 and "not a readable .npz file" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_a_task_that_raises_is_a_failed_request_with_its_cause(tmp_path: Path) -> None:
    """Locust logs an exception raised in a task and goes on, and the runner's
    --exit-code-on-error 0 keeps its exit code 0: the windows were empty and the report said
    "no request finished", without the cause. Each is now a failed request of its window
    ("load generator error"), with the exception as its message. A user class that raises,
    loaded beside ours, stands for a fault in a task."""
    raising = tmp_path / "raising.py"
    raising.write_text(
        "from locust import User, constant, task\n"
        "class RaisingUser(User):\n"
        "    wait_time = constant(0.05)\n"
        "    @task\n"
        "    def predict(self):\n"
        "        raise RuntimeError('the digit could not be encoded')\n"
    )
    samples = tmp_path / "samples.npz"
    locust = Path(sys.executable).with_name("locust")
    done = subprocess.run(
        [str(locust), "-f", f"loadtests/locustfile.py,{raising}", "RaisingUser", "--headless",
         "-u", "1", "-r", "1", "-t", "2s", "--host", f"http://127.0.0.1:{free_port()}",
         "--samples-out", str(samples), "--warmup", "0",
         "--exit-code-on-error", "0", "--loglevel", "WARNING", "--only-summary"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(samples) as data:
        everything = {key: data[key] for key in data.files}
    assert len(everything["ok"]) > 5 and not everything["ok"].any()
    assert set(everything["status"]) == {GENERATOR_ERROR}
    assert list(everything["error_message"]) == ["RuntimeError: the digit could not be encoded"]
    step = summarize(Step(Label("a"), 1, 0), "onnx", everything, 1, "s.npz", window_s=2.0)
    assert step.failure_line.endswith(
        "x load generator error: RuntimeError: the digit could not be encoded"
    )
