"""The requests a load generator sends: real MNIST test digits, pre-encoded once per target.

The same 512 test digits, in the same order, in every protocol, so that every target answers
the same questions; MNIST is read once per process. Kept apart from the Locust file (which
gevent-patches the process on import), so that it can be used and tested on its own.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from loadtests.protocols import Protocol, encode
from loadtests.shaping import TensorLayout

if TYPE_CHECKING:
    from training.data import Mnist

PAYLOADS = 512  # distinct test digits cycled through


class Payloads:
    """Pre-encoded requests for real MNIST test digits in one protocol, with their labels."""

    def __init__(
        self, mnist_path: str, protocol: Protocol, mode: str, model: str, layout: TensorLayout
    ) -> None:
        data = mnist_data(mnist_path)
        rng = np.random.default_rng(0)  # the same digits, in the same order, in every protocol
        picks = rng.choice(len(data.x_test), size=PAYLOADS, replace=False)
        self.layout = layout
        self.labels = [int(data.y_test[i]) for i in picks]
        self.requests = [encode(protocol, mode, model, data.x_test[i], layout) for i in picks]


@functools.cache
def mnist_data(mnist_path: str) -> Mnist:
    """MNIST, read once per process (each target's payloads come from the same digits)."""
    from training.data import load_mnist

    return load_mnist(mnist_path or None)
