"""Locust file: closed-loop users sending real MNIST test digits to one model, in one protocol.

Usable on its own, web UI included, against ours or any server speaking the protocol::

    locust -f loadtests/locustfile.py MnistUser --host http://127.0.0.1:8000 --variant depthwise
    locust -f loadtests/locustfile.py MnistUser --host http://127.0.0.1:8000 --protocol kserve-http
    locust -f loadtests/locustfile.py MnistGrpcUser --host grpc://127.0.0.1:8001 \
        --protocol kserve-grpc --variant depthwise@onnx

Options of its own (also in ``locust --help``): ``--variant`` (or a model name such as
``depthwise@onnx``), ``--protocol``, ``--mode json|png`` (png: native only), ``--mnist``
(default ``$MNIST_DATA``), ``--warmup`` seconds to discard, ``--samples-out`` file, ``--layout``
(how to shape the tensors: the load-test runner reads it from the model's metadata once and
passes it; run on its own, the Locust file reads the metadata itself, see loadtests/shaping.py).

Every request is recorded with its status (HTTP status, 0 when no answer came; gRPC code; -1
when the task itself raised, a fault here) and, for a failed one, the server's message (the
first per status is kept).

``mnist-serve loadtest`` drives several targets in one run instead: ``--schedule FILE`` (a
:class:`loadtests.schedule.Schedule`) switches every user from target to target window by
window, and each sample records its window. With HTTP and gRPC targets in one schedule, both
user classes run (``--users`` twice the concurrency, ``--grpc-host`` for the gRPC one) and the
class that does not speak the current window's protocol waits.

Locust's statistics round response times over 2 ms to whole milliseconds, so a 0.9 ms and a 1.4 ms
median would both read "1 ms". Every request's exact time is therefore also kept here, from
Locust's request event, together with whether the predicted digit matched the label and the
server's own queue and model time (from ``Server-Timing``, where the server sends it). With
``--samples-out`` they are written as ``.npz`` when Locust quits; in distributed mode the
workers send theirs to the master.
"""

from __future__ import annotations

import logging
import random
import re
import time
from pathlib import Path
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import FastHttpUser, User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner
from pydantic import TypeAdapter

from loadtests.locust_options import add_options
from loadtests.payloads import PAYLOADS, Payloads
from loadtests.protocols import (
    GENERATOR_ERROR,
    HEADER_LENGTH,
    AnswerError,
    Protocol,
    decode,
    decode_grpc,
    error_message,
)
from loadtests.samples import Recorder
from loadtests.schedule import Schedule, Slot
from loadtests.shaping import LayoutError, TensorLayout, fetch_layout

# gRPC must cooperate with gevent, whose greenlets run Locust's users.
grpc_gevent.init_gevent()
from tritonclient.grpc import service_pb2 as pb  # noqa: E402  (after init_gevent)
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402

SERVER_TIMING = re.compile(r"(\w+);dur=([\d.]+)")


events.init_command_line_parser.add_listener(add_options)

RECORDER = Recorder()
# Idle users (the run is over, or the window's protocol is another class's) re-check this often.
IDLE_S = 0.05


PAYLOAD_CACHE: dict[tuple[str, Protocol, str, str, TensorLayout], Payloads] = {}


def layout_for(environment: Environment, protocol: Protocol, model: str) -> TensorLayout:
    """The --layout given (the load-test runner reads it once for all steps), else the one the
    model's metadata on --host says (Locust run on its own), else ours (native)."""
    options = environment.parsed_options
    if options and options.layout:
        return TypeAdapter(TensorLayout).validate_json(options.layout)
    if protocol is Protocol.NATIVE:
        return TensorLayout.ours(model)
    host = environment.host or ""
    grpc_target = host.removeprefix("grpc://").removeprefix("http://")
    return fetch_layout(protocol, host, grpc_target, model)


def payloads_for(environment: Environment) -> tuple[Payloads, Protocol]:
    """This process's payloads (encoded once) and the protocol, from the command line."""
    options = environment.parsed_options
    protocol = Protocol(options.protocol) if options else Protocol.NATIVE
    model = options.variant if options else "depthwise"
    try:
        layout = layout_for(environment, protocol, model)
    except LayoutError as err:
        logging.error("%s", err)
        environment.process_exit_code = 1
        if environment.runner is not None:
            environment.runner.quit()
        raise StopUser() from err
    key = (
        options.mnist if options else "",
        protocol,
        options.mode if options else "json",
        model,
        layout,
    )
    if key not in PAYLOAD_CACHE:
        PAYLOAD_CACHE[key] = Payloads(*key)
    return PAYLOAD_CACHE[key], protocol


SCHEDULES: dict[str, Schedule] = {}


def pick(environment: Environment, over_http: bool) -> tuple[Payloads, Protocol, int] | None:
    """What to send now: the payloads, protocol and window (-1: not counted). Without a
    schedule, the command line's variant and protocol in window 0. None (after a short
    sleep) when this user class has nothing to send at the moment."""
    options = environment.parsed_options
    if not options or not options.schedule:
        payloads, protocol = payloads_for(environment)
        return payloads, protocol, 0
    if options.schedule not in SCHEDULES:
        SCHEDULES[options.schedule] = Schedule.load(Path(options.schedule))
    schedule = SCHEDULES[options.schedule]
    elapsed = time.time() - RECORDER.window_start
    target, window, counted = schedule.at(elapsed)
    slot = schedule.targets[target] if target >= 0 else None
    if slot is None or Protocol(slot.protocol).over_http != over_http:
        gevent.sleep(min(IDLE_S, schedule.next_switch(elapsed)))
        return None
    payloads = slot_payloads(environment, slot)
    return payloads, Protocol(slot.protocol), window if counted else -1


def unpicked(environment: Environment) -> int:
    """The window of a user whose task has not picked one yet: -1 (not counted) with a
    schedule, else 0 (there is only one)."""
    options = environment.parsed_options
    return -1 if options and options.schedule else 0


SLOT_PAYLOADS: dict[Slot, Payloads] = {}


def slot_payloads(environment: Environment, slot: Slot) -> Payloads:
    """A schedule slot's payloads, encoded once, shaped by the layout the runner read."""
    if slot not in SLOT_PAYLOADS:
        options = environment.parsed_options
        protocol = Protocol(slot.protocol)
        layout = (
            TypeAdapter(TensorLayout).validate_json(slot.layout)
            if slot.layout
            else TensorLayout.ours(slot.model)
        )
        mnist, mode = (options.mnist, options.mode) if options else ("", "json")
        SLOT_PAYLOADS[slot] = Payloads(mnist, protocol, mode, slot.model, layout)
    return SLOT_PAYLOADS[slot]


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    """Encode every scheduled target's payloads before the clock starts (not in the master,
    which sends nothing): about half a second each (MNIST read, 512 digits encoded), during
    which no user of this process sends, so built on first use they ate into the first
    windows and the warm-up of the targets after the first."""
    options = environment.parsed_options
    if not (options and options.schedule) or isinstance(environment.runner, MasterRunner):
        return
    if options.schedule not in SCHEDULES:
        SCHEDULES[options.schedule] = Schedule.load(Path(options.schedule))
    for slot in SCHEDULES[options.schedule].targets:
        slot_payloads(environment, slot)


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    """Open the recording window after the warm-up. The master notes how many workers it
    must hear last from; a worker's reports are not its last until it stops again."""
    options = environment.parsed_options
    RECORDER.start(options.warmup if options else 0.0)
    RECORDER.final = False
    if isinstance(environment.runner, MasterRunner):
        RECORDER.workers_expected = environment.runner.worker_count
    if options and options.schedule and not isinstance(environment.runner, WorkerRunner):
        end = RECORDER.window_start + Schedule.load(Path(options.schedule)).end_s
        gevent.spawn(quit_at, environment, end)


def quit_at(environment: Environment, end: float) -> None:
    """Quit the run at ``end`` (wall clock): when its schedule is over. Locust's --run-time
    timer counts from the event loop's cached clock, which Locust's own start-up leaves 1-2 s
    stale, so it fired that much early and cut the last window short (the runner's
    --run-time is now only a safety net)."""
    while (left := end - time.time()) > 0:
        gevent.sleep(min(left, IDLE_S))
    if environment.runner is not None:
        environment.runner.quit()


@events.report_to_master.add_listener
def on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    """Workers: ship the samples gathered since the last report."""
    data["mnist_samples"] = RECORDER.drain()


@events.worker_report.add_listener
def on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    """Master: gather the workers' samples."""
    if "mnist_samples" in data:
        RECORDER.merge(data["mnist_samples"], client_id)


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_: Any) -> None:
    """Workers: the reports from now on are the last (the master counts them)."""
    if isinstance(environment.runner, WorkerRunner):
        RECORDER.final = True


@events.user_error.add_listener
def on_user_error(user_instance: Any, exception: Exception, **_: Any) -> None:
    """A task that raised (a fault here, not an answer of the server's; Locust logs it and
    goes on, and the runner's --exit-code-on-error 0 keeps its exit code 0): a failed request
    of the window its task picked (-1, not counted, before it picked one), with the exception
    as its message, so that the step says why it failed rather than "no request finished"."""
    user = getattr(user_instance, "user", user_instance)  # Locust passes the user's TaskSet
    window = getattr(user, "window", 0)  # the window its task picked (0: no schedule)
    message = f"{type(exception).__name__}: {exception}"
    RECORDER.add(0.0, False, False, np.nan, np.nan, GENERATOR_ERROR, message, window)


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    """Master or single process: write the samples."""
    options = environment.parsed_options
    if options and options.samples_out and not isinstance(environment.runner, WorkerRunner):
        RECORDER.save(options.samples_out)


class MnistUser(FastHttpUser):
    """Sends one digit over HTTP, waits for the answer, checks it, sends the next (closed loop).

    Speaks ``--protocol native`` (our ``/predict``), ``tfserving`` or ``kserve-http``.
    """

    wait_time = constant(0)
    # Keep-alive connections, like any real client pool; one per user.
    concurrency = 1

    def on_start(self) -> None:
        """Check the protocol is this class's; a random first digit."""
        options = self.environment.parsed_options
        if not (options and options.schedule):
            _, protocol = payloads_for(self.environment)
            if not protocol.over_http:
                raise StopUser()  # the gRPC protocol has its own user class, MnistGrpcUser
        self.next_index = random.randrange(PAYLOADS)
        scheduled = bool(
            self.environment.parsed_options and self.environment.parsed_options.schedule
        )
        self.window = -1 if scheduled else 0  # until a task picks one (on_user_error)

    @task
    def predict(self) -> None:
        """Send one digit and check status, shape and label."""
        picked = pick(self.environment, over_http=True)
        if picked is None:
            return
        payloads, protocol, window = picked
        self.window = window  # where a fault in the rest of this task is counted
        i = self.next_index
        self.next_index = (i + 1) % PAYLOADS
        request = payloads.requests[i]
        started = time.perf_counter()
        with self.client.post(
            request.path,
            data=request.body,  # type: ignore[arg-type]  # bytes are sent as-is
            headers=request.headers,
            name=request.path,
            catch_response=True,
        ) as response:
            latency_ms = (time.perf_counter() - started) * 1000
            ok, correct, timing, error = False, False, {}, ""
            status = response.status_code or 0  # 0: no answer (the connection failed)
            if status != 200:
                said = response.content if status else str(response.error or "")
                error = error_message(said)
                response.failure(f"HTTP {status}: {error}" if status else f"no answer: {error}")
            else:
                try:
                    header = response.headers.get(HEADER_LENGTH)
                    row = decode(protocol, response.content or b"", header, payloads.layout)
                    ok, correct = True, int(row.argmax()) == payloads.labels[i]
                except AnswerError as err:
                    error = str(err)
                    response.failure(error)
                timing = dict(SERVER_TIMING.findall(response.headers.get("server-timing", "")))
            RECORDER.add(
                latency_ms,
                ok,
                correct,
                float(timing.get("queue", "nan")),
                float(timing.get("model", "nan")),
                status,
                error,
                window,
            )


class MnistGrpcUser(User):
    """The same closed loop over KServe V2 gRPC (``--protocol kserve-grpc``).

    Locust's pattern for clients other than HTTP: a User of its own that times each call and
    fires Locust's request event. ``--host`` is the gRPC address, ``grpc://host:port``.
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        """Open this user's channel (gevent-friendly, see init_gevent above)."""
        options = self.environment.parsed_options
        if not (options and options.schedule):
            _, protocol = payloads_for(self.environment)
            if protocol is not Protocol.KSERVE_GRPC:
                raise StopUser()
        host = (options.grpc_host if options else "") or self.host or ""
        target = host.removeprefix("grpc://").removeprefix("http://")
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.next_index = random.randrange(PAYLOADS)
        scheduled = bool(
            self.environment.parsed_options and self.environment.parsed_options.schedule
        )
        self.window = -1 if scheduled else 0  # until a task picks one (on_user_error)

    def on_stop(self) -> None:
        """Close the channel."""
        self.channel.close()

    @task
    def predict(self) -> None:
        """ModelInfer for one digit; check shape and label."""
        picked = pick(self.environment, over_http=False)
        if picked is None:
            return
        payloads, _, window = picked
        self.window = window  # where a fault in the rest of this task is counted
        i = self.next_index
        self.next_index = (i + 1) % PAYLOADS
        request = payloads.requests[i]
        layout = payloads.layout
        call = pb.ModelInferRequest(
            model_name=request.path,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=layout.input, datatype=layout.datatype, shape=list(layout.shape)
                )
            ],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=layout.output)],
            raw_input_contents=[request.body],
        )
        started = time.perf_counter()
        error: Exception | None = None
        ok = correct = False
        status, message = 0, ""  # gRPC OK
        try:
            answer = self.stub.ModelInfer(call, timeout=30)
            row = decode_grpc(answer, layout)
            ok, correct = True, int(row.argmax()) == payloads.labels[i]
        except grpc.RpcError as err:
            error = err
            status, message = err.code().value[0], error_message(err.details())
        except (AnswerError, ValueError) as err:
            error, message = err, str(err)
        latency_ms = (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"ModelInfer {request.path}",
            response_time=latency_ms,
            response_length=0,
            exception=error,
            context={},
        )
        RECORDER.add(latency_ms, ok, correct, float("nan"), float("nan"), status, message, window)


__all__ = ["RECORDER", "MnistGrpcUser", "MnistUser"]
