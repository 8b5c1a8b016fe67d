"""Response shapes, for the OpenAPI docs and the ``/variants`` endpoints.

The predict handler writes its JSON directly (validating a response model costs more than the
model call at batch 1); these classes document that JSON and the tests hold the two together.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    """The answer for one image."""

    digit: int = Field(ge=0, le=9, examples=[7])
    confidence: float = Field(ge=0, le=1, examples=[0.998])
    probabilities: list[float] = Field(min_length=10, max_length=10)


class ServerTiming(BaseModel):
    """Where the request's server time went (also sent as the ``Server-Timing`` header)."""

    queue_ms: float = Field(description="Waiting for the batch to start.")
    model_ms: float = Field(description="The model call that served this request's batch.")
    batch_images: int = Field(description="Images in that model call (several requests' worth).")


class PredictResponse(BaseModel):
    """What ``POST /predict/{variant}`` answers."""

    variant: str = Field(examples=["depthwise"])
    version: int = Field(examples=[1])
    predictions: list[Prediction]
    timing: ServerTiming


class ErrorResponse(BaseModel):
    """Every error's body."""

    error: str = Field(examples=["invalid_input"])
    detail: str = Field(examples=["pixel values must lie in [0, 1] (pixels / 255); found 0 to 255"])


class VariantInfo(BaseModel):
    """A served variant, with its training figures."""

    name: str
    version: int
    ready: bool
    device: str | None
    runtime: str
    parameters: int | None = None
    macs: int | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    epochs: int | None = None
    training_seconds: float | None = None
    epoch_seconds: list[float] | None = None
    savedmodel_bytes: int | None = None
    created_at: str | None = None
    metadata: dict[str, Any] = Field(description="Everything in the version's metadata.json.")
