"""A mosec server for the peer benchmark (scripts/bench_peers.py): ONNX Runtime on the batch.

JSON in, ``{"image": [784 floats in 0-1]}`` (a 28x28 nested list works too); JSON out, the
probabilities in the same shape as mnist-serve's answer. One worker, dynamic batching of up to
32 requests waiting at most 1 ms (the service's defaults), one intra-op thread (as the
service's ONNX Runtime). Needs the ``peers`` extra: ``pip install -e '.[peers]'``.

Run: ``python scripts/mosec_server.py --onnx models/depthwise/1/model.onnx --port 8002
--address 127.0.0.1`` (mosec reads its own flags, ``--port``, ``--address``, ``--timeout``
in ms, from the same command line).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import onnxruntime as ort
from mosec import Server, Worker

from modelrepo.contract import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME

MAX_BATCH_SIZE = 32
MAX_WAIT_MS = 1  # mosec's max_wait_time is in milliseconds
ONNX_ENV = "PEER_ONNX_PATH"  # how the model's path reaches the worker processes mosec spawns


class OnnxDigits(Worker):
    """A batch of JSON images through one ONNX Runtime session."""

    def __init__(self) -> None:
        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.environ[ONNX_ENV], options, providers=["CPUExecutionProvider"]
        )

    def forward(self, data: list[Any]) -> list[Any]:
        """One model call for the whole batch; one answer per request."""
        images = np.asarray([item["image"] for item in data], dtype=np.float32)
        rows = self.session.run([OUTPUT_NAME], {INPUT_NAME: images.reshape(-1, *INPUT_SHAPE)})[0]
        return [
            {"predictions": [{"digit": int(row.argmax()), "probabilities": row.tolist()}]}
            for row in rows
        ]


def main() -> None:
    """Serve ``--onnx`` on mosec's ``/inference``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, help="the model.onnx to serve")
    args, _ = parser.parse_known_args()  # the rest are mosec's flags
    os.environ[ONNX_ENV] = str(args.onnx)
    server = Server()
    server.append_worker(
        OnnxDigits, num=1, max_batch_size=MAX_BATCH_SIZE, max_wait_time=MAX_WAIT_MS
    )
    server.run()


if __name__ == "__main__":
    main()
