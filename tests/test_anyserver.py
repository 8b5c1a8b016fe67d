"""The load test against a server that is not mnist-serve: tensors shaped from the model's
metadata (the shaping's own tests: test_shaping.py), a model no digit fits refused at once, and
failed requests counted, reported and stored.

The other server is tests/v2_peer.py: a standalone KServe V2 server (REST and gRPC) whose one
model takes ``input__0`` ``[-1, 784]`` FP32, as many Triton models do.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from loadtests import history
from loadtests.labels import Label, Step
from loadtests.protocols import Protocol, error_message
from loadtests.report import build_report
from loadtests.results import LoadPlan, ProtocolLayout, RunRecord
from loadtests.runner import Target, run_plan
from loadtests.shaping import TensorLayout
from loadtests.windows import summarize
from tests.helpers import REPO, run_record
from tests.v2_peer import LinearModel, V2Peer, fit_linear
from training.data import Mnist


def test_server_error_messages_are_one_short_line() -> None:
    assert (
        error_message(b'{"error": "unexpected shape\\n for input"}') == "unexpected shape for input"
    )
    assert error_message(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert error_message("x" * 400).endswith("...")


def failed_samples(n: int, status: float, message: str) -> dict[str, np.ndarray]:
    """A step's samples where every request failed with ``status``."""
    return {
        "latency_ms": np.full(n, 0.5),
        "ok": np.zeros(n),
        "correct": np.zeros(n),
        "queue_ms": np.full(n, np.nan),
        "model_ms": np.full(n, np.nan),
        "finished_at": 1000.0 + np.linspace(0, 2, n),
        "status": np.full(n, status),
        "window_start": np.asarray(1000.0),
        "generator_cpu_s": np.asarray(0.2),
        "error_status": np.asarray([int(status)]),
        "error_message": np.asarray([message]),
    }


def test_every_failed_request_is_an_error_with_its_status() -> None:
    step = Step(Label("m", None, Protocol.KSERVE_GRPC), 1, 0)
    samples = failed_samples(40, 3, "unexpected shape")
    samples["ok"][:10] = 1  # ten succeeded
    samples["status"][:10] = 0
    samples["status"][10:15] = 14
    result = summarize(step, "default", samples, 1, "")
    assert (result.requests, result.errors, result.failed) == (40, 30, False)
    assert [(f.status, f.count) for f in result.failures] == [
        ("gRPC INVALID_ARGUMENT", 25),
        ("gRPC UNAVAILABLE", 5),
    ]
    assert result.failures[0].message == "unexpected shape"
    http = summarize(
        Step(Label("m", None, Protocol.KSERVE_HTTP), 1, 0),
        "default",
        failed_samples(20, 400, "bad"),
        1,
        "",
    )
    assert http.failed and http.errors == http.requests == 20
    assert http.failure_line == "20 x HTTP 400: bad" and math.isnan(http.latency_ms.p50)


@pytest.mark.slow
def test_a_failed_step_is_reported_and_stored(tmp_path: Path) -> None:
    """No successful request for one model, all for the other: the report says which failed,
    with the status and message, and compares nothing with it; the history stores the step
    (its latency as infinity, not a NULL that breaks the table)."""
    plan = LoadPlan(
        variants=("fine", "m"), protocols=(Protocol.KSERVE_HTTP,), concurrency=(1,), repeats=1
    )
    folder = tmp_path / "run"
    (folder / "samples").mkdir(parents=True)
    results = []
    for step in plan.steps():
        samples = failed_samples(30, 400, "unexpected shape for input 'image'")
        if step.model == "fine":
            samples["ok"][:] = samples["correct"][:] = 1
            samples["status"][:] = 200
        np.savez(folder / "samples" / f"{step.key}.npz", **samples)  # type: ignore[arg-type]
        results.append(summarize(step, "default", samples, 1, f"samples/{step.key}.npz"))
    record = run_record(plan, steps=results)
    record.save(folder)
    written = build_report(folder)
    text = written.markdown.read_text()
    assert "FAILED: m at 1 client(s), repeat 1: no successful request (30 of 30 failed" in text
    assert "HTTP 400" in text and "unexpected shape for input 'image'" in text
    assert "| 1 | fine | 15 |" in text and "Speedup" not in text  # nothing against a failure
    assert written.html.is_file() and "FAILED" in written.html.read_text()
    path = tmp_path / "history.sqlite"
    history.store(path, folder, plan, record)
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT variant, p50_ms, errors, requests, throughput_rps FROM steps ORDER BY variant"
        ).fetchall()
    assert rows[1] == ("m", math.inf, 30, 30, 0.0) and rows[0][1] == 0.5


@pytest.fixture(scope="module")
def linear(mnist: Mnist) -> LinearModel:
    """The peer's model: a linear layer fitted to 10,000 training digits (about 85 % right)."""
    return fit_linear(mnist.x_train[:10_000], mnist.y_train[:10_000])


@pytest.fixture
def peer(linear: LinearModel, request: pytest.FixtureRequest) -> Iterator[V2Peer]:
    """The independent V2 server; ``@pytest.mark.parametrize("peer", [{...}], indirect=True)``
    changes its model (``declared``, ``refuse``)."""
    changes = getattr(request, "param", {})
    model = LinearModel(linear.weights, linear.bias, **changes)
    running = V2Peer(model).start()
    yield running
    running.stop()


def plan_for(mnist_path: Path, *protocols: Protocol) -> LoadPlan:
    """2 s steps at 1 and 4 clients against the peer's model."""
    return LoadPlan(
        variants=("mnist_linear",),
        protocols=protocols,
        concurrency=(1, 4),
        duration_s=2,
        warmup_s=1,
        repeats=1,
        mnist=str(mnist_path),
    )


@pytest.mark.slow
def test_load_test_against_another_v2_server(
    peer: V2Peer, tmp_path: Path, mnist_path: Path
) -> None:
    """Its model takes input__0 [-1, 784]: real figures over REST and gRPC, shaped by metadata."""
    plan = plan_for(mnist_path, Protocol.KSERVE_HTTP, Protocol.KSERVE_GRPC)
    record = run_plan(plan, tmp_path, Target(peer.url, peer.grpc_target, started_here=False))
    assert len(record.steps) == 4
    for step in record.steps:
        assert step.requests > 20 and step.errors == 0 and not step.failures, step
        assert step.accuracy > 0.75  # the peer's answers, read from output__0, are digits
    shaped = TensorLayout("mnist_linear", "input__0", (1, 784), "FP32", "output__0")
    assert record.layouts == [
        ProtocolLayout(Protocol.KSERVE_HTTP, shaped),
        ProtocolLayout(Protocol.KSERVE_GRPC, shaped),
    ]
    assert RunRecord.load(tmp_path).layouts == record.layouts
    text = build_report(tmp_path).markdown.read_text()
    assert "FAILED" not in text and "input__0 FP32 [1, 784]" in text


def cli(
    tmp_path: Path, peer: V2Peer, mnist_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``mnist-serve loadtest`` against the peer, both protocols, 2 s at one client after 1 s."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COLUMNS": "400",
        history.ENV_VAR: str(tmp_path / "history.sqlite"),
    }
    command = [
        sys.executable,
        "-m",
        "mnist_serve.cli",
        "loadtest",
        "--url",
        peer.url,
        "--grpc-url",
        peer.grpc_target,
        "--variants",
        "mnist_linear",
        "--protocol",
        "kserve-http,kserve-grpc",
        "--concurrency",
        "1",
        "--duration",
        "2s",
        "--warmup",
        "1s",  # preparing the payloads takes a moment on a busy machine: not measured
        "--repeats",
        "1",
        "--precision",
        "off",
        "--data",
        str(mnist_path),
        "--out",
        str(tmp_path / "run"),
        *args,
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.parametrize("peer", [{"declared": [-1, 3, 32, 32]}], indirect=True)
def test_a_model_no_digit_fits_stops_the_load_test_at_once(
    peer: V2Peer, tmp_path: Path, mnist_path: Path
) -> None:
    done = cli(tmp_path, peer, mnist_path)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "model mnist_linear wants input input__0 [-1, 3, 32, 32]; an MNIST digit is 784" in said
    assert "Traceback" not in said
    assert not (tmp_path / "run" / "samples").exists()  # stopped before any step


@pytest.mark.slow
@pytest.mark.parametrize("peer", [{"refuse": "model is out of order"}], indirect=True)
def test_a_server_that_refuses_every_request_gives_a_failed_report(
    peer: V2Peer, tmp_path: Path, mnist_path: Path
) -> None:
    """Every request 400 / INVALID_ARGUMENT: each step failed with its status and the server's
    message, the report and the history written, exit code 1, no traceback."""
    done = cli(tmp_path, peer, mnist_path)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said
    assert "2 of 2 steps had no successful request" in said
    record = RunRecord.load(tmp_path / "run")
    statuses = {}
    for step in record.steps:
        assert step.failed and step.requests > 0 and step.errors == step.requests, step
        (failure,) = step.failures
        assert failure.message == "model is out of order" and failure.count == step.requests
        statuses[step.protocol] = failure.status
    assert statuses == {
        Protocol.KSERVE_HTTP: "HTTP 400",
        Protocol.KSERVE_GRPC: "gRPC INVALID_ARGUMENT",
    }
    text = (tmp_path / "run" / "report.md").read_text()
    assert text.count("FAILED: mnist_linear via") == 2 and "model is out of order" in text
    assert (tmp_path / "run" / "report.html").is_file()
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        rows = db.execute("SELECT errors, requests, throughput_rps FROM steps").fetchall()
    assert len(rows) == 2 and all(e == r > 0 and t == 0 for e, r, t in rows)
