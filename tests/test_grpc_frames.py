"""The lean gRPC server's HTTP/2 as no gRPC library will drive it: python-hyper's ``h2`` for a
``grpc-timeout`` the server keeps itself, a tiny flow-control window, a compressed message, a
message longer than it announced, a window grown by SETTINGS; hand-made frames for a malformed
frame, a request ended twice, too many streams.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
from hpack import Encoder
from tritonclient.grpc import service_pb2 as pb

from service import grpc_http2, http2_frames
from tests.grpc_helpers import BIG, INFER, MEDIUM, SLOW, Handlers, call, slow_request
from tests.grpc_helpers import handlers as handlers
from tests.grpc_helpers import server as server


class H2Client:
    """A raw HTTP/2 client (python-hyper's h2) on a blocking socket."""

    def __init__(self, target: str, window: int = 65_535) -> None:
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())

    def send(
        self,
        path: str,
        message: bytes,
        flag: int = 0,
        length: int | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> int:
        stream = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "test"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra,
        ]
        self.h2.send_headers(stream, headers)
        prefix = struct.pack(">BI", flag, len(message) if length is None else length)
        self.h2.send_data(stream, prefix + message, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        return stream

    def events(self, until: type, open_window: bool = True) -> list[Any]:
        """Events until one of type ``until`` (opening our windows for data if asked)."""
        seen: list[Any] = []
        while not any(isinstance(e, until) for e in seen):
            data = self.sock.recv(65_536)
            if not data:
                seen.append(h2.events.ConnectionTerminated())
                break
            for event in self.h2.receive_data(data):
                seen.append(event)
                if isinstance(event, h2.events.DataReceived) and open_window:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.sock.sendall(self.h2.data_to_send())
        return seen

    def close(self) -> None:
        self.sock.close()


def trailers(events: list[Any]) -> dict[bytes, bytes]:
    return {
        k: v for e in events if isinstance(e, h2.events.TrailersReceived) for k, v in e.headers
    } or {k: v for e in events if isinstance(e, h2.events.ResponseReceived) for k, v in e.headers}


def test_the_server_ends_a_call_at_its_grpc_timeout(server: Any, handlers: Handlers) -> None:
    """``grpc-timeout`` is kept by the server itself, not only by a client that gives up."""
    target, _, _ = server
    client = H2Client(target)
    started = time.monotonic()
    client.send(SLOW, slow_request(30).SerializeToString(), extra=(("grpc-timeout", "200m"),))
    ended = trailers(client.events(h2.events.StreamEnded))
    assert ended[b"grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0]).encode()
    assert time.monotonic() - started < 5
    assert handlers.cancelled.wait(5)
    client.close()


def test_answers_keep_within_the_clients_flow_control_window(server: Any) -> None:
    """A 200 KB answer to a client whose stream window is 1,000 bytes arrives whole, never
    more than the window at a time, as the client opens its window."""
    target, _, _ = server
    client = H2Client(target, window=1_000)
    client.send(BIG, pb.ModelInferRequest().SerializeToString())
    events = client.events(h2.events.StreamEnded)
    chunks = [e.data for e in events if isinstance(e, h2.events.DataReceived)]
    assert max(len(c) for c in chunks) <= 1_000
    body = b"".join(chunks)
    answer = pb.ModelInferResponse.FromString(body[5:])
    assert answer.raw_output_contents == [b"x" * 200_000]
    assert trailers(events)[b"grpc-status"] == b"0"
    client.close()


def test_compressed_and_short_messages_are_refused(server: Any) -> None:
    target, _, _ = server
    client = H2Client(target)
    message = pb.ModelInferRequest(id="x").SerializeToString()
    client.send(INFER, message, flag=1)
    compressed = trailers(client.events(h2.events.StreamEnded))
    assert compressed[b"grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0]).encode()
    client.send(INFER, message, length=len(message) + 10)  # announces more than it sends
    short = trailers(client.events(h2.events.StreamEnded))
    assert short[b"grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0]).encode()
    client.close()
    assert call(target, INFER, pb.ModelInferRequest(id="still")).id == "still"


def test_a_client_that_is_not_http2_is_sent_away(server: Any) -> None:
    target, _, _ = server
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := plain.recv(4096):
            received += chunk
    assert bytes([http2_frames.GOAWAY]) in received[:64]  # our SETTINGS, then GOAWAY, closed
    assert call(target, INFER, pb.ModelInferRequest(id="fine")).id == "fine"


def test_a_window_grown_by_settings_lets_a_waiting_answer_go(server: Any) -> None:
    """An answer stopped by a 1,000-byte stream window goes on when the client raises its
    initial window with SETTINGS (as grpc's window tuning does), with no WINDOW_UPDATE."""
    target, _, _ = server
    client = H2Client(target, window=1_000)
    client.send(MEDIUM, pb.ModelInferRequest().SerializeToString())
    first = client.events(h2.events.DataReceived, open_window=False)
    assert sum(len(e.data) for e in first if isinstance(e, h2.events.DataReceived)) <= 1_000
    client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    client.sock.sendall(client.h2.data_to_send())
    rest = client.events(h2.events.StreamEnded, open_window=False)
    body = b"".join(e.data for e in first + rest if isinstance(e, h2.events.DataReceived))
    assert pb.ModelInferResponse.FromString(body[5:]).raw_output_contents == [b"x" * 5_000]
    client.close()


class RawClient:
    """Hand-made frames, for what no client library will send."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.sendall(http2_frames.PREFACE + http2_frames.frame(http2_frames.SETTINGS, 0, 0))
        self.encoder = Encoder()
        self.buffer = b""

    def headers(self, sid: int, path: str, flags: int) -> bytes:
        block = self.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", path),
             (":authority", "t"), ("content-type", "application/grpc")]
        )  # fmt: skip
        return http2_frames.frame(http2_frames.HEADERS, flags, sid, block)

    def frames(self, until: Callable[[int, int, bytes], bool]) -> list[tuple[int, int, bytes]]:
        """(type, stream, payload) of each frame the server sent, until ``until`` says so or
        the connection closes."""
        seen: list[tuple[int, int, bytes]] = []
        while True:
            while len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) < 9 + length:
                    break
                kind = self.buffer[3]
                sid = int.from_bytes(self.buffer[5:9], "big")
                payload = self.buffer[9 : 9 + length]
                self.buffer = self.buffer[9 + length :]
                seen.append((kind, sid, payload))
                if until(kind, sid, payload):
                    return seen
            chunk = self.sock.recv(65_536)
            if not chunk:
                return seen
            self.buffer += chunk


def test_a_malformed_frame_ends_only_its_connection(server: Any) -> None:
    target, _, _ = server
    client = RawClient(target)
    client.sock.sendall(http2_frames.frame(http2_frames.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    seen = client.frames(lambda kind, sid, payload: kind == http2_frames.GOAWAY)
    goaway = [payload for kind, _, payload in seen if kind == http2_frames.GOAWAY]
    assert goaway and struct.unpack(">I", goaway[0][4:8])[0] == http2_frames.FRAME_SIZE_ERROR
    assert client.frames(lambda *_: False) == []  # then closed
    assert call(target, INFER, pb.ModelInferRequest(id="ok")).id == "ok"


def test_a_request_ended_twice_runs_once(server: Any, handlers: Handlers) -> None:
    """HEADERS with END_STREAM on a stream whose request was whole: RST_STREAM
    (STREAM_CLOSED) and the call cancelled, not a second run of the handler."""
    target, _, _ = server
    client = RawClient(target)
    message = slow_request(2).SerializeToString()
    data = struct.pack(">BI", 0, len(message)) + message
    client.sock.sendall(
        client.headers(1, SLOW, http2_frames.END_HEADERS)
        + http2_frames.frame(http2_frames.DATA, http2_frames.END_STREAM, 1, data)
    )
    time.sleep(0.3)  # the handler runs
    client.sock.sendall(client.headers(1, SLOW, http2_frames.END_HEADERS | http2_frames.END_STREAM))
    seen = client.frames(lambda kind, sid, payload: kind == http2_frames.RST_STREAM)
    assert seen[-1] == (http2_frames.RST_STREAM, 1, struct.pack(">I", http2_frames.STREAM_CLOSED))
    assert handlers.cancelled.wait(5)
    assert handlers.slow_calls == 1
    client.sock.close()


def test_streams_over_the_limit_are_refused(server: Any) -> None:
    target, _, _ = server
    client = RawClient(target)
    opened = [2 * i + 1 for i in range(grpc_http2.MAX_STREAMS + 1)]
    client.sock.sendall(
        b"".join(client.headers(sid, INFER, http2_frames.END_HEADERS) for sid in opened)
    )
    seen = client.frames(lambda kind, sid, payload: kind == http2_frames.RST_STREAM)
    refused = struct.pack(">I", http2_frames.REFUSED_STREAM)
    assert seen[-1] == (http2_frames.RST_STREAM, opened[-1], refused)
    client.sock.close()


def test_a_status_message_is_cut_to_fit_one_frame() -> None:
    block = http2_frames.status_block(grpc.StatusCode.NOT_FOUND, "é" * 100_000, True)
    assert len(block) < http2_frames.DEFAULT_FRAME
