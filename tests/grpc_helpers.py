"""What the lean gRPC server's tests (test_grpc_server.py, test_grpc_frames.py) share: test
handlers that record what happened to them, the server on its own event loop (fixtures, used by
importing them: ``from tests.grpc_helpers import server as server``), and grpcio calls."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from service.grpc_server import Context, GrpcServer, Method

INFER = "/inference.GRPCInferenceService/ModelInfer"
SLOW = "/test/Slow"
FAIL = "/test/Fail"
BIG = "/test/Big"
MEDIUM = "/test/Medium"
MAX_MESSAGE = 64 * 1024


class Handlers:
    """Test handlers, recording what happened to them."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.slow_calls = 0

    async def echo(self, request: Any, context: Context) -> Any:
        return pb.ModelInferResponse(model_name=request.model_name, id=request.id)

    async def slow(self, request: Any, context: Context) -> Any:
        self.slow_calls += 1
        try:
            await asyncio.sleep(request.parameters["sleep"].double_param)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return pb.ModelInferResponse(id="slept")

    async def fail(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "façade 100% wrong\nline two")

    async def big(self, request: Any, context: Context) -> Any:
        return pb.ModelInferResponse(raw_output_contents=[b"x" * 200_000])

    async def medium(self, request: Any, context: Context) -> Any:
        return pb.ModelInferResponse(raw_output_contents=[b"x" * 5_000])


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def server(handlers: Handlers) -> Iterator[tuple[str, GrpcServer, asyncio.AbstractEventLoop]]:
    """The server on its own event loop in a thread: ``host:port``, it, its loop."""
    parse = pb.ModelInferRequest.FromString
    methods = {
        INFER: Method(parse, handlers.echo),
        SLOW: Method(parse, handlers.slow),
        FAIL: Method(parse, handlers.fail),
        BIG: Method(parse, handlers.big),
        MEDIUM: Method(parse, handlers.medium),
    }
    http2 = GrpcServer(methods, MAX_MESSAGE)
    loop = asyncio.new_event_loop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop.run_until_complete(http2.start("127.0.0.1", port, reuse_port=False))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}", http2, loop
    finally:
        asyncio.run_coroutine_threadsafe(http2.stop(0.5), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def call(target: str, path: str, request: Any, timeout: float = 10) -> Any:
    """One unary call with grpcio."""
    with grpc.insecure_channel(target) as channel:
        method = channel.unary_unary(
            path,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return method(request, timeout=timeout)


def slow_method(channel: grpc.Channel) -> Any:
    """The slow test method on ``channel``, for futures."""
    return channel.unary_unary(
        SLOW,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def slow_request(seconds: float) -> Any:
    request = pb.ModelInferRequest()
    request.parameters["sleep"].double_param = seconds
    return request
