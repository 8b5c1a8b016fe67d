"""A server that does nothing: the open loop's yardstick for its own client.

``python -m loadtests.null_server [--port N]`` answers every HTTP/1.1 request (keep-alive,
any path, its body read and dropped) with ``200 ok`` at once, and prints the port it listens
on (0: one the system picks) as its first line. Against it, the latency a load generator
measures is the generator's own: :mod:`loadtests.client_ceiling` calibrates the open loop's
ceiling on it, ``scripts/bench_generators.py`` compares the generators on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from loadtests.openloop import content_length

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer each request on the connection until the client closes it."""
    with contextlib.suppress(Exception):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(content_length(head))
            writer.write(OK)
    writer.close()


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:``port`` and say which port on stdout."""
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def main() -> None:
    """The command line: ``--port`` (default 0, any free port)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
