"""HTTP/2 frames and gRPC's header blocks, as bytes: the wire vocabulary of the lean gRPC server.

The frame types, flags, error codes and settings of RFC 9113; one frame's bytes (:func:`frame`);
and the header blocks every answer uses, pre-encoded with ``hpack``. Those use only HPACK's
static table and never-indexed literals, so the same bytes are right on every connection, at
any time. What a connection does with them (its state, flow control, calls) is
:mod:`service.grpc_http2`'s.
"""

from __future__ import annotations

import struct

import grpc
from hpack import Encoder, NeverIndexedHeaderTuple

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
MAX_DETAILS = 1024  # characters of a status message sent (it may echo what a client sent)
HEAD = struct.Struct(">I")  # a frame's 24-bit length is the top of this, with the type


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
