"""The HTTP request path's CPU, in process: inference answered by our protocol (``--http-impl
lean``) against the same requests through uvicorn's ASGI cycle (``asgi``).

One process, one app (``service.server.uvicorn_config``: the real registry, batcher and model),
two protocol classes: the service's, and the same with its hot answer off. Each round feeds
``--requests`` copies of one real digit's ``/predict`` request to ``--concurrency`` protocol
instances over in-memory transports (a new request as each answer completes), first with one
class, then the other, the order alternating between rounds. CPU per request is the
process's CPU time (every thread's: the model's too) over the requests answered, so the ratio
is of the whole request path, the parts both ways share included.

No sockets: the kernel's share is not counted, so the one system call a lean answer saves (it
writes the head and body in one piece) is not in these figures; ``scripts/bench_peers.py
--engines default,asgi`` measures both ways over TCP. Run: ``make bench-http-path`` or
``python scripts/bench_http_path.py --models models``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from uvicorn.lifespan.on import LifespanOn
from uvicorn.server import ServerState

from modelrepo.contract import INPUT_NAME, SIDE
from service.server import uvicorn_config
from service.settings import Settings
from training.data import load_mnist

LENGTH = re.compile(rb"content-length: (\d+)")


class Transport(asyncio.Transport):
    """An in-memory connection: calls ``answered`` with each whole answer written to it."""

    def __init__(self, answered: Any) -> None:
        super().__init__()
        self.buffer = b""
        self.answered = answered

    def write(self, data: bytes | bytearray | memoryview) -> None:  # noqa: D102
        self.buffer += bytes(data)
        head, found, body = self.buffer.partition(b"\r\n\r\n")
        length = LENGTH.search(head) if found else None
        if length is not None and len(body) >= int(length.group(1)):
            answer, self.buffer = self.buffer, b""
            self.answered(answer[9:12])

    def is_closing(self) -> bool:  # noqa: D102
        return False

    def close(self) -> None:  # noqa: D102
        pass

    def pause_reading(self) -> None:  # noqa: D102
        pass

    def resume_reading(self) -> None:  # noqa: D102
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: D102
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )


async def drive(
    protocol: type, config: Any, state: Any, request: bytes, clients: int, count: int
) -> tuple[float, dict[bytes, int]]:
    """``count`` requests from ``clients`` connections: CPU µs per request, statuses seen."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    left, statuses = [count], dict[bytes, int]()
    connections: list[Any] = []

    def answered(index: int) -> Any:
        def on_answer(status: bytes) -> None:
            statuses[status] = statuses.get(status, 0) + 1
            left[0] -= 1
            if left[0] >= clients:  # more to send, and this one's client sends it
                loop.call_soon(connections[index].data_received, request)
            elif left[0] == 0 and not done.done():
                done.set_result(None)

        return on_answer

    server_state = ServerState()
    for index in range(clients):
        connection = protocol(config=config, server_state=server_state, app_state=state)
        connection.connection_made(Transport(answered(index)))
        connections.append(connection)
    started = time.process_time()
    for connection in connections:
        connection.data_received(request)
    await done
    cpu = time.process_time() - started
    for connection in connections:
        connection.connection_lost(None)
    return cpu / count * 1e6, statuses


async def measure(args: argparse.Namespace) -> None:
    """Warm both ways up, then the rounds; print each and the ratios."""
    settings = Settings(
        models_dir=args.models,
        variants=[args.model.partition("@")[0]],
        runtimes=[args.model.partition("@")[2] or "onnx"],
        workers=1,
        log_level="warning",
    )
    config = uvicorn_config(settings, None)
    config.load()
    lifespan = LifespanOn(config)
    await lifespan.startup()
    lean = config.http_protocol_class
    ways = {"lean": lean, "asgi": type("AsgiProtocol", (lean,), {"hot": None})}
    digit = load_mnist(args.data).x_test[0].reshape(SIDE, SIDE) / 255.0
    body = json.dumps({INPUT_NAME: np.round(digit, 4).tolist()}).encode()
    request = (
        b"POST /predict/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (args.model.encode(), len(body), body)
    )
    deadline = time.monotonic() + 120
    while True:  # the models warm after start-up: until every answer is a 200
        _, statuses = await drive(lean, config, lifespan.state, request, 1, 50)
        if statuses.keys() == {b"200"}:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the model never answered 200: {statuses}")
        await asyncio.sleep(0.5)
    cpu: dict[str, list[float]] = {way: [] for way in ways}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{args.model}, {args.concurrency} clients, {args.requests} requests a run")
    for round_ in range(args.rounds):
        order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
        for way in order:
            per_request, statuses = await drive(
                ways[way], config, lifespan.state, request, args.concurrency, args.requests
            )
            if statuses.keys() != {b"200"}:
                raise SystemExit(f"{way}: not every answer was a 200: {statuses}")
            cpu[way].append(per_request)
        print(f"round {round_ + 1}: lean {cpu['lean'][-1]:.1f} µs, asgi {cpu['asgi'][-1]:.1f} µs")
    ratios = [asgi / lean for asgi, lean in zip(cpu["asgi"], cpu["lean"], strict=True)]
    print(
        f"\nCPU per request, asgi / lean, by round: {' '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.3f}"
    )
    await lifespan.shutdown()


def main() -> None:
    """Parse the flags and measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--model", default="depthwise@onnx", help="<variant>@<runtime>")
    parser.add_argument("--concurrency", type=int, default=32, help="connections at once")
    parser.add_argument("--requests", type=int, default=1000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=12, help="rounds, in alternating order")
    parser.add_argument("--data", type=Path, default=os.environ.get("MNIST_DATA"))
    uvloop.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
