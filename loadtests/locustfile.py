"""Locust file: closed-loop users POSTing real MNIST test digits to one variant.

Usable on its own, web UI included::

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --variant depthwise

Options of its own (also in ``locust --help``): ``--variant`` (or a model name such as
``depthwise@onnx``), ``--mode json|png``, ``--mnist`` (default ``$MNIST_DATA``), ``--warmup``
seconds to discard, ``--samples-out`` file.

Locust's statistics round response times over 2 ms to whole milliseconds, so a 0.9 ms and a 1.4 ms
median would both read "1 ms". Every request's exact time is therefore also kept here, from
Locust's request event, together with whether the predicted digit matched the label and the
server's own queue and model time (from ``Server-Timing``). With ``--samples-out`` they are
written as ``.npz`` when Locust quits; in distributed mode the workers send theirs to the master.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import time
from typing import Any

import numpy as np
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests.samples import Recorder

PAYLOADS = 512  # distinct test digits cycled through
SERVER_TIMING = re.compile(r"(\w+);dur=([\d.]+)")


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """Options of this Locust file."""
    parser.add_argument(
        "--variant",
        default="depthwise",
        help="Variant, or model name variant@runtime (depthwise@onnx), to load.",
    )
    parser.add_argument("--mode", choices=["json", "png"], default="json", help="Payload kind.")
    parser.add_argument(
        "--mnist",
        default=os.environ.get("MNIST_DATA", ""),
        help="MNIST .npz or IDX folder (default: $MNIST_DATA).",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="Seconds at the start whose requests are not recorded.",
    )
    parser.add_argument("--samples-out", default="", help="Write exact per-request samples here.")


RECORDER = Recorder()


class Payloads:
    """Pre-encoded request bodies of real MNIST test digits, with their labels."""

    def __init__(self, mnist_path: str, mode: str, count: int = PAYLOADS) -> None:
        from training.data import load_mnist

        data = load_mnist(mnist_path or None)
        rng = np.random.default_rng(0)
        picks = rng.choice(len(data.x_test), size=count, replace=False)
        self.labels = [int(data.y_test[i]) for i in picks]
        if mode == "png":
            from PIL import Image

            self.content_type = "image/png"
            self.bodies = []
            for i in picks:
                buffer = io.BytesIO()
                Image.fromarray(data.x_test[i]).save(buffer, format="PNG")
                self.bodies.append(buffer.getvalue())
        else:
            self.content_type = "application/json"
            self.bodies = [
                json.dumps({"image": np.round(data.x_test[i] / 255.0, 4).tolist()}).encode()
                for i in picks
            ]


PAYLOAD_CACHE: dict[tuple[str, str], Payloads] = {}


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    """Open the recording window after the warm-up."""
    RECORDER.start(environment.parsed_options.warmup if environment.parsed_options else 0.0)


@events.report_to_master.add_listener
def on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    """Workers: ship the samples gathered since the last report."""
    data["mnist_samples"] = RECORDER.drain()


@events.worker_report.add_listener
def on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    """Master: gather the workers' samples."""
    if "mnist_samples" in data:
        RECORDER.merge(data["mnist_samples"])


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    """Master or single process: write the samples."""
    options = environment.parsed_options
    if options and options.samples_out and not isinstance(environment.runner, WorkerRunner):
        RECORDER.save(options.samples_out)


class MnistUser(FastHttpUser):
    """Sends one digit, waits for the answer, checks it, and sends the next (closed loop)."""

    wait_time = constant(0)
    # Keep-alive connections, like any real client pool; one per user.
    concurrency = 1

    def on_start(self) -> None:
        """Pick this user's variant and payloads (encoded once per process)."""
        options = self.environment.parsed_options
        self.variant = options.variant if options else "depthwise"
        mode = options.mode if options else "json"
        key = (options.mnist if options else "", mode)
        if key not in PAYLOAD_CACHE:
            PAYLOAD_CACHE[key] = Payloads(key[0], mode)
        self.payloads = PAYLOAD_CACHE[key]
        self.headers = {"content-type": self.payloads.content_type}
        self.next_index = random.randrange(PAYLOADS)

    @task
    def predict(self) -> None:
        """POST one digit and check status, shape and label."""
        i = self.next_index
        self.next_index = (i + 1) % PAYLOADS
        started = time.perf_counter()
        with self.client.post(
            f"/predict/{self.variant}",
            data=self.payloads.bodies[i],  # type: ignore[arg-type]  # bytes are sent as-is
            headers=self.headers,
            name=f"/predict/{self.variant}",
            catch_response=True,
        ) as response:
            latency_ms = (time.perf_counter() - started) * 1000
            ok, correct, timing = False, False, {}
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            else:
                try:
                    predictions = response.json()["predictions"]
                    ok = len(predictions) == 1 and len(predictions[0]["probabilities"]) == 10
                    correct = ok and predictions[0]["digit"] == self.payloads.labels[i]
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    response.failure("malformed prediction")
                timing = dict(SERVER_TIMING.findall(response.headers.get("server-timing", "")))
            RECORDER.add(
                latency_ms,
                ok,
                correct,
                float(timing.get("queue", "nan")),
                float(timing.get("model", "nan")),
            )


__all__ = ["RECORDER", "MnistUser"]
