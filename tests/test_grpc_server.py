"""The lean gRPC server (service.grpc_server over service.grpc_http2) alone, with test handlers,
as ``grpcio`` clients see it: answers, status codes, deadlines, cancellation, a graceful stop.
What grpcio will not send is in test_grpc_frames.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from tests.grpc_helpers import (
    FAIL,
    INFER,
    MAX_MESSAGE,
    SLOW,
    Handlers,
    call,
    slow_method,
    slow_request,
)
from tests.grpc_helpers import handlers as handlers
from tests.grpc_helpers import server as server


def test_a_call_is_answered_and_many_run_at_once(server: Any) -> None:
    target, _, _ = server
    answer = call(target, INFER, pb.ModelInferRequest(model_name="m", id="7"))
    assert (answer.model_name, answer.id) == ("m", "7")
    # ten 0.5 s calls on one channel finish together, not one after another
    with grpc.insecure_channel(target) as channel:
        method = slow_method(channel)
        started = time.monotonic()
        futures = [method.future(slow_request(0.5), timeout=10) for _ in range(10)]
        assert [f.result().id for f in futures] == ["slept"] * 10
        assert time.monotonic() - started < 3


def test_a_status_and_its_message_reach_the_client(server: Any) -> None:
    target, _, _ = server
    with pytest.raises(grpc.RpcError) as failed:
        call(target, FAIL, pb.ModelInferRequest())
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == "façade 100% wrong\nline two"


def test_unknown_methods_and_bad_messages_are_refused_at_once(server: Any) -> None:
    target, _, _ = server
    with pytest.raises(grpc.RpcError) as unknown:
        call(target, "/inference.GRPCInferenceService/ModelStreamInfer", pb.ModelInferRequest())
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(target) as channel:
        raw = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as garbage:
            raw(b"\xff\xff\xff", timeout=10)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as big:
        call(target, INFER, pb.ModelInferRequest(raw_input_contents=[b"x" * (MAX_MESSAGE + 1)]))
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit" in (big.value.details() or "")
    assert time.monotonic() - started < 2
    assert call(target, INFER, pb.ModelInferRequest(id="after")).id == "after"


def test_a_deadline_ends_the_call_and_cancels_its_handler(server: Any, handlers: Handlers) -> None:
    target, _, _ = server
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as late:
        call(target, SLOW, slow_request(30), timeout=0.3)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    assert handlers.cancelled.wait(5)


def test_a_client_that_cancels_cancels_the_handler(server: Any, handlers: Handlers) -> None:
    target, _, _ = server
    with grpc.insecure_channel(target) as channel:
        method = slow_method(channel)
        future = method.future(slow_request(30))
        time.sleep(0.3)
        future.cancel()
        assert handlers.cancelled.wait(5)


def test_stopping_lets_calls_in_flight_finish(server: Any) -> None:
    target, http2, loop = server
    with grpc.insecure_channel(target) as channel:
        method = slow_method(channel)
        future = method.future(slow_request(0.5), timeout=10)
        time.sleep(0.2)
        stopped = asyncio.run_coroutine_threadsafe(http2.stop(5), loop)
        assert future.result().id == "slept"
        stopped.result(10)
    with pytest.raises(grpc.RpcError) as refused:
        call(target, INFER, pb.ModelInferRequest(), timeout=2)
    assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
