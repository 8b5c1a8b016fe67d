"""Dynamic batching: merge concurrent requests for one variant into one model call.

One asyncio task per variant takes requests from a bounded queue. A batch starts with the
oldest waiting request and takes every other request already queued, up to ``max_batch_size``
images. Only when the last batch held several requests (a sign of concurrent load) does a
part-filled batch wait, up to ``max_wait_s``, for more; a lone request at low load is sent at
once, so batching never adds its wait when there is nothing to merge. Given an ``in_flight``
count of the process's requests, it waits only while a request not yet in the batch is in the
process: a front end that holds 16 of 32 clients never fills a batch of 32, and used to wait out
the whole window for each one (docs/benchmarks.md, section L). The model runs in a worker
thread, off the event loop; its output is split back to the requests in order. If the call
fails, every request in the batch fails with it.

Load shedding (see ``service.admission`` for the server-wide part): with a ``deadline_s``, a
request is refused at once (503, before its body is read) when the batches ahead of it would
take longer than the deadline, by a running average of batch time; and a request still waiting
when its deadline passes is failed instead of run. A request whose client has gone (``gone()``
says so) is dropped from its batch: nobody would read the answer.

The inline path: with ``inline`` on (for models whose batch-1 call takes well under a
millisecond), a request that finds the model idle and the server otherwise quiet runs on the
event loop itself, skipping the queue, the batcher's wake-up and the thread hop, which together
cost more than such a model. Before deciding, the request yields to the loop once, so requests
that arrived with it get to show themselves (the ``in_flight`` count then says so) and go to the
queue to be batched instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.errors import ClientGone, ModelFailure, Overloaded, Unavailable

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]
# Weight of the newest batch in the running average of batch time (admission's wait estimate).
BATCH_TIME_WEIGHT = 0.2


def never() -> bool:
    """The default "has the client gone?": no."""
    return False


@dataclass(frozen=True)
class Timing:
    """Where one request's server time went, in seconds, and the batch it rode in."""

    queue_s: float
    model_s: float
    batch_images: int


class ModelQueue(Protocol):
    """What the handlers use of a model's batcher: this one, or a front end's stand-in for
    the executor's (``service.remote.RemoteBatcher``)."""

    inline: bool

    def admit(self) -> None:
        """Raise Overloaded (503) if a request queued now would miss its deadline."""
        ...

    async def submit(
        self, images: np.ndarray, gone: Callable[[], bool] = ...
    ) -> tuple[np.ndarray, Timing]:
        """``images`` (N, 28, 28, 1) through the model: their (N, 10) probabilities, timing."""
        ...

    async def stop(self) -> None:
        """Stop; fail whatever is still waiting."""
        ...


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future[tuple[np.ndarray, Timing]]
    enqueued: float
    gone: Callable[[], bool] = never


class Batcher:
    """A queue and a loop that feeds one model in batches."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.001,
        max_queue: int = 512,
        merge: bool = True,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
        inline: bool = False,
        in_flight: Callable[[], int] | None = None,
        deadline_s: float | None = None,
        batch_s: float = 0.0,
        max_request_images: int | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0 (or None), got {deadline_s}")
        self._predict = predict
        self.max_batch_size = max_batch_size
        # One request may hold more images than a merged batch (a model tuned to small
        # batches, serve --tuned): it then runs alone, as a batch of its own.
        self.max_request_images = max(max_request_images or max_batch_size, max_batch_size)
        self.max_wait_s = max_wait_s
        self.merge = merge
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._on_batch = on_batch
        self._task: asyncio.Task[None] | None = None
        self._last_batch_requests = 0
        self._carry: _Pending | None = None
        self._in_hand: list[_Pending] = []  # the batch being gathered or run (stop fails it)
        self._running = False  # a batch is being gathered or run
        self.inline = inline
        self._in_flight = in_flight
        self.deadline_s = deadline_s
        self.batch_s = batch_s  # running average of a batch's model time (seed: warm-up's)
        self.dropped = 0  # requests dropped from their batch: client gone or deadline passed

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize()

    def estimated_wait_s(self) -> float:
        """How long a request queued now would wait: the batches ahead of it, at average time."""
        batches_ahead = -(-self._queue.qsize() // self.max_batch_size) + self._running
        return batches_ahead * self.batch_s

    def admit(self) -> None:
        """Raise Overloaded (503) if a request queued now would miss its deadline."""
        if self._queue.full():
            raise Overloaded(
                f"{self._queue.maxsize} requests are already waiting for this model; retry shortly"
            )
        if self.deadline_s is not None and (wait := self.estimated_wait_s()) > self.deadline_s:
            raise Overloaded(
                f"the model's queue would take ~{wait * 1000:.0f} ms, over the "
                f"{self.deadline_s * 1000:.0f} ms deadline; retry shortly"
            )

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Stop the loop and fail whatever it still holds with 503 (the model is going: a
        shutdown, or a version retired after its grace), the batch in hand included."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        leftovers = [*self._in_hand, *([self._carry] if self._carry is not None else [])]
        self._in_hand = []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for pending in leftovers:
            if not pending.future.done():
                pending.future.set_exception(Unavailable("this model stopped serving; retry"))
        if self._own_executor:
            self._executor.shutdown(wait=False)

    @property
    def running(self) -> bool:
        """Whether the batching loop runs (started, not stopped)."""
        return self._task is not None

    @property
    def idle(self) -> bool:
        """Nothing queued, carried over or running."""
        return not self._running and self._carry is None and self._queue.empty()

    async def submit(
        self, images: np.ndarray, gone: Callable[[], bool] = never
    ) -> tuple[np.ndarray, Timing]:
        """Queue ``images`` (N, 28, 28, 1) and wait for their (N, 10) probabilities.

        ``gone()`` tells whether the client has disconnected (then the request is dropped).
        """
        if len(images) > self.max_request_images:
            raise ValueError(
                f"{len(images)} images exceed max_request_images {self.max_request_images}"
            )
        if self.inline and self.idle and not self._busy():
            await asyncio.sleep(0)  # let requests that arrived together reach the queue first
            if self.idle and not self._busy():
                return self._run_inline(images)
        future: asyncio.Future[tuple[np.ndarray, Timing]] = (
            asyncio.get_running_loop().create_future()
        )
        try:
            self._queue.put_nowait(_Pending(images, future, time.perf_counter(), gone))
        except asyncio.QueueFull:
            raise Overloaded(
                f"{self._queue.maxsize} requests are already waiting for this model; retry shortly"
            ) from None
        return await future

    def run_now(self, images: np.ndarray) -> tuple[np.ndarray, Timing] | None:
        """The inline path without its yield, for a caller that already knows nothing else
        arrived with this request (the executor, which sees every request of a read at once):
        the answer now if the model is idle and inline, else None (then ``submit``)."""
        if self.inline and self.idle and not self._busy():
            return self._run_inline(images)
        return None

    def _run_inline(self, images: np.ndarray) -> tuple[np.ndarray, Timing]:
        """One request's model call on the event loop (see the module docstring)."""
        started = time.perf_counter()
        try:
            probabilities = self._predict(images)
        except Exception as err:
            log.exception("model call failed for an inline request of %d images", len(images))
            raise ModelFailure("the model failed on this batch") from err
        if self._on_batch is not None:
            self._on_batch(len(images))
        self._last_batch_requests = 1
        return probabilities, Timing(0.0, time.perf_counter() - started, len(images))

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            try:
                if batch:
                    await self._execute(batch)
            finally:
                self._running = False
            self._in_hand = []  # answered (not when cancelled: stop() fails it)

    async def _gather(self) -> list[_Pending]:
        """The next batch: the oldest request plus whatever fits and is (or soon is) waiting."""
        first = self._carry if self._carry is not None else await self._queue.get()
        self._running = True  # from here until the batch is done, the model is not idle
        self._carry = None
        batch, size = [first], len(first.images)
        self._in_hand = batch  # the same list, as it grows
        under_load = self._last_batch_requests > 1 or not self._queue.empty()
        deadline = time.perf_counter() + self.max_wait_s
        while self.merge and size < self.max_batch_size:
            if not self._queue.empty():
                nxt = self._queue.get_nowait()
            elif (
                under_load
                and self._more_coming(len(batch))
                and (remaining := deadline - time.perf_counter()) > 0
            ):
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                break
            if size + len(nxt.images) > self.max_batch_size:
                self._carry = nxt  # too big for this batch: it opens the next one
                break
            batch.append(nxt)
            size += len(nxt.images)
        self._last_batch_requests = len(batch)
        return [p for p in batch if self._still_wanted(p)]

    def _busy(self) -> bool:
        """Whether another request is in the process (then a lone request batches instead)."""
        return self._in_flight is not None and self._in_flight() > 1

    def _more_coming(self, batched: int) -> bool:
        """Whether a request not yet in the batch is in the process (its body still arriving,
        or its answer still going out, whose client may send again): only then is waiting
        for more worth it. Without an ``in_flight`` count, always."""
        return self._in_flight is None or self._in_flight() > batched

    def _still_wanted(self, pending: _Pending) -> bool:
        """False (and the request failed) if its client left or its deadline passed."""
        if pending.future.cancelled():
            return False
        if pending.gone():
            pending.future.set_exception(ClientGone("the client closed the connection"))
        elif (
            self.deadline_s is not None
            and (waited := time.perf_counter() - pending.enqueued) > self.deadline_s
        ):
            pending.future.set_exception(
                Overloaded(
                    f"waited {waited * 1000:.0f} ms for the model, over the "
                    f"{self.deadline_s * 1000:.0f} ms deadline; retry shortly"
                )
            )
        else:
            return True
        self.dropped += 1
        return False

    async def _execute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        images = batch[0].images if len(batch) == 1 else np.concatenate([p.images for p in batch])
        loop = asyncio.get_running_loop()
        try:
            probabilities = await loop.run_in_executor(self._executor, self._predict, images)
            if probabilities.shape[0] != images.shape[0]:
                raise RuntimeError(
                    f"model returned {probabilities.shape[0]} rows for {images.shape[0]} images"
                )
        except Exception:
            log.exception("model call failed for a batch of %d images", len(images))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(ModelFailure("the model failed on this batch"))
            return
        model_s = time.perf_counter() - started
        self.batch_s += BATCH_TIME_WEIGHT * (model_s - self.batch_s)
        if self._on_batch is not None:
            self._on_batch(len(images))
        offset = 0
        for pending in batch:
            n = len(pending.images)
            if not pending.future.done():
                timing = Timing(started - pending.enqueued, model_s, len(images))
                pending.future.set_result((probabilities[offset : offset + n], timing))
            offset += n
