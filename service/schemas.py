"""Response shapes, for the OpenAPI docs and the ``/variants`` endpoints.

The predict handler writes its JSON directly (validating a response model costs more than the
model call at batch 1); these classes document that JSON and the tests hold the two together.
"""

from __future__ import annotations

from typing import Any, Literal

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
    runtime: str = Field(examples=["onnx"])
    model: str = Field(examples=["depthwise@onnx"], description="<variant>@<runtime>")
    version: int = Field(examples=[1])
    predictions: list[Prediction]
    timing: ServerTiming


class ErrorResponse(BaseModel):
    """Every error's body."""

    error: str = Field(examples=["invalid_input"])
    detail: str = Field(examples=["pixel values must lie in [0, 1] (pixels / 255); found 0 to 255"])


class Batching(BaseModel):
    """How one loaded model batches and threads: the service's settings or, with serve
    --tuned, the configuration ``mnist-serve tune`` saved for it."""

    max_batch_size: int = Field(description="Images per model call, at most.", examples=[32])
    max_wait_ms: float = Field(
        description="How long a part-filled batch waits for more under load.", examples=[0.25]
    )
    merges: bool = Field(description="Whether concurrent requests share a model call.")
    intra_op_threads: int = Field(description="Threads inside one op (0: the runtime's default).")
    tuned: bool = Field(description="Whether these are its tuned configuration's (serve --tuned).")


class RuntimeInfo(BaseModel):
    """One runtime of a served variant."""

    runtime: str = Field(examples=["onnx"])
    model: str = Field(examples=["depthwise@onnx"], description="The name to address it by.")
    state: Literal["loading", "ready", "failed", "unloaded", "retired"]
    device: str | None = Field(description="Where it runs, once loaded.")
    cpu_only: bool = Field(description="LiteRT and OpenVINO run on the CPU even with a GPU.")
    reason: str | None = Field(None, description="Why it failed to load.")
    batch1_ms: float | None = Field(None, description="Model time for one image at warm-up.")
    batching: Batching | None = Field(None, description="How it batches, once loaded.")
    max_abs_diff: float | None = Field(
        None, description="Largest difference from the SavedModel's answers on the test set."
    )


class RefusedVersion(BaseModel):
    """A version that did not replace the serving one, and why."""

    version: int
    reason: str


class VariantInfo(BaseModel):
    """A served variant, with its training figures and its runtimes."""

    name: str
    version: int
    ready: bool = Field(description="Whether the default runtime serves.")
    device: str | None = Field(description="The default runtime's device.")
    runtime: str = Field(description="The default runtime: what the bare variant name means.")
    runtimes: list[RuntimeInfo]
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
    versions: list[int] = Field(
        default_factory=list,
        description="Every version serving, newest first (several with --version-policy "
        "latest:N; an older one answers when its version is in the URL).",
    )
    refused: list[RefusedVersion] = Field(
        default_factory=list,
        description="Newer versions found in the repository and refused, with the reason "
        "(the version above kept serving).",
    )


class PreparedImages(BaseModel):
    """What ``POST /prepare`` answers: the model input, as 28x28 rows of [0, 1] pixels."""

    images: list[list[list[float]]]


class RunInfo(BaseModel):
    """A load-test, explore or tune run with a report, as the web page lists it."""

    name: str = Field(examples=["demo-20261124-193000"])
    created_at: str | None
    models: list[str] = Field(description="The models it measured (variant@runtime).")
    url: str = Field(description="Where its self-contained report.html is served.")
    kind: str = Field(
        "loadtest", description="loadtest, explore (Pareto study) or tune (best configurations)."
    )


class EngineInfo(BaseModel):
    """How this server serves: its processes and where the models run."""

    engine: str = Field(
        description="single (one process), hybrid (front ends + one model process; the front "
        "ends also serve copies of the light models), executor (front ends + one model process) "
        "or replicas (every worker loads the models).",
        examples=["hybrid"],
    )
    workers: int = Field(description="HTTP/gRPC front-end processes sharing the port.")
    process: int = Field(description="The worker that answered (0 for a single process).")
    pids: list[int] = Field(description="Every worker's pid.")
    executor_pid: int | None = Field(description="The model executor's pid (executor engine).")
    max_in_flight: int = Field(description="The server-wide admission limit.")
    in_process: list[str] = Field(
        description="The models the answering process runs itself, as variant@runtime:version "
        "(the executor engine: none; hybrid: its copies of the light models, once warm).",
        examples=[["depthwise@onnx:1"]],
    )
