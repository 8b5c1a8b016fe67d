"""The admission guard sheds POSTs past its limit at once and lets everything else through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.admission import AdmissionGuard, whole_plain_post

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HeldApp:
    """An ASGI app that answers 200 once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, method: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": "/predict/x"}, receive, send)
    return sent


async def test_posts_past_the_limit_get_503_and_gets_pass() -> None:
    inner = HeldApp()
    shed: list[int] = []
    guard = AdmissionGuard(inner, max_in_flight=2, on_shed=lambda: shed.append(1))
    held = [asyncio.ensure_future(call(guard, "POST")) for _ in range(2)]
    await asyncio.sleep(0.01)
    refused = await call(guard, "POST")
    get = asyncio.ensure_future(call(guard, "GET"))  # not counted, not shed
    await asyncio.sleep(0.01)
    assert refused[0]["status"] == 503 and (b"retry-after", b"1") in refused[0]["headers"]
    assert b"overloaded" in refused[1]["body"] and shed == [1]
    assert inner.calls == 3  # two POSTs and the GET reached the app, the third POST did not
    inner.release.set()
    results = await asyncio.gather(*held, get)
    assert [r[0]["status"] for r in results] == [200, 200, 200]
    assert guard.in_flight == 0
    assert (await call(guard, "POST"))[0]["status"] == 200


def test_invalid_limit_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        AdmissionGuard(HeldApp(), max_in_flight=0)


PLAIN = b"POST /predict/depthwise HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (PLAIN, True),
        (PLAIN.replace(b"Content-Length", b"content-LENGTH"), True),
        (PLAIN[:-1], False),  # the body not all in
        (PLAIN + b"POST", False),  # a pipelined request after it
        (PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
        (PLAIN.replace(b"Host: a", b"Connection: close"), False),
        (PLAIN.replace(b"Content-Length: 2", b"Transfer-Encoding: chunked"), False),
        (PLAIN.replace(b"Content-Length: 2", b"Content-Length: x"), False),
        (PLAIN.replace(b"POST", b"GET"), False),
        (PLAIN.replace(b"Host: a", b"X: " + b"a" * 20_000), False),  # headers over the limit
    ],
)
def test_only_a_whole_plain_post_is_shed_unparsed(data: bytes, whole: bool) -> None:
    assert whole_plain_post(data, 16_384) is whole
