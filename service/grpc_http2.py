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

Our header blocks use only HPACK's static table and never-indexed literals, so the same
pre-encoded bytes are right on every connection.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, cast

import grpc
from hpack import Decoder, Encoder, HPACKError, NeverIndexedHeaderTuple

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
STREAM_CLOSED, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x7, 0x8, 0x9
SET_INITIAL_WINDOW, SET_MAX_FRAME, SET_MAX_STREAMS = 0x4, 0x5, 0x3
DEFAULT_WINDOW, DEFAULT_FRAME = 65_535, 16_384
MAX_WINDOW = 2**31 - 1
MAX_STREAMS = 128  # concurrent calls per connection (each may hold a message being read)
MAX_DETAILS = 1024  # characters of a status message sent (it may echo what a client sent)
MAX_HEADER_BLOCK = 64 * 1024  # a call's header block, encoded
CONNECTION_TOP_UP = 2**30  # the connection's receive window, topped up when half is used
HEAD = struct.Struct(">I")  # a frame's 24-bit length is the top of this, with the type


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


def _block(*headers: tuple[str, str]) -> bytes:
    """A header block that leaves the client's HPACK table alone (static or never indexed),
    so the same bytes are right on any connection at any time."""
    return Encoder().encode([NeverIndexedHeaderTuple(k, v) for k, v in headers], huffman=False)


RESPONSE_HEADERS = _block((":status", "200"), ("content-type", "application/grpc"))
OK_TRAILERS = _block(("grpc-status", "0"))


def status_block(code: grpc.StatusCode, details: str, trailers_only: bool) -> bytes:
    """Trailers (or a whole trailers-only answer) carrying ``code`` and ``details``."""
    head = [(":status", "200"), ("content-type", "application/grpc")] if trailers_only else []
    text = "".join(  # at most ~3 KB: a header block must fit in one frame
        chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}"
        for b in details[:MAX_DETAILS].encode()
    )
    return _block(*head, ("grpc-status", str(code.value[0])), ("grpc-message", text))


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return HEAD.pack(len(payload))[1:] + bytes((kind, flags)) + HEAD.pack(stream) + payload


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
        self.send_window = DEFAULT_WINDOW  # the connection's, for what we send
        self.stream_window = DEFAULT_WINDOW  # the client's initial window for each stream
        self.frame_size = DEFAULT_FRAME  # the largest frame the client takes
        self.received = 0  # DATA bytes since our last connection WINDOW_UPDATE
        self.last_stream = 0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not one
        self.server.connections.add(self)
        window = min(MAX_WINDOW, max(DEFAULT_WINDOW, self.server.max_message + 5))
        settings = struct.pack(">HIHI", SET_MAX_STREAMS, MAX_STREAMS, SET_INITIAL_WINDOW, window)
        transport.write(
            frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, HEAD.pack(CONNECTION_TOP_UP))
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
            if len(buffer) < len(PREFACE):
                self.buffer = buffer
                return
            if not buffer.startswith(PREFACE):
                self.fail(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            buffer, self.preface = buffer[len(PREFACE) :], True
        out: list[bytes] = []
        start, size = 0, len(buffer)
        while size - start >= 9 and self.transport is not None:
            length = HEAD.unpack_from(buffer, start)[0] >> 8
            if length > DEFAULT_FRAME:
                self.fail(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
                return
            if size - start - 9 < length:
                break
            kind, flags = buffer[start + 3], buffer[start + 4]
            stream = HEAD.unpack_from(buffer, start + 5)[0] & MAX_WINDOW
            payload = buffer[start + 9 : start + 9 + length]
            start += 9 + length
            try:
                self.on_frame(kind, flags, stream, payload, out)
            except (struct.error, IndexError, ValueError) as err:  # a malformed frame
                self.fail(FRAME_SIZE_ERROR, f"malformed frame of type {kind}: {err}")
        self.buffer = buffer[start:]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        self.close_if_idle()

    def on_frame(self, kind: int, flags: int, sid: int, payload: bytes, out: list[bytes]) -> None:
        """Act on one frame; what it answers goes on ``out``."""
        if self.headers_open is not None and (kind != CONTINUATION or sid != self.headers_open[0]):
            self.fail(PROTOCOL_ERROR, "a header block was interrupted")
        elif kind == DATA:
            self.on_data(flags, sid, payload, out)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]] if payload else b""
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self.headers_open = (sid, flags, bytearray(payload))
            if flags & END_HEADERS:
                self.on_headers(out)
        elif kind == CONTINUATION:
            if self.headers_open is None:
                self.fail(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
                return
            self.headers_open[2].extend(payload)
            if len(self.headers_open[2]) > MAX_HEADER_BLOCK:
                self.fail(PROTOCOL_ERROR, "header block too large")
                return
            if flags & END_HEADERS:
                self.on_headers(out)
        elif kind == SETTINGS and not flags & ACK:
            if len(payload) % 6:
                raise ValueError("SETTINGS length is not a multiple of 6")
            out.append(frame(SETTINGS, ACK, 0))
            self.on_settings(payload, out)
        elif kind == PING and not flags & ACK:
            if len(payload) != 8:
                raise ValueError("PING is not 8 bytes")
            out.append(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            if len(payload) != 4:
                raise ValueError("WINDOW_UPDATE is not 4 bytes")
            increment = HEAD.unpack(payload)[0] & MAX_WINDOW
            if increment == 0:
                self.fail(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            else:
                self.on_window_update(sid, increment, out)
        elif kind == RST_STREAM:
            gone = self.streams.pop(sid, None)
            if gone is not None and gone.task is not None:
                gone.task.cancel()  # the client left: its call is cancelled
        elif kind == GOAWAY:
            self.closing = True  # closed once the calls in flight are answered
        elif kind == PUSH_PROMISE:
            self.fail(PROTOCOL_ERROR, "a client cannot push")

    def on_headers(self, out: list[bytes]) -> None:
        """A whole header block: a new call, or (ignored) request trailers."""
        assert self.headers_open is not None
        sid, flags, block = self.headers_open
        self.headers_open = None
        try:
            headers = self.decoder.decode(bytes(block), raw=True)
        except HPACKError as err:
            self.fail(COMPRESSION_ERROR, f"bad header block: {err}")
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid % 2 == 0 or sid <= self.last_stream or self.closing:
                if not self.closing:
                    self.fail(PROTOCOL_ERROR, f"stream {sid} cannot be opened")
                return
            self.last_stream = sid
            if len(self.streams) >= MAX_STREAMS:
                out.append(frame(RST_STREAM, 0, sid, HEAD.pack(REFUSED_STREAM)))
                return
            loop = asyncio.get_running_loop()
            stream = self.streams[sid] = Stream(self.stream_window, loop.time())
            stream.headers = dict(headers)
            method = self.server.methods.get(stream.headers.get(b":path", b""))
            if method is None:
                path = stream.headers.get(b":path", b"").decode(errors="replace")
                refusal = f"no unary method {path}"
                self.refuse(sid, grpc.StatusCode.UNIMPLEMENTED, refusal, out, flags & END_STREAM)
                return
        elif stream.task is not None:  # the request was whole already
            self.reset(sid, STREAM_CLOSED, out)
            return
        if flags & END_STREAM:
            self.start_call(sid, stream)

    def on_data(self, flags: int, sid: int, payload: bytes, out: list[bytes]) -> None:
        """Message bytes for a call; at END_STREAM the call starts."""
        self.received += len(payload)
        if self.received >= CONNECTION_TOP_UP // 2:
            out.append(frame(WINDOW_UPDATE, 0, 0, HEAD.pack(self.received)))
            self.received = 0
        stream = self.streams.get(sid)
        if stream is None or stream.task is not None:
            return  # a call already answered (or reset): its remaining bytes are dropped
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]] if payload else b""
        stream.body += payload
        if len(stream.body) >= 5:
            declared = HEAD.unpack_from(stream.body, 1)[0]
            limit = self.server.max_message
            if declared > limit:
                refusal = f"message of {declared} bytes is over the limit of {limit}"
            elif len(stream.body) > declared + 5:
                refusal = "more than one message in a unary call"
            else:
                refusal = ""
            if refusal:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                self.refuse(sid, code, refusal, out, flags & END_STREAM)
                return
        if flags & END_STREAM:
            self.start_call(sid, stream)

    def on_settings(self, payload: bytes, out: list[bytes]) -> None:
        """The client's settings: its stream window and largest frame matter to our sends;
        a window that grew lets waiting answers go."""
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == SET_INITIAL_WINDOW:
                if value > MAX_WINDOW:
                    self.fail(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                    return
                delta, self.stream_window = value - self.stream_window, value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == SET_MAX_FRAME:
                if not DEFAULT_FRAME <= value < 2**24:
                    self.fail(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
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
        out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, status_block(code, details, True)))
        if not whole:
            out.append(frame(RST_STREAM, 0, sid, HEAD.pack(NO_ERROR)))

    def reset(self, sid: int, code: int, out: list[bytes]) -> None:
        """End a stream with RST_STREAM (a stream error), cancelling its call."""
        stream = self.streams.pop(sid, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()
        out.append(frame(RST_STREAM, 0, sid, HEAD.pack(code)))

    def answer(self, sid: int, message: bytes | None, trailers: bytes) -> None:
        """Send a call's answer: headers, its message, trailers (or trailers only)."""
        stream = self.streams.get(sid)
        if stream is None or self.transport is None:
            return  # reset by the client, or the connection is gone
        if message is None:
            del self.streams[sid]
            out = [frame(HEADERS, END_HEADERS | END_STREAM, sid, trailers)]
        else:
            stream.pending = b"\x00" + HEAD.pack(len(message)) + message
            stream.trailers = trailers
            out = [frame(HEADERS, END_HEADERS, sid, RESPONSE_HEADERS)]
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
            out.append(frame(DATA, 0, sid, chunk))
        out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, stream.trailers))
        self.streams.pop(sid, None)

    def goaway(self) -> None:
        """Refuse new calls (shutdown); close once the calls in flight are answered."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, 0)))
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
                frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code) + reason.encode())
            )
            self.transport.close()
            self.transport = None
