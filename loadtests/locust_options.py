"""The Locust file's own command-line options (also in ``locust --help``), apart from the Locust
file so that this can be read without importing Locust (which gevent-patches the process)."""

from __future__ import annotations

import os
from typing import Any

from loadtests.protocols import PROTOCOLS


def add_options(parser: Any) -> None:
    """Options of this Locust file."""
    parser.add_argument(
        "--variant",
        default="depthwise",
        help="Variant, or model name variant@runtime (depthwise@onnx), to load.",
    )
    parser.add_argument("--mode", choices=["json", "png"], default="json", help="Payload kind.")
    parser.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default="native",
        help="native (/predict), tfserving (TF Serving REST), kserve-http (V2, binary tensors) "
        "or kserve-grpc (V2 gRPC: run the MnistGrpcUser class, --host grpc://host:port).",
    )
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
    parser.add_argument(
        "--layout",
        default="",
        help="How to shape the tensor protocols' digits (JSON of loadtests.shaping.TensorLayout). "
        "Default: read from the model's metadata on the --host.",
    )
    parser.add_argument(
        "--schedule",
        default="",
        help="A window schedule (JSON, written by mnist-serve loadtest): drive its targets in "
        "turn instead of --variant/--protocol.",
    )
    parser.add_argument(
        "--grpc-host",
        default="",
        help="host:port of the gRPC endpoint when a schedule mixes HTTP and gRPC targets.",
    )
