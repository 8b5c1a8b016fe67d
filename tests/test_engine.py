"""The multi-process engine against real servers: several front ends on one port, one model
executor batching for all of them (and, in the hybrid engine, copies of the light models in
the front ends), one admission limit, one readiness, aggregated metrics,
gRPC on every worker, and crashes that are survived (a killed worker or executor)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from modelrepo.contract import INPUT_NAME, PIXELS
from service.channel import Hello, Slots, unlink
from service.shared import SharedState, spawn_context
from tests.helpers import Server, batching, run_server

pytestmark = pytest.mark.slow

DIGIT = {INPUT_NAME: [0.0] * 300 + [1.0] * 184 + [0.0] * 300}


@contextlib.contextmanager
def two_workers(
    models_dir: Path,
    folder: Path,
    *args: str,
    engine: str = "executor",
    grpc: bool = False,
    runtimes: str = "onnx",
) -> Iterator[Server]:
    """A ready server with two workers on the ONNX runtime."""
    args = ("--workers", "2", "--engine", engine, "--runtimes", runtimes, *args)
    with run_server(models_dir, folder / "server.log", *args, grpc=grpc) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="module")
def engine(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The executor engine with two front ends, gRPC on, a one-request admission limit left
    at the default (tests that need it lower start their own server)."""
    with two_workers(models_dir, tmp_path_factory.mktemp("engine"), grpc=True) as server:
        yield server


def engine_info(server: Server) -> dict[str, object]:
    """GET /engine."""
    info: dict[str, object] = httpx.get(f"{server.url}/engine").json()
    return info


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, from /metrics."""
    text = httpx.get(f"{server.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def settled_metric(server: Server, name: str, expected: float, **labels: str) -> float:
    """The metric once it reads ``expected`` (each scrape waits for every process's tallies;
    a process held up longer than that is read again), or its last reading after 10 s."""
    deadline = time.monotonic() + 10
    while (value := metric(server, name, **labels)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def burst(server: Server, count: int, path: str = "/predict/depthwise") -> list[int]:
    """``count`` requests at once, each on its own connection: their statuses."""

    def one(_: int) -> int:
        with httpx.Client() as client:  # a new connection each: spread over the workers
            return client.post(f"{server.url}{path}", json=DIGIT, timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def test_front_ends_share_the_executor_and_its_batches(engine: Server) -> None:
    """Two front ends without TensorFlow, one executor: every request is answered, the
    metrics add up over the processes, and the executor forms batches of several requests."""
    info = engine_info(engine)
    assert info["engine"] == "executor" and info["workers"] == 2
    pids = info["pids"]
    assert isinstance(pids, list) and len(set(pids)) == 2 and info["executor_pid"]
    # The front ends never load TensorFlow; the executor loads it only to serve a SavedModel,
    # and this server has ONNX models alone (tests/test_device.py has one with a SavedModel).
    for pid in [*pids, info["executor_pid"]]:
        assert "tensorflow" not in Path(f"/proc/{pid}/maps").read_text()
    ready = httpx.get(f"{engine.url}/readyz").json()
    assert ready["status"] == "ready" and ready["processes"] == [1, 1]

    before = metric(engine, "mnist_serve_requests_total", status="200")
    batches_before = metric(engine, "mnist_serve_batch_size_count")
    images_before = metric(engine, "mnist_serve_batch_size_sum")
    served_by: set[object] = set()
    for _ in range(20):  # new connections land on both workers
        with httpx.Client() as client:
            served_by.add(client.get(f"{engine.url}/engine").json()["process"])
    assert served_by == {0, 1}
    for _ in range(10):  # each front end describes the executor's models as the executor does
        with httpx.Client() as client:
            entries = client.get(f"{engine.url}/variants").json()
        assert [r["batching"] for e in entries for r in e["runtimes"]] == [batching()] * 2
    statuses = burst(engine, 400)
    assert statuses == [200] * 400
    assert settled_metric(engine, "mnist_serve_requests_total", before + 400, status="200") == (
        before + 400
    )
    batches = metric(engine, "mnist_serve_batch_size_count") - batches_before
    images = metric(engine, "mnist_serve_batch_size_sum") - images_before
    assert 0 < batches < 400, "every request ran alone: no batch was shared"
    assert images == 400  # each request's one image, batched once


def test_every_process_says_which_it_is_in_uvicorn_lines_too(engine: Server) -> None:
    """uvicorn's own lines go through our log format: each says which worker wrote it."""
    log = engine.log.read_text()
    for worker in (0, 1):
        assert re.search(rf"INFO \[worker {worker} \d+\] uvicorn.error: Application startup", log)


def test_grpc_on_every_worker(engine: Server) -> None:
    """KServe V2 gRPC answers on the shared port, whichever worker takes the connection."""
    assert engine.grpc_target is not None
    image = np.zeros((1, 28, 28, 1), dtype=np.float32)
    image[0, 4:24, 13:15, 0] = 1.0
    for _ in range(6):
        client = grpcclient.InferenceServerClient(engine.grpc_target)
        tensor = grpcclient.InferInput(INPUT_NAME, list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        result = client.infer("depthwise@onnx", [tensor])
        assert result.as_numpy("probabilities").shape == (1, 10)
        client.close()


def hold_one_request(server: Server) -> tuple[socket.socket, bytes]:
    """A connection whose POST has its headers in but not its body: it holds an admission
    slot in whichever worker took it, until the body arrives."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    body = f'{{"{INPUT_NAME}": [{", ".join(["0.0"] * PIXELS)}]}}'.encode()
    sock.sendall(
        b"POST /predict/depthwise HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    sock.sendall(body[:10])
    return sock, body[10:]


def test_admission_limit_is_global(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """--max-in-flight 1 with two workers: one request held in one worker makes every other
    request, in either worker, 503 at once; SIGTERM then drains the held one."""
    folder = tmp_path_factory.mktemp("admission")
    with two_workers(models_dir, folder, "--max-in-flight", "1") as server:
        held, rest = hold_one_request(server)
        time.sleep(0.3)
        statuses = burst(server, 40)
        assert statuses == [503] * 40, statuses  # per-worker limits would let one worker serve
        assert metric(server, "mnist_serve_shed_total", reason="in_flight") == 40
        held.sendall(rest)
        answer = held.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        for _ in range(8):  # one at a time: within the limit, whichever worker takes it
            with httpx.Client() as client:
                assert client.post(f"{server.url}/predict/depthwise", json=DIGIT).status_code == 200

        # SIGTERM drains: a request in flight when it comes is still answered.
        held, rest = hold_one_request(server)
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        held.sendall(rest)
        assert held.recv(65536).startswith(b"HTTP/1.1 200")
        held.close()
        assert server.process.wait(timeout=30) == 0
    prefix = f"mnist-serve-{server.process.pid}"
    assert [n for n in os.listdir("/dev/shm") if n.startswith(prefix)] == []


def load(server: Server, seconds: float, path: str = "/predict/depthwise") -> list[int | str]:
    """Closed-loop requests from 8 threads for ``seconds``: each status, or the error's name."""
    deadline = time.monotonic() + seconds

    def client(_: int) -> list[int | str]:
        seen: list[int | str] = []
        while time.monotonic() < deadline:
            try:
                with httpx.Client() as http:
                    seen.append(http.post(f"{server.url}{path}", json=DIGIT, timeout=5).status_code)
            except httpx.HTTPError as err:
                seen.append(type(err).__name__)
        return seen

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return [s for seen in pool.map(client, range(8)) for s in seen]


def test_killed_processes_are_restarted(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Under load, kill -9 a worker, then the executor: nothing hangs (a request on the
    killed worker's connection fails, the executor's waiting ones get 503 at once), each is
    restarted, the admission count is given back, and the server serves again."""
    with two_workers(models_dir, tmp_path_factory.mktemp("crash")) as server:
        info = engine_info(server)
        worker_pid = info["pids"][0]  # type: ignore[index]
        executor_pid = info["executor_pid"]
        assert isinstance(worker_pid, int) and isinstance(executor_pid, int)

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            during = pool.submit(load, server, 4.0)
            time.sleep(1.0)
            os.kill(worker_pid, signal.SIGKILL)
            seen = during.result(timeout=30)  # a hang would time out here
        assert seen.count(200) > 50
        assert set(seen) <= {200, "RemoteProtocolError", "ReadError", "ConnectError"}, set(seen)
        server.wait_ready(timeout=60)
        info = engine_info(server)
        assert worker_pid not in info["pids"]  # type: ignore[operator]
        assert re.search(r"worker 0 \(pid \d+\) died with -9: restarting", server.log.read_text())

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            during = pool.submit(load, server, 4.0)
            time.sleep(1.0)
            started = time.monotonic()
            os.kill(executor_pid, signal.SIGKILL)
            seen = during.result(timeout=30)
        assert time.monotonic() - started < 10
        assert 503 in seen and set(seen) <= {200, 503}, set(seen)
        server.wait_ready(timeout=90)
        assert engine_info(server)["executor_pid"] != executor_pid
        assert burst(server, 16) == [200] * 16
        assert metric(server, "mnist_serve_in_flight") == 0  # nothing leaked by the dead


def in_process(
    server: Server, count: int, workers: int = 2, timeout_s: float = 60
) -> dict[int, list[str]]:
    """What each worker runs itself (/engine's in_process), once every worker has answered
    with ``count`` models (a hybrid front end's copies load one by one after /readyz)."""
    seen: dict[int, list[str]] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < workers or any(len(names) != count for names in seen.values()):
        assert time.monotonic() < deadline, seen
        with httpx.Client() as client:  # a new connection: either worker may take it
            info = client.get(f"{server.url}/engine").json()
        seen[info["process"]] = info["in_process"]
        time.sleep(0.05)
    return seen


def test_hybrid_front_ends_serve_their_own_copies(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The default engine: the executor owns every model and TensorFlow, and each front end
    also serves its own copy of the ONNX models. With the executor frozen (SIGSTOP), ONNX
    requests are still answered, by the front ends; killed, it is restarted while the copies
    go on answering every ONNX request, and SavedModel requests get 503 until it is back."""
    folder = tmp_path_factory.mktemp("hybrid")
    with two_workers(models_dir, folder, engine="hybrid", runtimes="savedmodel,onnx") as server:
        info = engine_info(server)
        assert info["engine"] == "hybrid" and isinstance(info["executor_pid"], int)
        variants = [p.name for p in models_dir.iterdir() if p.is_dir()]
        copies = in_process(server, count=len(variants))  # each variant's ONNX model
        assert set(copies) == {0, 1}
        names = copies[0]
        assert names and all("@onnx:" in name for name in names), names  # never SavedModel
        for pid in info["pids"]:  # type: ignore[attr-defined]
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "onnxruntime" in maps and "tensorflow" not in maps
        # The executor serves the SavedModels: it alone configured and loaded TensorFlow.
        assert "tensorflow" in Path(f"/proc/{info['executor_pid']}/maps").read_text()
        assert burst(server, 100, "/predict/depthwise@onnx") == [200] * 100
        assert burst(server, 20, "/predict/depthwise@savedmodel") == [200] * 20

        executor_pid = info["executor_pid"]
        os.kill(executor_pid, signal.SIGSTOP)
        try:  # a request through the executor would wait for it: these never touch it
            assert burst(server, 40, "/predict/depthwise@onnx") == [200] * 40
        finally:
            os.kill(executor_pid, signal.SIGCONT)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            onnx = pool.submit(load, server, 4.0, "/predict/depthwise@onnx")
            saved = pool.submit(load, server, 4.0, "/predict/depthwise@savedmodel")
            time.sleep(1.0)
            os.kill(executor_pid, signal.SIGKILL)
            seen_onnx = onnx.result(timeout=30)  # a hang would time out here
            seen_saved = saved.result(timeout=30)
        assert set(seen_onnx) == {200}, set(seen_onnx)  # the copies never stopped
        assert 503 in seen_saved and set(seen_saved) <= {200, 503}, set(seen_saved)
        server.wait_ready(timeout=90)
        assert in_process(server, len(variants)) == copies  # the same versions, here again
        assert burst(server, 40, "/predict/depthwise@onnx") == [200] * 40


def test_replicas_engine(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Replicas: every worker loads its own models; one readiness, one /metrics."""
    with two_workers(models_dir, tmp_path_factory.mktemp("replicas"), engine="replicas") as server:
        info = engine_info(server)
        assert info["engine"] == "replicas" and info["executor_pid"] is None
        for pid in info["pids"]:  # type: ignore[attr-defined]
            assert "onnxruntime" in Path(f"/proc/{pid}/maps").read_text()
        assert burst(server, 100) == [200] * 100
        assert settled_metric(server, "mnist_serve_requests_total", 100, status="200") == 100


def test_shared_state_across_processes() -> None:
    """The admission count is one across processes: what one holds, another cannot take."""
    context = spawn_context()
    state = SharedState(context, limit=2, processes=2, models=1)
    assert state.try_enter(0) and state.try_enter(0)
    child = context.Process(target=_try_enter_in_child, args=(state,))
    child.start()
    child.join(30)
    assert child.exitcode == 0  # the child found the server full
    state.forget(0)  # process 0 died holding both
    assert state.in_flight == 0 and state.try_enter(1)


def _try_enter_in_child(state: SharedState) -> None:
    raise SystemExit(0 if not state.try_enter(1) else 1)


def test_slots_round_trip_in_place() -> None:
    """What a front end writes in a slot, the executor reads in place, and back."""
    slots = Slots.create(f"mnist-serve-test-{os.getpid()}", 4, 8)
    try:
        slot = slots.take()
        assert slot is not None
        images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
        slots.images(slot, 3)[:] = images
        other = Slots.attach(Hello(0, slots.block.name, 4, 8))
        assert np.array_equal(other.images(slot, 3), images)
        other.probabilities(slot, 3)[:] = 0.5
        assert np.all(slots.probabilities(slot, 3) == 0.5)
        other.close()
    finally:
        slots.close()
        unlink(slots.block.name)
