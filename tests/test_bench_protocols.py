"""scripts/bench_protocols.py: its requests against a real server, sent by the real load
generators (wrk with each Lua script, h2load with the gRPC body), and its arithmetic and table.

A body the server does not answer right must show: the real-client check raises, and a run
of a broken request is not ``checked`` (h2load sees HTTP 200 for a failed gRPC call, so that
is the server's count of its answers speaking).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

from modelrepo.contract import INPUT_NAME, PIXELS
from tests.helpers import Server, run_script, run_server, script_module
from training.data import Mnist

MODEL = "depthwise@onnx"
HTTP = ("native", "tfserving", "kserve-json", "kserve-binary")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return script_module("bench_protocols")


@pytest.fixture(scope="module")
def made() -> ModuleType:
    return script_module("protocol_requests")


def digit_of(mnist: Mnist, index: int = 0) -> np.ndarray:
    return np.asarray(mnist.x_test[index])


# ---- without a server ----------------------------------------------------------------------


def test_grpc_body_is_one_framed_model_infer_request(made: ModuleType, mnist: Mnist) -> None:
    from tritonclient.grpc import service_pb2 as pb

    body = made.requests_for(MODEL, digit_of(mnist))["kserve-grpc"].body
    assert body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5
    request = pb.ModelInferRequest.FromString(made.grpc_unframe(body))
    assert request.model_name == MODEL
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype) == (INPUT_NAME, "FP32")
    assert list(tensor.shape) == [1, 28, 28, 1]
    pixels = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
    np.testing.assert_allclose(pixels, digit_of(mnist).ravel() / 255.0, atol=1e-7)


def test_grpc_unframe_refuses_a_wrong_frame(made: ModuleType) -> None:
    framed = made.grpc_frame(b"abc")
    assert made.grpc_unframe(framed) == b"abc"
    for bad in (framed[:-1], b"\x01" + framed[1:], b"\x00\x00"):
        with pytest.raises(ValueError):
            made.grpc_unframe(bad)


def test_http_bodies_hold_the_same_digit(made: ModuleType, mnist: Mnist) -> None:
    requests = made.requests_for(MODEL, digit_of(mnist))
    expected = np.round(digit_of(mnist).ravel() / 255.0, 4)
    native = json.loads(requests["native"].body)
    assert np.asarray(native[INPUT_NAME]).shape == (PIXELS,)
    np.testing.assert_allclose(native[INPUT_NAME], expected)
    tf = json.loads(requests["tfserving"].body)
    np.testing.assert_allclose(np.ravel(tf["instances"]), expected)
    v2 = json.loads(requests["kserve-json"].body)["inputs"][0]
    np.testing.assert_allclose(v2["data"], expected)
    binary = requests["kserve-binary"]
    split = int(binary.headers["Inference-Header-Content-Length"])
    assert len(binary.body) - split == PIXELS * 4
    assert json.loads(binary.body[:split])["inputs"][0]["parameters"]["binary_data_size"] == 3136


def test_lua_script_sets_path_headers_and_reads_the_body(made: ModuleType, tmp_path: Path) -> None:
    request = made.Request("kserve-binary", "/v2/models/m/infer", b"\x00{x}\xff", {"A-B": "12"})
    script = made.lua_script(tmp_path, request).read_text()
    assert 'wrk.method = "POST"' in script and 'wrk.path = "/v2/models/m/infer"' in script
    assert 'wrk.headers["A-B"] = "12"' in script
    assert (tmp_path / "kserve-binary.body").read_bytes() == b"\x00{x}\xff"
    assert f'io.open("{tmp_path / "kserve-binary.body"}", "rb")' in script


def run(bench: ModuleType, protocol: str, c: int, n: int, rps: float, **kw: object) -> Any:
    figures = dict(p50_ms=1.0, requests=100, generator_errors=0, server_ok=100, server_failed=0)
    figures.update(cpu_us=150.0, generator_cpu_us=40.0)
    return bench.Run(protocol, c, n, rps, **{**figures, **kw})


def test_ratios_within_round_and_flag_below_target(bench: ModuleType) -> None:
    runs = [
        run(bench, "native", 32, 1, 1000.0),
        run(bench, "kserve-grpc", 32, 1, 800.0),
        run(bench, "native", 32, 2, 500.0),
        run(bench, "kserve-grpc", 32, 2, 450.0),
    ]
    assert bench.ratios(runs) == {
        ("native", 32, 1): 1.0,
        ("kserve-grpc", 32, 1): 0.8,
        ("native", 32, 2): 1.0,
        ("kserve-grpc", 32, 2): 0.9,
    }
    text = bench.table(runs)
    row = "| kserve-grpc | 32 | 800 | 1.000 | 150, 40 | 0.80x **below 0.85x** |"
    assert row + " 450 | 1.000 | 150, 40 | 0.90x |" in text
    assert "Below 0.85x /predict in at least one round: kserve-grpc at c=32." in text
    assert "Warning" not in text


def test_a_run_is_checked_only_if_the_server_counted_its_answers(bench: ModuleType) -> None:
    good = run(bench, "kserve-grpc", 32, 1, 1000.0, server_ok=103, server_failed=2)
    assert good.checked  # two calls cut off by the stop, three answered after it
    assert not replace(good, server_ok=99).checked  # one answer the server did not count 200
    assert not replace(good, server_failed=33).checked  # more failures than connections
    assert not replace(good, generator_errors=1).checked
    assert not replace(good, requests=0, server_ok=0, server_failed=0).checked  # no answer
    text = bench.table([run(bench, "native", 1, 1, 10.0, server_ok=0, server_failed=100)])
    assert "(unchecked)" in text and "Warning: native c=1 round 1 is not a measure" in text


def test_rounds_alternate_the_order(bench: ModuleType) -> None:
    assert bench.order(1) == bench.PROTOCOLS
    assert bench.order(2) == bench.PROTOCOLS[::-1]


def test_h2load_command_speaks_grpc_over_h2c(bench: ModuleType) -> None:
    command = bench.h2load_command("127.0.0.1:9", 32, 5, Path("b"))
    assert command[:6] == ["h2load", "-t2", "-c32", "-m1", "-D5", "-d"]
    assert "-Hcontent-type: application/grpc" in command and "-Hte: trailers" in command
    assert command[-1] == "http://127.0.0.1:9/inference.GRPCInferenceService/ModelInfer"


# ---- against a real server, with the real generators ---------------------------------------


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The model served as the benchmark serves it, gRPC on."""
    missing = [tool for tool in ("wrk", "h2load") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"{missing} not installed: make wrk h2load")
    log = tmp_path_factory.mktemp("bench-protocols") / "server.log"
    flags = ("--variants", "depthwise", "--runtimes", "onnx", "--log-level", "warning")
    with run_server(models_dir, log, *flags, grpc=True) as running:
        running.wait_ready()
        yield running


@dataclass(frozen=True)
class Known:
    """A test digit the quick model classifies right over /predict."""

    index: int
    digit: np.ndarray
    label: int


@pytest.fixture(scope="module")
def known(server: Server, mnist: Mnist) -> Known:
    for index in range(20):
        pixels = (digit_of(mnist, index) / 255.0).ravel().tolist()
        answer = httpx.post(f"{server.url}/predict/{MODEL}", json={INPUT_NAME: pixels})
        if int(np.argmax(answer.json()["predictions"][0]["probabilities"])) == mnist.y_test[index]:
            return Known(index, digit_of(mnist, index), int(mnist.y_test[index]))
    raise AssertionError("the quick model got none of the first 20 digits right")


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [*HTTP, "kserve-grpc"])
def test_each_request_is_answered_right(
    made: ModuleType, server: Server, known: Known, protocol: str
) -> None:
    request = made.requests_for(MODEL, known.digit)[protocol]
    made.check_answer(server, request, known.label)
    wrong = (known.label + 1) % 10
    with pytest.raises(made.CheckError, match=f"answered {known.label}, not {wrong}"):
        made.check_answer(server, request, wrong)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [*HTTP, "kserve-grpc"])
def test_generator_runs_are_all_successes(
    bench: ModuleType, made: ModuleType, server: Server, known: Known, tmp_path: Path, protocol: str
) -> None:
    """wrk with each Lua script, h2load with the gRPC body file: every answer a 200."""
    files = made.generator_files(tmp_path, made.requests_for(MODEL, known.digit))
    got = bench.measure(server, protocol, files[protocol], 2, 1)
    assert got.requests > 50 and got.rps > 0 and got.p50_ms > 0
    assert got.cpu_us > 0 and got.generator_cpu_us > 0
    assert got.checked, got


@pytest.mark.slow
@pytest.mark.parametrize("break_", ["model not served", "body cut short"])
@pytest.mark.parametrize("protocol", [*HTTP, "kserve-grpc"])
def test_a_broken_request_is_caught(
    bench: ModuleType,
    made: ModuleType,
    server: Server,
    known: Known,
    tmp_path: Path,
    protocol: str,
    break_: str,
) -> None:
    """A request the server cannot answer: the real-client check raises, and a generator run
    of it is not ``checked`` (for gRPC h2load itself sees nothing wrong)."""
    model = "nosuch@onnx" if break_ == "model not served" else MODEL
    request = made.requests_for(model, known.digit)[protocol]
    if break_ == "body cut short":
        request = replace(request, body=request.body[:-1])
    with pytest.raises(made.CheckError):
        made.check_answer(server, request, known.label)
    files = made.generator_files(tmp_path, {protocol: request})
    got = bench.measure(server, protocol, files[protocol], 1, 1)
    assert not got.checked and got.server_ok == 0, got


@pytest.mark.slow
def test_smoke_run_writes_the_record(
    models_dir: Path, mnist_path: Path, known: Known, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    done = run_script(
        "bench_protocols",
        *("--models", models_dir, "--digit", str(known.index), "--out", out),
        *("--duration", "1", "--concurrency", "2", "--rounds", "2"),
        mnist=mnist_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(out.read_text())
    assert record["machine"]["cores"] and record["model"] == MODEL
    assert record["digit_label"] == known.label
    assert len(record["runs"]) == 5 * 2 and all(r["requests"] > 0 for r in record["runs"])
    assert {r["protocol"] for r in record["runs"]} == set(record["commands"])
    assert "h2load -t2 -c2 -m1 -D1" in record["commands"]["kserve-grpc"]
    assert "| kserve-grpc | 2 |" in done.stdout
