"""What a report row, a history row and a claim are about: a :class:`Label`, typed; and a
:class:`Step`, one run of a label at one concurrency.

A label names one target of a load test: a model (a variant, on a runtime or on the server's
default one) driven over one protocol. It renders once, by ``str()``
(``depthwise@onnx``, or ``depthwise@onnx via tfserving`` when the run swept several
protocols); nothing reads the rendering back.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtests.protocols import Protocol
from modelrepo.layout import ModelName


@dataclass(frozen=True)
class Label:
    """One target of a load test: a variant, its runtime (None: the server's default) and the
    protocol it was driven over; ``show_protocol`` when the run swept several protocols."""

    variant: str
    runtime: str | None = None
    protocol: Protocol = Protocol.NATIVE
    show_protocol: bool = False

    @property
    def model(self) -> ModelName:
        """The model name the requests address."""
        return ModelName(self.variant, self.runtime)

    def __str__(self) -> str:
        model = str(self.model)
        return f"{model} via {self.protocol}" if self.show_protocol else model


@dataclass(frozen=True)
class Step:
    """One Locust run: one target (a model over a protocol) at one concurrency, one repeat."""

    target: Label
    concurrency: int
    repeat: int

    @property
    def model(self) -> str:
        """The model name the requests address (variant or variant@runtime)."""
        return str(self.target.model)

    @property
    def protocol(self) -> Protocol:
        """The protocol the requests speak."""
        return self.target.protocol

    @property
    def key(self) -> str:
        """A file-name-safe identifier."""
        return f"{self.model.replace('@', '_')}-{self.protocol}-c{self.concurrency}-r{self.repeat}"
