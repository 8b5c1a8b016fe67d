"""The load-test plan and its parts, without a service: durations, the plan's steps and their
order, the sample recorder and its windows, and each protocol's requests and answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from loadtests.analysis import Axis, comparisons
from loadtests.labels import Label
from loadtests.protocols import PROTOCOLS, AnswerError, Protocol, decode, encode
from loadtests.results import LoadPlan, Step
from loadtests.runner import parse_duration
from loadtests.samples import Recorder
from modelrepo.contract import PIXELS, SIDE


def test_durations_parse() -> None:
    assert [parse_duration(t) for t in ("20s", "20", "2m", "1m30s")] == [20, 20, 120, 90]
    for bad in ("", "0s", "fast", "-3s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("0s", minimum=0) == 0  # a warm-up may be switched off


def test_plan_crosses_variants_with_runtimes() -> None:
    plan = LoadPlan(variants=("a", "b"), runtimes=("savedmodel", "onnx"), concurrency=(1,))
    assert plan.models() == ("a@savedmodel", "b@savedmodel", "a@onnx", "b@onnx")
    assert [s.model for s in plan.steps()][4:8] == [
        "b@onnx",
        "a@onnx",
        "b@savedmodel",
        "a@savedmodel",
    ]
    assert LoadPlan(variants=("a",)).models() == ("a",)  # no runtime named: the server's default


def test_plan_alternates_variant_order_between_repeats() -> None:
    plan = LoadPlan(variants=("a", "b"), concurrency=(1, 8), repeats=3)
    order = [(s.concurrency, s.model) for s in plan.steps()]
    assert order == [
        (1, "a"),
        (1, "b"),
        (1, "b"),
        (1, "a"),
        (1, "a"),
        (1, "b"),
        (8, "a"),
        (8, "b"),
        (8, "b"),
        (8, "a"),
        (8, "a"),
        (8, "b"),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variants": ()},
        {"concurrency": (0,)},
        {"repeats": 0},
        {"mode": "xml"},
        {"runtimes": ("tensorrt",)},
        {"runtimes": ("onnx", "onnx")},
    ],
)
def test_plan_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LoadPlan(**kwargs)  # type: ignore[arg-type]


def test_recorder_discards_the_warmup() -> None:
    recorder = Recorder()
    recorder.start(warmup_s=0.05)
    recorder.add(1.0, True, True, 0.1, 0.5)  # during the warm-up
    time.sleep(0.06)
    recorder.add(1.5, True, False, 0.1, 0.5)
    data = recorder.drain()
    assert data["latency_ms"] == [1.5] and data["correct"] == [0.0]


def test_each_window_keeps_its_own_models_error_message(tmp_path: Path) -> None:
    """Two models failing with the same status in alternating windows: each window's step
    names its own model's message (the first per status of the whole run was copied into
    every window, so a step could show another model's error)."""
    from loadtests.schedule import Schedule, Slot
    from loadtests.windows import cut

    recorder = Recorder()
    recorder.start(warmup_s=0.0)
    time.sleep(0.01)  # requests that started after the (empty) warm-up
    recorder.add(1.0, False, False, 0, 0, status=404, error="no model a", window=0)
    recorder.add(1.0, False, False, 0, 0, status=404, error="no model b", window=1)
    merged = Recorder()  # through a worker's report to the master, as with --processes
    merged.merge(recorder.drain())
    merged.save(str(tmp_path / "samples.npz"))
    with np.load(tmp_path / "samples.npz") as data:
        everything = {key: data[key] for key in data.files}
    (tmp_path / "samples").mkdir()
    schedule = Schedule((Slot("a", "native"), Slot("b", "native")), (0, 1), 1.0, 0.0)
    steps = [Step(Label(name), 1, 0) for name in ("a", "b")]
    first, second = cut(everything, steps, {}, schedule, 1, tmp_path)
    assert [f.message for f in first.failures] == ["no model a"]
    assert [f.message for f in second.failures] == ["no model b"]


def test_each_window_gets_the_cpu_steal_read_over_it(tmp_path: Path) -> None:
    """The steal read during the Locust run is told per window, over its counted part (after
    the settling): a window with a burst of steal is flagged, the calm one beside it not."""
    from loadtests import steal
    from loadtests.schedule import Schedule, Slot
    from loadtests.windows import cut

    recorder = Recorder()
    recorder.start(warmup_s=0.0)
    time.sleep(0.01)
    recorder.add(1.0, True, True, 0, 0, window=0)
    recorder.add(1.0, True, True, 0, 0, window=1)
    recorder.save(str(tmp_path / "samples.npz"))
    with np.load(tmp_path / "samples.npz") as data:
        everything = {key: data[key] for key in data.files}
    (tmp_path / "samples").mkdir()
    schedule = Schedule((Slot("a", "native"), Slot("b", "native")), (0, 1), 1.0, 0.0)
    start = float(everything["window_start"])
    sampler = steal.Sampler()
    # Readings every 0.1 s, window 0 calm, window 1 (from start + 1 s) losing half its ticks;
    # the settling of window 1 (its first 0.1 s) steals everything and is not counted.
    ticks = [(0.0, 0, 0), (0.5, 0, 100), (1.0, 0, 200), (1.1, 100, 300), (1.6, 150, 400)]
    ticks += [(2.0, 200, 500)]
    sampler.samples = [steal.Ticks(start + at, st, total) for at, st, total in ticks]
    steps = [Step(Label(name), 1, 0) for name in ("a", "b")]
    first, second = cut(everything, steps, {}, schedule, 1, tmp_path, sampler)
    assert first.cpu_steal == 0.0 and second.cpu_steal == 0.5
    assert "in 1 of 2 windows the hypervisor took over 5 %" in steal.warning(
        [first.cpu_steal, second.cpu_steal], "windows"
    )


def test_a_workers_lost_last_report_is_said_on_the_steps_it_touches(tmp_path: Path) -> None:
    """Locust's master waits 0.5 s for its workers' last reports: one that comes later is
    lost, and its samples with it. The steps whose windows end within the last report interval
    say so (a worker's reports sent once it stopped are its last; the master counts the
    workers it heard last from); the earlier windows were reported before."""
    from loadtests.samples import REPORT_INTERVAL_S
    from loadtests.schedule import TAIL_S, Schedule, Slot
    from loadtests.windows import cut

    def warned(finals: list[bool]) -> list[bool]:
        master = Recorder()
        master.workers_expected = 2
        for worker, final in enumerate(finals):
            recorder = Recorder()
            recorder.start(warmup_s=0.0)
            time.sleep(0.01)
            for window in range(4):
                recorder.add(1.0, True, True, 0, 0, window=window)
            recorder.final = final
            master.merge(recorder.drain(), f"worker-{worker}")
        path = tmp_path / "samples.npz"
        master.save(str(path))
        with np.load(path) as data:
            everything = {key: data[key] for key in data.files}
        (tmp_path / "samples").mkdir(exist_ok=True)
        schedule = Schedule((Slot("a", "native"), Slot("b", "native")), (0, 1, 1, 0), 2.0, 0.0)
        steps = [Step(Label(m), 1, r) for r, m in enumerate("abba")]
        results = cut(everything, steps, {}, schedule, 2, tmp_path)
        said = [r.warnings for r in results]
        assert all(w == [] or w[0].startswith("1 Locust worker(s)' last report") for w in said)
        return [bool(w) for w in said]

    assert warned([True, True]) == [False, False, False, False]
    # The run ends 8 s + TAIL_S after the first window opens: windows ending in its last
    # REPORT_INTERVAL_S (3 s) lost samples, the two before had theirs reported already.
    assert 4 * 2.0 + TAIL_S - REPORT_INTERVAL_S == 5.5
    assert warned([True, False]) == [False, False, True, True]


def test_the_report_interval_is_locusts() -> None:
    """The window of samples a lost last report takes is Locust's worker report interval (read
    in a subprocess: importing Locust patches this process with gevent)."""
    from loadtests.samples import REPORT_INTERVAL_S

    done = subprocess.run(
        [sys.executable, "-c", "import locust.runners as r; print(r.WORKER_REPORT_INTERVAL)"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert float(done.stdout) == REPORT_INTERVAL_S


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_protocol_encodes_the_same_digit(protocol: str) -> None:
    digit = (np.arange(PIXELS).reshape(SIDE, SIDE) % 256).astype(np.uint8)
    request = encode(Protocol(protocol), "json", "depthwise@onnx", digit)
    assert "depthwise@onnx" in request.path
    if protocol in ("kserve-http", "kserve-grpc"):
        raw = request.body[-784 * 4 :]
        assert np.frombuffer(raw, "<f4") == pytest.approx(digit.ravel() / 255.0)
    else:
        data = json.loads(request.body)
        pixels = data["image"] if protocol == "native" else data["instances"][0]
        assert np.asarray(pixels).ravel() == pytest.approx(digit.ravel() / 255.0, abs=1e-4)
    if protocol != "native":
        with pytest.raises(ValueError, match="native protocol only"):
            encode(Protocol(protocol), "png", "depthwise", digit)


def test_answers_decode_in_each_protocol() -> None:
    row = np.linspace(0, 1, 10, dtype=np.float32)
    native = json.dumps({"predictions": [{"probabilities": row.tolist()}]}).encode()
    tfserving = json.dumps({"predictions": [row.tolist()]}).encode()
    header = json.dumps({"outputs": [{"parameters": {"binary_data_size": 40}}]}).encode()
    binary = header + row.tobytes()
    assert decode(Protocol.NATIVE, native) == pytest.approx(row)
    assert decode(Protocol.TFSERVING, tfserving) == pytest.approx(row)
    assert decode(Protocol.KSERVE_HTTP, binary, str(len(header))) == pytest.approx(row)
    with pytest.raises(AnswerError):
        decode(Protocol.TFSERVING, b'{"predictions": [[0.5, 0.5]]}')
    with pytest.raises(AnswerError):
        decode(Protocol.NATIVE, b"<html>")


def test_plan_sweeps_protocols_and_compares_them() -> None:
    native, grpc = Protocol.NATIVE, Protocol.KSERVE_GRPC
    plan = LoadPlan(variants=("depthwise",), protocols=(native, grpc), repeats=1, concurrency=(1,))
    native_label, grpc_label = (
        Label("depthwise", None, native, True),
        Label("depthwise", None, grpc, True),
    )
    assert [s.target for s in plan.steps()] == [native_label, grpc_label]
    assert [str(s.target) for s in plan.steps()] == [
        "depthwise via native",
        "depthwise via kserve-grpc",
    ]
    assert comparisons(plan) == [(Axis.PROTOCOL, native_label, grpc_label)]
    assert str(Label("depthwise", "onnx")) == "depthwise@onnx"  # one protocol: not shown
    with pytest.raises(ValueError, match="protocols"):
        LoadPlan(protocols=("soap",))  # type: ignore[arg-type]  # text from outside is checked
    with pytest.raises(ValueError, match="native protocol only"):
        LoadPlan(protocols=(Protocol.TFSERVING,), mode="png")
