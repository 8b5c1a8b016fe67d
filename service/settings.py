"""Service settings, from ``MNIST_SERVE_*`` environment variables or the CLI's flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelrepo.contract import PIXELS
from modelrepo.layout import check_runtimes, is_valid_variant_name
from service.holds import HOLD_S, RESEND_WINDOW_S


def split_csv(value: object) -> object:
    """'a, b,,c' -> ['a', 'b', 'c']; anything but a string is left for pydantic to check."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything the service can be told; invalid values fail at start with the field named."""

    model_config = SettingsConfigDict(env_prefix="MNIST_SERVE_", extra="forbid")

    models_dir: Path = Field(Path("models"), description="Model repository to serve from.")
    variants: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Variants to serve (comma-separated); empty = all found."
    )
    pins: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict, description="Pinned versions, e.g. 'original=1,depthwise=2'."
    )
    runtimes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Runtimes to serve (savedmodel, onnx, litert, openvino; comma-separated); "
        "empty = every artifact present.",
    )
    default_runtime: str = Field(
        "savedmodel", description="The runtime a bare variant name (no @runtime) means."
    )
    runs_dir: Path = Field(
        Path("runs"), description="Load-test results folder whose reports the web page lists."
    )
    host: str = Field(
        "127.0.0.1", description="Address to listen on (0.0.0.0: every interface; think twice)."
    )
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    grpc_port: int = Field(
        0, ge=0, le=65535, description="KServe V2 gRPC port on the same host; 0 = no gRPC."
    )
    # grpc.aio costs more per call than our whole /predict (its fixed-answer floor is 0.7x
    # /predict's rate at one client); our own HTTP/2 server answers 3-6x faster than that floor
    # (docs/benchmarks.md, section Q).
    grpc_impl: Literal["lean", "grpcio"] = Field(
        "lean",
        description="gRPC server: lean = our HTTP/2 server on the event loop (service."
        "grpc_server, unary calls); grpcio = grpc.aio servers (the reference implementation).",
    )
    # Measured both ways in docs/benchmarks.md, section R.
    http_impl: Literal["lean", "asgi"] = Field(
        "lean",
        description="HTTP inference requests (every protocol's): lean = answered by our HTTP "
        "protocol, which calls the handler and writes the answer in one piece (service.cycle); "
        "asgi = through uvicorn's ASGI request cycle and middleware, as every other route "
        "(the reference).",
    )
    # grpc.aio accepts a server's calls one at a time (one request-call in flight, each a round
    # trip through its poller thread), so with one server concurrent calls reach the batcher one
    # by one and rarely share a batch. Several servers on the port accept in parallel: 8 took
    # gRPC from 0.65x to 0.80-0.92x /predict at c=32 on 2 cores (docs/benchmarks.md, section L).
    grpc_servers: int = Field(
        8,
        ge=1,
        le=64,
        description="With --grpc-impl grpcio: grpc.aio servers per process on the gRPC port, "
        "accepting calls in parallel (grpc.aio takes one call at a time per server).",
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="auto: the first GPU if one is visible (to TensorFlow, when a SavedModel "
        "is served; else an NVIDIA device not hidden by CUDA_VISIBLE_DEVICES), else the CPU.",
    )
    batching: bool = Field(True, description="Merge concurrent requests into one model call.")
    max_batch_size: int = Field(32, ge=1, le=1024, description="Images per model call, at most.")
    # Measured (docs/benchmarks.md, section L): at 1 ms, a front end's batcher, which sees
    # 1/N of the clients, waited out the whole window for a batch that could not fill. 0.25 ms
    # served 1.1-1.4x more at c=32 with the hybrid and the executor, about as much with one
    # process. A batch also stops waiting once every request in the process is in it.
    max_wait_ms: float = Field(
        0.25, ge=0, le=1000, description="How long a part-filled batch waits for more under load."
    )
    max_queue: int = Field(
        512, ge=1, description="Requests waiting per model before answering 503 (backpressure)."
    )
    # Load shedding (service.admission, Batcher.admit): refuse at once what cannot be served in
    # time, before reading its body, instead of queueing it (docs/benchmarks.md, overload).
    # 128: two front ends each batching up to 32 hold 64 in their models alone, so at 64 the
    # limit refused work the server had room for (open loop at capacity: 90 % goodput at 128,
    # 64 % at 64; docs/benchmarks.md, section M).
    max_in_flight: int = Field(
        128,
        ge=1,
        description="Inference (POST) requests in the server at once; more get 503 at once, "
        "before their body is read.",
    )
    # The holds (service.holds): measured both ways in docs/benchmarks.md, section N.
    shed_hold: Literal["all", "resends"] = Field(
        "all",
        description="After a 503 for overload, which of the client's next requests wait unread "
        f"for room: 'all' that come within the hold ({HOLD_S * 1000:g} ms, doubling in a row; "
        "the most goodput, but at 2x-4x overload an open-loop client can find all its "
        "connections held and wait seconds) or 'resends', only one sent within "
        f"{RESEND_WINDOW_S * 1000:g} ms of the 503, as a retry storm does (every request "
        "answered at once, less goodput).",
    )
    max_queue_wait_ms: float = Field(
        300,
        gt=0,
        description="Deadline for waiting in a model's queue: a request that would wait longer "
        "gets 503 before its body is read, one still waiting at the deadline gets 503.",
    )
    strict_models: bool = Field(
        False,
        description="A model that fails to load stops the server (exit 3) instead of "
        "being marked failed while the others serve.",
    )
    max_images_per_request: int = Field(
        0, ge=0, description="Images in one request, at most; 0 = max_batch_size."
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Request body limit (413).")
    max_image_pixels: int = Field(
        4_194_304,
        ge=PIXELS,
        description="Uploaded picture's width x height, at most, as decoded (a JPEG is decoded "
        "at up to 1/8 scale first); larger gets 413.",
    )
    decode_slots: int = Field(2, ge=1, description="Pictures decoded at once, at most.")
    # Slow or stalled clients (slowloris) must not hold connections and memory: limits applied
    # by service.protocol (headers) and service.decode (body).
    header_timeout_s: float = Field(
        10,
        gt=0,
        description="Time for a request's headers to arrive once it has begun (or "
        "for a new connection's first request), else the connection is closed.",
    )
    body_timeout_s: float = Field(
        30, gt=0, description="Time for a request's body to arrive, else 408."
    )
    keep_alive_s: int = Field(
        5, ge=1, description="An idle keep-alive connection is closed after this many seconds."
    )
    max_header_bytes: int = Field(
        16_384, ge=1024, description="Size of a request's line and headers, at most (431)."
    )
    max_headers: int = Field(100, ge=8, description="Headers in one request, at most (431).")
    max_connections: int = Field(
        4096, ge=1, description="Open connections, at most: one more gets 503 and is closed."
    )
    # Measured on 2 cores (docs/benchmarks.md): one intra-op thread cuts c=1 p50 by ~23 % and
    # costs nothing at c=32, where the event loop, not the model, is the bottleneck. On a big
    # CPU serving large batches, try 0 (TensorFlow's default: one thread per core).
    intra_op_threads: int = Field(
        1, ge=0, description="TensorFlow threads inside one op; 0 = TensorFlow's default."
    )
    inter_op_threads: int = Field(
        0, ge=0, description="TensorFlow ops run in parallel; 0 = TensorFlow's default."
    )
    # Measured (docs/benchmarks.md): a sub-millisecond model answers a lone request faster on
    # the event loop than through the model thread (the hop and the wake-ups cost more than
    # the model). Only when the model is idle and nothing else waits; 0 turns it off.
    inline_max_model_ms: float = Field(
        1.0,
        ge=0,
        description="A lone request runs on the event loop when the model's batch-1 time "
        "(measured at warm-up) is at most this; 0 = always through the model thread.",
    )
    version_policy: str = Field(
        "latest",
        pattern=r"^(latest|latest:[1-9][0-9]?|specific)$",
        description="Which versions serve (TF Serving's policies): latest = the newest complete "
        "one; latest:N = the N newest side by side (an older one by its version in the URL); "
        "specific = the pinned one (--pins), or the one found at start, never moved.",
    )
    poll_s: float = Field(
        1.0,
        ge=0,
        description="Seconds between looks at the model repository for new versions (TF "
        "Serving's default too); 0 = never: the versions found at start serve until restart.",
    )
    # The engine (service.supervisor): how many processes serve the port, and where the
    # models run. Measured on 2 cores in docs/benchmarks.md, section G.
    workers: int = Field(
        0,
        ge=0,
        le=256,
        description="HTTP/gRPC front-end processes sharing the port; 0 = one per usable core; "
        "1 = a single process serving alone, with no supervisor.",
    )
    engine: Literal["hybrid", "executor", "replicas"] = Field(
        "hybrid",
        description="With several workers: hybrid (the default) = one model process owns "
        "every model and the device, and each front end also serves its own copy of the light "
        "models that run on the CPU (ONNX, LiteRT, OpenVINO), with no process hop; executor = "
        "the model process serves every request (the batches the whole load makes); replicas "
        "= every worker loads every model, TensorFlow too for a SavedModel (CPU only, one copy of "
        "everything per worker).",
    )
    tuned: bool = Field(
        False,
        description="Serve each model with the configuration `mnist-serve tune` saved beside it "
        "(<models>/<variant>/tuned.json: max batch size, max wait, intra-op threads); models "
        "without one use the settings above.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="critical, error, warning, info or debug."
    )
    access_log: bool = Field(False, description="One log line per request (costs throughput).")

    @property
    def versions_served(self) -> int:
        """How many versions of each variant serve side by side (1 unless latest:N)."""
        kind, _, count = self.version_policy.partition(":")
        return int(count) if kind == "latest" and count else 1

    @field_validator("variants", mode="before")
    @classmethod
    def _split_variants(cls, value: object) -> object:
        value = split_csv(value)
        if isinstance(value, list):
            bad = [v for v in value if not isinstance(v, str) or not is_valid_variant_name(v)]
            if bad:
                raise ValueError(f"invalid variant names {bad}")
        return value

    @field_validator("runtimes", mode="before")
    @classmethod
    def _split_runtimes(cls, value: object) -> object:
        value = split_csv(value)
        if isinstance(value, list):
            check_runtimes(value)
        return value

    @field_validator("default_runtime")
    @classmethod
    def _check_default_runtime(cls, value: str) -> str:
        check_runtimes([value])
        return value

    @field_validator("pins", mode="before")
    @classmethod
    def _parse_pins(cls, value: object) -> object:
        if isinstance(value, str):
            pins = {}
            for part in filter(None, (p.strip() for p in value.split(","))):
                name, sep, version = part.partition("=")
                if not sep or not (version.strip().isascii() and version.strip().isdigit()):
                    raise ValueError(f"pin {part!r} is not of the form variant=version")
                pins[name.strip()] = int(version)
            return pins
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> Self:
        if self.max_images_per_request == 0:
            self.max_images_per_request = self.max_batch_size
        if self.max_images_per_request > self.max_batch_size:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) cannot exceed "
                f"max_batch_size ({self.max_batch_size}): such a request could never run"
            )
        return self
