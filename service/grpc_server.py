"""The lean gRPC server for unary calls: our HTTP/2 (:mod:`service.grpc_http2`) on the event loop.

Why it exists: a ``grpc.aio`` server costs more per call than our whole ``/predict`` request
(its fixed-answer floor answered 0.68-0.74x ``/predict``'s rate at one client), so KServe gRPC
could not come within 15 % of the HTTP protocols. This server answers the same calls on the
same event loop as the HTTP side, several times faster than a fixed-answer ``grpc.aio`` server
(docs/benchmarks.md, section Q). ``serve --grpc-impl grpcio`` keeps ``grpc.aio``.

A method is ``/<service>/<method>`` to a handler ``async (request, context) -> response``, the
same handlers ``grpc.aio`` runs (:mod:`service.kserve_grpc`): :class:`Context` is the part of
``grpc.aio.ServicerContext`` they use. One length-prefixed message each way; compressed
messages are refused (UNIMPLEMENTED: we offer no compression); ``grpc-timeout`` ends the call
with DEADLINE_EXCEEDED; the status goes in trailers, its message percent-encoded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from service.grpc_http2 import Connection, Stream
from service.http2_frames import HEAD, OK_TRAILERS, status_block

log = logging.getLogger(__name__)

# grpc-timeout's units, in seconds
TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


class Aborted(Exception):
    """A handler ended its call with a status (``context.abort``)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    """The part of ``grpc.aio.ServicerContext`` our handlers use."""

    __slots__ = ("code", "details")

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        """End the call with ``code``: raises."""
        raise Aborted(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        """The status a handler that raises ``NotImplementedError`` ends with."""
        self.code = code

    def set_details(self, details: str) -> None:
        """Its message."""
        self.details = details


Handler = Callable[[Any, Context], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    """One unary method: how to read its request, and what answers it."""

    parse: Callable[[bytes], Any]
    handler: Handler


def timeout_s(value: bytes) -> float | None:
    """``grpc-timeout`` (``<digits><unit>``) in seconds, or None if it does not parse."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or unit not in TIMEOUT_UNITS or len(digits) > 8:
        return None
    return int(digits) * TIMEOUT_UNITS[unit]


class GrpcServer:
    """Unary gRPC methods served on one listening socket (see the module docstring)."""

    def __init__(self, methods: dict[str, Method], max_message: int) -> None:
        self.methods = {path.encode(): method for path, method in methods.items()}
        self.max_message = max_message
        self.connections: set[Connection] = set()
        self.listener: asyncio.Server | None = None

    async def start(self, host: str, port: int, reuse_port: bool) -> None:
        """Listen on ``host:port`` (with SO_REUSEPORT when other processes share it)."""
        loop = asyncio.get_running_loop()
        try:
            self.listener = await loop.create_server(
                lambda: Connection(self), host, port, reuse_port=reuse_port or None
            )
        except OSError as err:
            raise OSError(f"gRPC cannot listen on {host}:{port}: {err.strerror or err}") from err

    async def stop(self, grace: float) -> None:
        """Stop listening, let calls in flight finish for up to ``grace`` seconds, close."""
        if self.listener is not None:
            self.listener.close()
        for connection in list(self.connections):
            connection.goaway()
        deadline = asyncio.get_running_loop().time() + grace
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        calls = [
            stream.task
            for connection in self.connections
            for stream in connection.streams.values()
            if stream.task is not None
        ]
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()  # its calls are cancelled (connection_lost)
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    async def call(self, connection: Connection, sid: int, stream: Stream) -> None:
        """Run one call and send its answer or its status."""
        method = self.methods[stream.headers.get(b":path", b"")]
        context = Context()
        message, body = None, bytes(stream.body)
        try:
            if len(body) < 5 or HEAD.unpack_from(body, 1)[0] != len(body) - 5:
                raise Aborted(grpc.StatusCode.INTERNAL, "the request is not one gRPC message")
            if body[0]:
                raise Aborted(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not taken")
            try:
                request = method.parse(body[5:])
            except Exception as err:  # protobuf's DecodeError
                raise Aborted(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {err}") from err
            limit = timeout_s(stream.headers.get(b"grpc-timeout", b""))
            if limit is not None:  # counted from the call's headers
                limit -= asyncio.get_running_loop().time() - stream.opened
            try:
                async with asyncio.timeout(limit):
                    response = await method.handler(request, context)
            except TimeoutError:
                raise Aborted(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded") from None
            message, trailers = response.SerializeToString(), OK_TRAILERS
        except Aborted as aborted:
            trailers = status_block(aborted.code, aborted.details, True)
        except NotImplementedError:
            code = context.code or grpc.StatusCode.UNIMPLEMENTED
            trailers = status_block(code, context.details or "not implemented", True)
        except Exception:
            log.exception("gRPC call %s failed", stream.headers.get(b":path"))
            trailers = status_block(grpc.StatusCode.INTERNAL, "internal error", True)
        try:
            connection.answer(sid, message, trailers)  # a gone connection is skipped there
        except Exception:
            log.exception(
                "gRPC call %s: the answer could not be sent", stream.headers.get(b":path")
            )
