"""KServe V2 / Open Inference Protocol over gRPC, on its own port, sharing the batchers.

``inference.GRPCInferenceService``: ServerLive, ServerReady, ServerMetadata, ModelReady,
ModelMetadata and ModelInfer (inputs as ``raw_input_contents`` or ``fp32_contents``; outputs
as ``raw_output_contents``). The message and service classes are the protocol's generated code
as the ``tritonclient[grpc]`` package ships it (Triton's ``grpc_service.proto``, package
``inference``: KServe's ``grpc_predict_v2.proto`` plus Triton's extra calls, which answer
UNIMPLEMENTED here). Using the package's generated code keeps the protocol's own definition the
single source, with no code generation step and nothing vendored.

The server is started in the app's lifespan on the same event loop as the HTTP side: our lean
HTTP/2 server (:mod:`service.grpc_server`, the default) or, with ``--grpc-impl grpcio``,
``settings.grpc_servers`` ``grpc.aio`` servers (:class:`GrpcServers`). Either way a gRPC
request goes through the same :class:`~service.inference.Inference`, the same batcher (it can
share a batch with HTTP requests) and the same metrics: ``ModelInfer`` is one more
:class:`~service.adapter.Adapter` on the path every API takes, and the handlers below serve
both servers (the lean one gives them a :class:`~service.grpc_server.Context`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
import numpy as np
from google.protobuf.message_factory import GetMessageClass
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from modelrepo.contract import OUTPUT_NAME
from service import __version__, grpc_server
from service.adapter import Adapter, Decoded, Result, Target, infer
from service.control import ModelControl, index
from service.decode import Limits
from service.errors import BadRequest, ServeError
from service.inference import url_version
from service.kserve import (
    EXTENSIONS,
    SERVER_NAME,
    check_input,
    from_raw,
    model_metadata,
    to_images,
)
from service.registry import ModelRegistry

log = logging.getLogger(__name__)

# Our statuses as gRPC codes.
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol's calls over the service's models."""

    def __init__(self, registry: ModelRegistry, control: Callable[[], ModelControl | None]) -> None:
        self.registry = registry
        self.control = control

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        """Every served model with its version and state (``ready``: only those serving)."""
        entries = index(self.registry, ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=e.version, state=e.state, reason=e.reason
                )
                for e in entries
            ]
        )

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        """Serve the variant the name names (service.control)."""
        await self._control(context, "load", request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        """Stop serving it."""
        await self._control(context, "unload", request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def _control(self, context: Any, action: str, name: str) -> None:
        control = self.control()
        if control is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "model control needs --engine executor (the default) or --workers 1",
            )
            return
        try:
            await (control.load(name) if action == "load" else control.unload(name))
        except ServeError as err:
            await abort(context, err)

    async def ServerLive(self, request: Any, context: Any) -> Any:
        """Alive while the process runs."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        """Ready once every model has loaded (or failed) and one serves."""
        return pb.ServerReadyResponse(ready=self.registry.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        """Name, version and extensions."""
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    async def ModelReady(self, request: Any, context: Any) -> Any:
        """Whether the named model (and version) serves."""
        try:
            model = self.registry.lookup(request.name, version=url_version(request.version or None))
        except ServeError as err:
            await abort(context, err)
        return pb.ModelReadyResponse(ready=model.state == "ready")

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        """Versions, platform and tensors of the named model."""
        try:
            model = self.registry.lookup(request.name, version=url_version(request.version or None))
            meta = model_metadata(request.name, model)
        except ServeError as err:
            await abort(context, err)

        def tensors(key: str) -> list[Any]:
            return [
                pb.ModelMetadataResponse.TensorMetadata(
                    name=t["name"], datatype=t["datatype"], shape=t["shape"]
                )
                for t in meta[key]
            ]

        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=tensors("inputs"),
            outputs=tensors("outputs"),
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """Classify the FP32 images of the one input tensor; probabilities as raw bytes."""
        target = Target(request.model_name, version=url_version(request.model_version or None))
        return await infer(GRPC, self.registry, GrpcCall(request, context), target)


class GrpcCall(NamedTuple):
    """A ModelInfer call: its request message and its context."""

    request: Any  # pb.ModelInferRequest
    context: Any  # grpc.aio.ServicerContext


class GrpcAdapter(Adapter[GrpcCall, None, Any]):
    """V2 over gRPC: ``raw_input_contents`` or ``fp32_contents`` in, raw bytes out."""

    async def decode(self, source: GrpcCall, limits: Limits) -> Decoded[None]:
        """The one FP32 input tensor, checked as over REST (service.kserve)."""
        request = source.request
        if len(request.inputs) != 1:
            raise BadRequest(f"the model takes one input tensor, got {len(request.inputs)}")
        tensor = request.inputs[0]
        batch, shape = check_input(
            tensor.name, tensor.datatype, list(tensor.shape), limits.max_images
        )
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1:
                raise BadRequest(
                    f"raw_input_contents holds {len(request.raw_input_contents)} tensors; "
                    "the model takes one input"
                )
            return Decoded(from_raw(request.raw_input_contents[0], batch), None)
        values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        if values.size != int(np.prod(shape)):
            raise BadRequest(f"fp32_contents holds {values.size} values for shape {list(shape)}")
        return Decoded(to_images(values.reshape(shape)), None)

    def render(self, source: GrpcCall, result: Result[None]) -> Any:
        """A ModelInferResponse with the probabilities as little-endian FP32 bytes."""
        probabilities = result.probabilities
        output = pb.ModelInferResponse.InferOutputTensor(
            name=OUTPUT_NAME, datatype="FP32", shape=list(probabilities.shape)
        )
        return pb.ModelInferResponse(
            model_name=source.request.model_name,
            model_version=str(result.model.model.version),
            id=source.request.id,
            outputs=[output],
            raw_output_contents=[np.ascontiguousarray(probabilities, dtype="<f4").tobytes()],
        )

    async def refuse(self, source: GrpcCall, err: ServeError) -> Any:
        """End the call with the gRPC status matching the error."""
        await abort(source.context, err)  # raises: grpc ends the call there
        raise AssertionError("context.abort() returned")


GRPC = GrpcAdapter()


async def abort(context: Any, err: ServeError) -> None:
    """End the call with the gRPC code matching ``err``'s HTTP status and its message."""
    await context.abort(CODES.get(err.status, grpc.StatusCode.INTERNAL), err.detail)


class GrpcServers:
    """The process's gRPC servers on one port, started and stopped together.

    With ``--grpc-impl grpcio``: grpc.aio accepts one call at a time per server (it asks the
    core for the next call only once the last has arrived, a round trip through its poller
    thread), so with one server concurrent calls reach the batcher one by one and rarely share
    a batch; several servers on the port (SO_REUSEPORT: the kernel spreads connections over
    them) accept in parallel. The lean server (:mod:`service.grpc_server`) is one per process.
    """

    def __init__(self, servers: list[Any]) -> None:
        self.servers = servers

    async def stop(self, grace: float) -> None:
        """Stop every server, letting calls in flight finish for up to ``grace`` seconds."""
        await asyncio.gather(*(server.stop(grace) for server in self.servers))


def methods(service: InferenceService) -> dict[str, grpc_server.Method]:
    """The service's unary calls by path, for the lean server (streaming ones are left out:
    it answers them UNIMPLEMENTED)."""
    found = {}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        if method.client_streaming or method.server_streaming:
            continue
        parse = GetMessageClass(method.input_type).FromString
        found[f"/{method.full_name.rsplit('.', 1)[0]}/{method.name}"] = grpc_server.Method(
            parse, getattr(service, method.name)
        )
    return found


async def start(
    registry: ModelRegistry,
    host: str,
    port: int,
    control: Callable[[], ModelControl | None],
    shared: bool = False,
) -> GrpcServers:
    """Start the process's gRPC server(s) on ``host:port`` (on the running loop): one lean
    server, or ``settings.grpc_servers`` grpc.aio servers (``settings.grpc_impl``).

    ``shared``: every worker process listens on the port too; otherwise a port already taken
    (by anyone) is an error.
    """
    settings = registry.settings
    if not shared:
        check_free(host, port)
    service = InferenceService(registry, control)
    if settings.grpc_impl == "lean":
        lean = grpc_server.GrpcServer(methods(service), settings.max_body_bytes)
        await lean.start(host, port, reuse_port=shared)
        log.info("KServe V2 gRPC on %s:%d (lean HTTP/2 server)", host, port)
        return GrpcServers([lean])
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.so_reuseport", int(shared or settings.grpc_servers > 1)),
    ]
    servers = []
    for _ in range(settings.grpc_servers):
        server = grpc.aio.server(options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
        if server.add_insecure_port(f"{host}:{port}") == 0:
            raise OSError(f"gRPC cannot listen on {host}:{port}")
        await server.start()
        servers.append(server)
    log.info("KServe V2 gRPC on %s:%d (%d grpc.aio servers)", host, port, len(servers))
    return GrpcServers(servers)


def check_free(host: str, port: int) -> None:
    """Raise OSError if ``host:port`` is taken: SO_REUSEPORT would let our servers share it."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise OSError(f"gRPC cannot listen on {host}:{port}: {err.strerror}") from err
