"""HTTP/2 for the lean gRPC server: frames in, calls handed over, answers framed out.

This is the only module that knows HTTP/2 (RFC 9113, and gRPC's PROTOCOL-HTTP2.md); the calls
themselves are :mod:`service.grpc_server`'s. It speaks what gRPC clients use, and nothing more:

* the connection: the client's preface; our SETTINGS; the client's SETTINGS acknowledged and
  applied (window size, frame size); PING answered; GOAWAY honoured, and sent on shutdown;
  anything else that breaks the protocol ends the connection with GOAWAY;
* flow control: our receive windows are opened wide at the start (a stream's as large as the
  largest message allowed, the connection's topped up as data arrives); what we send keeps
  within the client's windows, and waits for its WINDOW_UPDATE when it must;
* streams: HEADERS (and CONTINUATION) decoded with ``hpack`` (python-hyper's; their ``h2``
  state machine was measured no faster than ``grpc.aio``, docs/benchmarks.md, section Q), DATA
  gathered; at END_STREAM the call is handed to the server as a task; RST_STREAM from the client
  cancels it;
* a message longer than the limit is refused as soon as its length prefix arrives
  (RESOURCE_EXHAUSTED), and a path that names no unary method at its headers (UNIMPLEMENTED),
  each with a trailers-only answer and RST_STREAM, so the client stops sending at once.

The frames themselves (their constants, their bytes, the pre-encoded header blocks) live in
:mod:`service.http2_frames`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, cast

import grpc
from hpack import Decoder, HPACKError

from service import http2_frames as h2

log = logging.getLogger(__name__)

MAX_STREAMS = 128  # concurrent calls per connection (each may hold a message being read)
MAX_HEADER_BLOCK = 64 * 1024  # a call's header block, encoded
CONNECTION_TOP_UP = 2**30  # the connection's receive window, topped up when half is used


class Calls(Protocol):
    """What a connection needs of its server (:class:`service.grpc_server.GrpcServer`)."""

    max_message: int  # the longest request message taken, bytes
    connections: set[Connection]

    @property
    def methods(self) -> Mapping[bytes, object]:
        """The unary methods, by path."""
        ...

    def call(self, connection: Connection, sid: int, stream: Stream) -> Coroutine[Any, Any, None]:
        """Run a whole request's call, answering with :meth:`Connection.answer`."""
        ...


class Stream:
    """One call: its headers, the bytes of its message so far, its task, its send window."""

    __slots__ = ("body", "headers", "opened", "pending", "task", "trailers", "window")

    def __init__(self, window: int, opened: float) -> None:
        self.opened = opened  # the loop's time at its headers: its deadline counts from there
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.task: asyncio.Task[None] | None = None  # once the request is whole
        self.window = window  # what we may still send on it
        self.pending = b""  # answer DATA waiting for the client's window
        self.trailers = b""  # sent after the last of it


class Connection(asyncio.Protocol):
    """One client connection: frames in, calls run as tasks, frames out."""

    def __init__(self, server: Calls) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.preface = False
        self.decoder = Decoder()
        self.streams: dict[int, Stream] = {}
        self.headers_open: tuple[int, int, bytearray] | None = None  # stream, flags, block
        self.send_window = h2.DEFAULT_WINDOW  # the connection's, for what we send
        self.stream_window = h2.DEFAULT_WINDOW  # the client's initial window for each stream
        self.frame_size = h2.DEFAULT_FRAME  # the largest frame the client takes
        self.received = 0  # DATA bytes since our last connection WINDOW_UPDATE
        self.last_stream = 0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not one
        self.server.connections.add(self)
        window = min(h2.MAX_WINDOW, max(h2.DEFAULT_WINDOW, self.server.max_message + 5))
        settings = struct.pack(
            ">HIHI", h2.SET_MAX_STREAMS, MAX_STREAMS, h2.SET_INITIAL_WINDOW, window
        )
        transport.write(
            h2.frame(h2.SETTINGS, 0, 0, settings)
            + h2.frame(h2.WINDOW_UPDATE, 0, 0, h2.HEAD.pack(CONNECTION_TOP_UP))
        )

    def pause_writing(self) -> None:  # noqa: D102
        if self.transport is not None:  # a client that does not read is not read either
            self.transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        if self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.server.connections.discard(self)
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()

    def data_received(self, data: bytes) -> None:  # noqa: D102
        buffer = self.buffer + data if self.buffer else data
        if not self.preface:
            if len(buffer) < len(h2.PREFACE):
                self.buffer = buffer
                return
            if not buffer.startswith(h2.PREFACE):
                self.fail(h2.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            buffer, self.preface = buffer[len(h2.PREFACE) :], True
        out: list[bytes] = []
        start, size = 0, len(buffer)
        while size - start >= 9 and self.transport is not None:
            length = h2.HEAD.unpack_from(buffer, start)[0] >> 8
            if length > h2.DEFAULT_FRAME:
                self.fail(h2.FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
                return
            if size - start - 9 < length:
                break
            kind, flags = buffer[start + 3], buffer[start + 4]
            stream = h2.HEAD.unpack_from(buffer, start + 5)[0] & h2.MAX_WINDOW
            payload = buffer[start + 9 : start + 9 + length]
            start += 9 + length
            try:
                self.on_frame(kind, flags, stream, payload, out)
            except (struct.error, IndexError, ValueError) as err:  # a malformed frame
                self.fail(h2.FRAME_SIZE_ERROR, f"malformed frame of type {kind}: {err}")
        self.buffer = buffer[start:]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        self.close_if_idle()

    def on_frame(self, kind: int, flags: int, sid: int, payload: bytes, out: list[bytes]) -> None:
        """Act on one frame; what it answers goes on ``out``."""
        if self.headers_open is not None and (
            kind != h2.CONTINUATION or sid != self.headers_open[0]
        ):
            self.fail(h2.PROTOCOL_ERROR, "a header block was interrupted")
        elif kind == h2.DATA:
            self.on_data(flags, sid, payload, out)
        elif kind == h2.HEADERS:
            if flags & h2.PADDED:
                payload = payload[1 : len(payload) - payload[0]] if payload else b""
            if flags & h2.PRIORITY_FLAG:
                payload = payload[5:]
            self.headers_open = (sid, flags, bytearray(payload))
            if flags & h2.END_HEADERS:
                self.on_headers(out)
        elif kind == h2.CONTINUATION:
            if self.headers_open is None:
                self.fail(h2.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
                return
            self.headers_open[2].extend(payload)
            if len(self.headers_open[2]) > MAX_HEADER_BLOCK:
                self.fail(h2.PROTOCOL_ERROR, "header block too large")
                return
            if flags & h2.END_HEADERS:
                self.on_headers(out)
        elif kind == h2.SETTINGS and not flags & h2.ACK:
            if len(payload) % 6:
                raise ValueError("SETTINGS length is not a multiple of 6")
            out.append(h2.frame(h2.SETTINGS, h2.ACK, 0))
            self.on_settings(payload, out)
        elif kind == h2.PING and not flags & h2.ACK:
            if len(payload) != 8:
                raise ValueError("PING is not 8 bytes")
            out.append(h2.frame(h2.PING, h2.ACK, 0, payload))
        elif kind == h2.WINDOW_UPDATE:
            if len(payload) != 4:
                raise ValueError("WINDOW_UPDATE is not 4 bytes")
            increment = h2.HEAD.unpack(payload)[0] & h2.MAX_WINDOW
            if increment == 0:
                self.fail(h2.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            else:
                self.on_window_update(sid, increment, out)
        elif kind == h2.RST_STREAM:
            gone = self.streams.pop(sid, None)
            if gone is not None and gone.task is not None:
                gone.task.cancel()  # the client left: its call is cancelled
        elif kind == h2.GOAWAY:
            self.closing = True  # closed once the calls in flight are answered
        elif kind == h2.PUSH_PROMISE:
            self.fail(h2.PROTOCOL_ERROR, "a client cannot push")

    def on_headers(self, out: list[bytes]) -> None:
        """A whole header block: a new call, or (ignored) request trailers."""
        assert self.headers_open is not None
        sid, flags, block = self.headers_open
        self.headers_open = None
        try:
            headers = self.decoder.decode(bytes(block), raw=True)
        except HPACKError as err:
            self.fail(h2.COMPRESSION_ERROR, f"bad header block: {err}")
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid % 2 == 0 or sid <= self.last_stream or self.closing:
                if not self.closing:
                    self.fail(h2.PROTOCOL_ERROR, f"stream {sid} cannot be opened")
                return
            self.last_stream = sid
            if len(self.streams) >= MAX_STREAMS:
                out.append(h2.frame(h2.RST_STREAM, 0, sid, h2.HEAD.pack(h2.REFUSED_STREAM)))
                return
            loop = asyncio.get_running_loop()
            stream = self.streams[sid] = Stream(self.stream_window, loop.time())
            stream.headers = dict(headers)
            method = self.server.methods.get(stream.headers.get(b":path", b""))
            if method is None:
                path = stream.headers.get(b":path", b"").decode(errors="replace")
                refusal = f"no unary method {path}"
                self.refuse(sid, grpc.StatusCode.UNIMPLEMENTED, refusal, out, flags & h2.END_STREAM)
                return
        elif stream.task is not None:  # the request was whole already
            self.reset(sid, h2.STREAM_CLOSED, out)
            return
        if flags & h2.END_STREAM:
            self.start_call(sid, stream)

    def on_data(self, flags: int, sid: int, payload: bytes, out: list[bytes]) -> None:
        """Message bytes for a call; at END_STREAM the call starts."""
        self.received += len(payload)
        if self.received >= CONNECTION_TOP_UP // 2:
            out.append(h2.frame(h2.WINDOW_UPDATE, 0, 0, h2.HEAD.pack(self.received)))
            self.received = 0
        stream = self.streams.get(sid)
        if stream is None or stream.task is not None:
            return  # a call already answered (or reset): its remaining bytes are dropped
        if flags & h2.PADDED:
            payload = payload[1 : len(payload) - payload[0]] if payload else b""
        stream.body += payload
        if len(stream.body) >= 5:
            declared = h2.HEAD.unpack_from(stream.body, 1)[0]
            limit = self.server.max_message
            if declared > limit:
                refusal = f"message of {declared} bytes is over the limit of {limit}"
            elif len(stream.body) > declared + 5:
                refusal = "more than one message in a unary call"
            else:
                refusal = ""
            if refusal:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                self.refuse(sid, code, refusal, out, flags & h2.END_STREAM)
                return
        if flags & h2.END_STREAM:
            self.start_call(sid, stream)

    def on_settings(self, payload: bytes, out: list[bytes]) -> None:
        """The client's settings: its stream window and largest frame matter to our sends;
        a window that grew lets waiting answers go."""
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == h2.SET_INITIAL_WINDOW:
                if value > h2.MAX_WINDOW:
                    self.fail(h2.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                    return
                delta, self.stream_window = value - self.stream_window, value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == h2.SET_MAX_FRAME:
                if not h2.DEFAULT_FRAME <= value < 2**24:
                    self.fail(h2.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                    return
                self.frame_size = value
        self.flush_waiting(out)

    def on_window_update(self, sid: int, increment: int, out: list[bytes]) -> None:
        """More room to send: on the connection, or on one stream."""
        if sid == 0:
            self.send_window += increment
            self.flush_waiting(out)
        elif (stream := self.streams.get(sid)) is not None:
            stream.window += increment
            if stream.pending:
                self.flush(sid, stream, out)

    def flush_waiting(self, out: list[bytes]) -> None:
        """Send what the windows now allow of every answer that waits."""
        for sid, stream in list(self.streams.items()):
            if stream.pending:
                self.flush(sid, stream, out)

    def start_call(self, sid: int, stream: Stream) -> None:
        """The request is whole: run the call."""
        stream.task = asyncio.get_running_loop().create_task(self.server.call(self, sid, stream))

    def refuse(
        self, sid: int, code: grpc.StatusCode, details: str, out: list[bytes], whole: int
    ) -> None:
        """Answer a call at once with a status (trailers only); if the client is still
        sending (the request is not ``whole``), RST_STREAM tells it to stop."""
        stream = self.streams.pop(sid, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()
        out.append(
            h2.frame(
                h2.HEADERS,
                h2.END_HEADERS | h2.END_STREAM,
                sid,
                h2.status_block(code, details, True),
            )
        )
        if not whole:
            out.append(h2.frame(h2.RST_STREAM, 0, sid, h2.HEAD.pack(h2.NO_ERROR)))

    def reset(self, sid: int, code: int, out: list[bytes]) -> None:
        """End a stream with RST_STREAM (a stream error), cancelling its call."""
        stream = self.streams.pop(sid, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()
        out.append(h2.frame(h2.RST_STREAM, 0, sid, h2.HEAD.pack(code)))

    def answer(self, sid: int, message: bytes | None, trailers: bytes) -> None:
        """Send a call's answer: headers, its message, trailers (or trailers only)."""
        stream = self.streams.get(sid)
        if stream is None or self.transport is None:
            return  # reset by the client, or the connection is gone
        if message is None:
            del self.streams[sid]
            out = [h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, trailers)]
        else:
            stream.pending = b"\x00" + h2.HEAD.pack(len(message)) + message
            stream.trailers = trailers
            out = [h2.frame(h2.HEADERS, h2.END_HEADERS, sid, h2.RESPONSE_HEADERS)]
            self.flush(sid, stream, out)
        self.transport.write(b"".join(out))
        self.close_if_idle()

    def flush(self, sid: int, stream: Stream, out: list[bytes]) -> None:
        """Send what of the stream's DATA the windows allow; after the last of it, the
        trailers, and the stream is done."""
        while stream.pending:
            room = min(self.send_window, stream.window, self.frame_size, len(stream.pending))
            if room <= 0:
                return  # the rest waits for a WINDOW_UPDATE
            chunk, stream.pending = stream.pending[:room], stream.pending[room:]
            self.send_window -= room
            stream.window -= room
            out.append(h2.frame(h2.DATA, 0, sid, chunk))
        out.append(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, stream.trailers))
        self.streams.pop(sid, None)

    def goaway(self) -> None:
        """Refuse new calls (shutdown); close once the calls in flight are answered."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.write(h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", self.last_stream, 0)))
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """Close the connection if it is closing and no call is left."""
        if self.closing and not self.streams and self.transport is not None:
            self.transport.close()

    def fail(self, code: int, reason: str) -> None:
        """A connection error: GOAWAY with ``code`` and close."""
        log.info("gRPC connection closed: %s", reason)
        if self.transport is not None:
            self.transport.write(
                h2.frame(
                    h2.GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code) + reason.encode()
                )
            )
            self.transport.close()
            self.transport = None
