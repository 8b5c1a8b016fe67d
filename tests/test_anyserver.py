"""The load test against a server that is not mnist-serve: tensors shaped from the model's
metadata, a model no digit fits refused at once, and failed requests counted, reported and stored.

The other server is tests/v2_peer.py: a standalone KServe V2 server (REST and gRPC) whose one
model takes ``input__0`` ``[-1, 784]`` FP32, as many Triton models do.
"""

from __future__ import annotations

import json
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
from loadtests.protocols import Protocol, decode, encode, error_message
from loadtests.report import build_report
from loadtests.results import LoadPlan, ProtocolLayout, RunRecord
from loadtests.runner import Target, run_plan
from loadtests.shaping import LayoutError, TensorLayout, from_tfserving, from_v2
from loadtests.windows import summarize
from modelrepo.contract import PIXELS, SIDE
from tests.helpers import REPO, run_record
from tests.v2_peer import LinearModel, V2Peer, fit_linear
from training.data import Mnist

DIGIT = (np.arange(PIXELS).reshape(SIDE, SIDE) % 256).astype(np.uint8)


def v2(shape: list[int], datatype: str = "FP32", outputs: list[dict] | None = None) -> dict:
    """V2 model metadata with one input of ``shape``."""
    return {
        "name": "m",
        "inputs": [{"name": "input__0", "datatype": datatype, "shape": shape}],
        "outputs": outputs or [{"name": "output__0", "datatype": "FP32", "shape": [-1, 10]}],
    }


@pytest.mark.parametrize(
    ("declared", "sent", "batched"),
    [
        ([-1, 784], (1, 784), True),  # Triton's common flat input
        ([-1, 28, 28, 1], (1, 28, 28, 1), True),  # ours, Keras
        ([-1, 1, 28, 28], (1, 1, 28, 28), True),  # NCHW, PyTorch / ONNX
        ([-1, 28, 28], (1, 28, 28), True),
        ([784], (784,), False),  # Triton max_batch_size 0: no batch dimension
        ([28, 28], (28, 28), False),
        ([1, 784], (1, 784), False),  # a fixed batch of one
    ],
)
def test_metadata_shapes_the_tensor(declared: list[int], sent: tuple, batched: bool) -> None:
    layout = from_v2("m", v2(declared))
    assert (layout.input, layout.output, layout.datatype) == ("input__0", "output__0", "FP32")
    assert layout.shape == sent and layout.batched is batched
    tensor = layout.array(DIGIT)
    assert tensor.shape == sent and tensor.dtype == np.float32
    assert tensor.ravel() == pytest.approx(DIGIT.ravel() / 255.0)  # row-major pixels throughout


@pytest.mark.parametrize(
    ("datatype", "dtype", "scale"),
    [("UINT8", np.uint8, 1.0), ("FP64", np.float64, 255.0), ("FP16", np.float16, 255.0)],
)
def test_metadata_datatype_types_the_tensor(datatype: str, dtype: type, scale: float) -> None:
    layout = from_v2("m", v2([-1, 784], datatype))
    tensor = layout.array(DIGIT)
    assert tensor.dtype == dtype
    assert tensor.ravel().astype(float) == pytest.approx(DIGIT.ravel() / scale, abs=1e-3)
    request = encode(Protocol.KSERVE_HTTP, "json", "m", DIGIT, layout)
    header = json.loads(request.body[: int(request.headers["Inference-Header-Content-Length"])])
    assert header["inputs"][0]["datatype"] == datatype
    assert request.body.endswith(tensor.tobytes())


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        (
            v2([-1, 3, 32, 32]),
            r"model m wants input input__0 \[-1, 3, 32, 32\]; an MNIST digit is 784",
        ),
        (v2([-1, -1]), "left open"),
        (v2([-1, 784], "INT64"), "wants input input__0 as INT64"),
        (
            {
                **v2([-1, 784]),
                "inputs": [{"name": a, "datatype": "FP32", "shape": [-1, 784]} for a in "ab"],
            },
            "takes 2 inputs",
        ),
        (
            v2([-1, 784], outputs=[{"name": "o", "datatype": "FP32", "shape": [-1, 1000]}]),
            "no output of 10",
        ),
        (
            v2([-1, 784], outputs=[{"name": "o", "datatype": "INT64", "shape": [-1, 10]}]),
            "is INT64",
        ),
        ({"name": "m"}, "no inputs/outputs"),
    ],
)
def test_metadata_no_digit_fits_is_refused(metadata: dict, says: str) -> None:
    with pytest.raises(LayoutError, match=says):
        from_v2("m", metadata)


def test_the_output_of_ten_values_is_picked_by_shape() -> None:
    outputs = [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 128]},
    ]
    layout = from_v2("m", v2([-1, 784], outputs=outputs))
    assert layout.output == "logits"
    # An answer holding both outputs is read by name, in the layout's datatype.
    row = np.linspace(0, 1, 10)
    header = json.dumps(
        {
            "outputs": [
                {"name": "embedding", "data": [0.0] * 128},
                {"name": "logits", "data": row.tolist()},
            ]
        }
    ).encode()
    assert decode(Protocol.KSERVE_HTTP, header, None, layout) == pytest.approx(row)
    fp64 = TensorLayout("m", "x", (1, 784), "FP32", "y", "FP64")
    binary = json.dumps({"outputs": [{"name": "y", "parameters": {"binary_data_size": 80}}]})
    body = binary.encode() + row.astype("<f8").tobytes()
    assert decode(Protocol.KSERVE_HTTP, body, str(len(binary)), fp64) == pytest.approx(row)


def tf_metadata(signatures: dict) -> dict:
    """TF Serving's metadata answer; a signature with an empty shape has no inputs (the
    ``__saved_model_init_op`` a SavedModel carries)."""

    def tensor(dims: list[int], dtype: str = "DT_FLOAT") -> dict:
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d)} for d in dims]}}

    return {
        "metadata": {
            "signature_def": {
                "signature_def": {
                    name: {
                        "inputs": {"pixels": tensor(shape)} if shape else {},
                        "outputs": {"scores": tensor([-1, 10]), "ids": tensor([-1], "DT_INT64")},
                    }
                    for name, shape in signatures.items()
                }
            }
        }
    }


def test_tfserving_signature_shapes_the_instances() -> None:
    layout = from_tfserving("m", tf_metadata({"serving_default": [-1, 784]}))
    assert (layout.input, layout.output, layout.shape, layout.signature) == (
        "pixels",
        "scores",
        (1, 784),
        "",
    )
    body = json.loads(encode(Protocol.TFSERVING, "json", "m", DIGIT, layout).body)
    assert np.asarray(body["instances"]).shape == (1, 784) and "signature_name" not in body
    # A model with one other signature, no batch dimension: columnar "inputs", named signature.
    other = from_tfserving("m", tf_metadata({"classify": [28, 28], "__saved_model_init_op": []}))
    assert other.signature == "classify" and not other.batched
    body = json.loads(encode(Protocol.TFSERVING, "json", "m", DIGIT, other).body)
    assert np.asarray(body["inputs"]).shape == (28, 28) and body["signature_name"] == "classify"
    # Several outputs come back by name.
    answer = {"predictions": [{"scores": list(range(10)), "ids": 3}]}
    assert decode(Protocol.TFSERVING, json.dumps(answer).encode(), None, layout)[9] == 9
    with pytest.raises(LayoutError, match="cannot tell which"):
        from_tfserving("m", tf_metadata({"a": [-1, 784], "b": [-1, 784]}))
    with pytest.raises(LayoutError, match="wants input pixels"):
        from_tfserving("m", tf_metadata({"serving_default": [-1, 224, 224, 3]}))


def test_our_own_metadata_gives_our_tensors() -> None:
    """mnist-serve's V2 metadata shapes the digit exactly as before the shaping existed."""
    ours = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    }
    assert from_v2("depthwise", ours) == TensorLayout.ours("depthwise")


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
