"""The batcher merges concurrent requests, keeps order, fails whole batches, and sheds load."""

import asyncio
import threading

import numpy as np
import pytest

from modelrepo.contract import INPUT_SHAPE
from service.batcher import Batcher
from service.errors import ModelFailure, Overloaded, Unavailable

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingModel:
    """A stand-in model: row i of the output encodes the first pixel of image i."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.gate, self.fail = gate, fail

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(len(images))
        if self.fail:
            raise RuntimeError("boom")
        return np.repeat(images[:, 0, 0, :], 10, axis=1)


def images(*values: float) -> np.ndarray:
    out = np.zeros((len(values), *INPUT_SHAPE), dtype=np.float32)
    out[:, 0, 0, 0] = values
    return out


async def test_concurrent_requests_form_one_batch_in_order() -> None:
    gate = threading.Event()
    model = RecordingModel(gate)
    batcher = Batcher(model, max_batch_size=64, max_wait_s=0.05)
    batcher.start()
    # The first request occupies the model; the next 20 queue up behind it meanwhile.
    first = asyncio.ensure_future(batcher.submit(images(0.5)))
    await asyncio.sleep(0.05)
    rest = [
        asyncio.ensure_future(batcher.submit(images(i / 100, i / 100 + 0.001))) for i in range(20)
    ]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(first, *rest)
    await batcher.stop()
    assert model.batches == [1, 40]
    for i, (probabilities, timing) in enumerate(results[1:]):
        assert probabilities[:, 0] == pytest.approx([i / 100, i / 100 + 0.001])
        assert timing.batch_images == 40
        assert timing.queue_s > 0.0


async def test_lone_request_is_not_delayed_by_max_wait() -> None:
    model = RecordingModel()
    batcher = Batcher(model, max_batch_size=32, max_wait_s=1.0)
    batcher.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, timing = await batcher.submit(images(0.1))
    await batcher.stop()
    assert loop.time() - started < 0.5  # far below max_wait: it was not waited for
    assert timing.batch_images == 1


@pytest.mark.parametrize("elsewhere", [0, 1])
async def test_part_filled_batch_waits_only_for_requests_in_the_process(elsewhere: int) -> None:
    """Under load a part-filled batch waits up to max_wait for more, but only while the
    process holds a request not yet in it (``in_flight``): none, and it goes at once."""
    gate = threading.Event()
    model = RecordingModel(gate)
    in_process = 0
    batcher = Batcher(model, max_batch_size=32, max_wait_s=0.5, in_flight=lambda: in_process)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(images(0.5)))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(batcher.submit(images(0.1))) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, *queued)  # batches [1, 3]: the batcher is now under load
    loop = asyncio.get_running_loop()
    started = loop.time()
    in_process = 2 + elsewhere  # the two below, and one whose body is still arriving
    await asyncio.gather(*(batcher.submit(images(0.2)) for _ in range(2)))
    waited = loop.time() - started
    await batcher.stop()
    assert model.batches == [1, 3, 2]
    if elsewhere:
        assert waited >= 0.45  # it waited the window out for the request that never came
    else:
        assert waited < 0.25  # nobody else in the process: sent at once


async def test_stopping_during_a_batch_answers_it_and_the_queue_503() -> None:
    """A version retired after its grace, or a shutdown, stops the batcher while a batch is in
    the model: that batch's requests, and the queued ones, get 503 at once (they once waited
    forever: only the queue was failed)."""
    gate = threading.Event()
    batcher = Batcher(RecordingModel(gate), max_batch_size=2, max_wait_s=0.01, merge=True)
    batcher.start()
    futures = [asyncio.ensure_future(batcher.submit(images(0.1))) for _ in range(4)]
    await asyncio.sleep(0.05)  # the first batch (two) is in the model, two wait in the queue
    await asyncio.wait_for(batcher.stop(), 1)
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 1)
    gate.set()  # let the model thread finish
    assert all(isinstance(r, Unavailable) and r.status == 503 for r in results), results


async def test_failing_batch_fails_every_request() -> None:
    gate = threading.Event()
    batcher = Batcher(RecordingModel(gate, fail=True), max_batch_size=8, max_wait_s=0.01)
    batcher.start()
    futures = [asyncio.ensure_future(batcher.submit(images(0.1))) for _ in range(4)]
    await asyncio.sleep(0.02)
    gate.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    await batcher.stop()
    assert all(isinstance(r, ModelFailure) for r in results)


async def test_full_queue_rejects_at_once() -> None:
    gate = threading.Event()
    batcher = Batcher(RecordingModel(gate), max_batch_size=1, max_queue=2)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit(images(0.1)))
    await asyncio.sleep(0.02)  # taken by the loop: the model holds it
    queued = [asyncio.ensure_future(batcher.submit(images(0.2))) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.submit(images(0.3))
    gate.set()
    await asyncio.gather(running, *queued)
    await batcher.stop()


async def test_batching_off_runs_each_request_alone() -> None:
    gate = threading.Event()
    model = RecordingModel(gate)
    batcher = Batcher(model, max_batch_size=32, merge=False)
    batcher.start()
    futures = [asyncio.ensure_future(batcher.submit(images(0.1, 0.2))) for _ in range(5)]
    await asyncio.sleep(0.02)
    gate.set()
    await asyncio.gather(*futures)
    await batcher.stop()
    assert model.batches == [2, 2, 2, 2, 2]


async def test_request_that_does_not_fit_opens_the_next_batch() -> None:
    gate = threading.Event()
    model = RecordingModel(gate)
    batcher = Batcher(model, max_batch_size=4, max_wait_s=0.01)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(images(0.1)))
    await asyncio.sleep(0.02)
    sizes = [3, 3, 1]
    futures = [asyncio.ensure_future(batcher.submit(images(*[0.5] * n))) for n in sizes]
    await asyncio.sleep(0.02)
    gate.set()
    results = await asyncio.gather(first, *futures)
    await batcher.stop()
    assert model.batches == [1, 3, 4]
    assert [len(p) for p, _ in results] == [1, *sizes]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_invalid_settings_are_rejected(anyio_backend: str) -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(RecordingModel(), max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue"):
        Batcher(RecordingModel(), max_queue=0)


class ThreadRecordingModel(RecordingModel):
    """Also records which thread ran each call."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        super().__init__(gate, fail)
        self.threads: list[int] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.threads.append(threading.get_ident())
        return super().__call__(images)


async def test_lone_request_on_an_idle_model_runs_inline() -> None:
    model = ThreadRecordingModel()
    batcher = Batcher(model, inline=True)
    batcher.start()
    probabilities, timing = await batcher.submit(images(0.25))
    await batcher.stop()
    assert model.threads == [threading.get_ident()]  # the event loop's own thread
    assert probabilities[0, 0] == pytest.approx(0.25)
    assert timing.queue_s == 0 and timing.batch_images == 1


async def test_inline_is_skipped_when_the_server_is_busy() -> None:
    model = ThreadRecordingModel()
    batcher = Batcher(model, inline=True, in_flight=lambda: 2)
    batcher.start()
    await batcher.submit(images(0.25))
    await batcher.stop()
    assert model.threads and model.threads[0] != threading.get_ident()


async def test_requests_arriving_together_are_batched_not_inlined() -> None:
    """Concurrent submits see each other after the one yield and go to the queue."""
    in_flight = 0
    model = ThreadRecordingModel()
    batcher = Batcher(model, inline=True, max_wait_s=0.01, in_flight=lambda: in_flight)
    batcher.start()

    async def one(value: float) -> np.ndarray:
        nonlocal in_flight
        in_flight += 1
        try:
            return (await batcher.submit(images(value)))[0]
        finally:
            in_flight -= 1

    results = await asyncio.gather(*(one(i / 10) for i in range(8)))
    await batcher.stop()
    assert threading.get_ident() not in model.threads
    assert sum(model.batches) == 8 and max(model.batches) > 1
    assert [r[0, 0] for r in results] == pytest.approx([i / 10 for i in range(8)])


async def test_inline_model_failure_is_a_model_failure() -> None:
    batcher = Batcher(ThreadRecordingModel(fail=True), inline=True)
    batcher.start()
    with pytest.raises(ModelFailure):
        await batcher.submit(images(0.1))
    await batcher.stop()


async def test_admission_refuses_when_the_queue_would_miss_the_deadline() -> None:
    """With 64 requests queued and 10 ms batches of 32, the wait is ~30 ms: over a 20 ms
    deadline the next request is refused before it is queued; under 50 ms it is admitted. (The
    deadline is set once they are queued: a stall of the machine past 20 ms before the batcher
    gathered them would expire them all and leave no queue to judge.)"""
    gate = threading.Event()
    model = RecordingModel(gate)
    batcher = Batcher(model, max_batch_size=32, deadline_s=5, batch_s=0.01)
    batcher.start()
    waiting = [asyncio.ensure_future(batcher.submit(images(0.1))) for _ in range(65)]
    await asyncio.sleep(0.05)  # one batch running (held by the gate), 64 queued
    assert batcher.estimated_wait_s() == pytest.approx(0.03)
    batcher.deadline_s = 0.02
    with pytest.raises(Overloaded, match="deadline"):
        batcher.admit()
    batcher.deadline_s = 0.05
    batcher.admit()
    gate.set()
    await asyncio.gather(*waiting, return_exceptions=True)
    await batcher.stop()


async def test_requests_past_their_deadline_are_failed_not_run() -> None:
    """Requests that waited longer than the deadline behind a slow batch get Overloaded."""
    gate = threading.Event()
    model = RecordingModel(gate)
    batcher = Batcher(model, max_batch_size=4, deadline_s=0.05)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(images(0.5)))
    await asyncio.sleep(0.01)
    late = [asyncio.ensure_future(batcher.submit(images(0.1))) for _ in range(3)]
    await asyncio.sleep(0.1)  # past the deadline while the first batch is held
    gate.set()
    results = await asyncio.gather(first, *late, return_exceptions=True)
    await batcher.stop()
    assert not isinstance(results[0], Exception)
    assert all(isinstance(r, Overloaded) for r in results[1:])
    assert model.batches == [1] and batcher.dropped == 3


async def test_a_request_whose_client_left_is_dropped_from_its_batch() -> None:
    """gone() true when the batch forms: that request fails with ClientGone and is not run."""
    from service.errors import ClientGone

    gate = threading.Event()
    model = RecordingModel(gate)
    batcher = Batcher(model, max_batch_size=8)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(images(0.5)))
    await asyncio.sleep(0.01)
    stays = asyncio.ensure_future(batcher.submit(images(0.2)))
    leaves = asyncio.ensure_future(batcher.submit(images(0.3), gone=lambda: True))
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(first, stays, leaves, return_exceptions=True)
    await batcher.stop()
    assert isinstance(results[2], ClientGone) and results[2].status == 499
    assert model.batches == [1, 1]


def test_invalid_deadline_is_rejected() -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        Batcher(RecordingModel(), deadline_s=0)


async def test_a_request_larger_than_a_tuned_batch_runs_alone() -> None:
    """serve --tuned: a model tuned to batches of 2 still answers a 5-image request (the
    service's limit), as a batch of its own; others merge up to 2 around it."""
    gate = threading.Event()
    model = RecordingModel(gate)
    batcher = Batcher(model, max_batch_size=2, max_wait_s=0.01, max_request_images=8)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(images(0.1)))
    await asyncio.sleep(0.02)
    sizes = [1, 5, 1, 1]
    futures = [asyncio.ensure_future(batcher.submit(images(*[0.5] * n))) for n in sizes]
    await asyncio.sleep(0.02)
    gate.set()
    results = await asyncio.gather(first, *futures)
    with pytest.raises(ValueError, match="max_request_images 8"):
        await batcher.submit(images(*[0.5] * 9))
    await batcher.stop()
    assert model.batches == [1, 1, 5, 2]
    assert [len(p) for p, _ in results] == [1, *sizes]
