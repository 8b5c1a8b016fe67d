"""Run the app under uvicorn: one process, or one worker of several (``service.supervisor``).

:func:`run_single` serves alone (``--workers 1``); :func:`run_worker` is a worker process's
entry point: the same app and uvicorn settings on a socket the supervisor opened.
``service.supervisor.serve`` (what ``mnist-serve serve`` calls) picks between them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import TextIO

import uvicorn

from service.admission import AdmissionGuard
from service.app import create_app, guarded_app
from service.cycle import HotAnswer
from service.device import DeviceError
from service.engine import WorkerContext
from service.fastpath import FastPath
from service.protocol import guarded_protocol
from service.registry import ConfigError
from service.settings import Settings
from service.shared import SharedInFlight


class CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a line is logged.

    A plain ``StreamHandler`` keeps the stream it was made with: after a server started in
    process (a test's ``CliRunner``, which swaps ``sys.stderr`` for a buffer it then closes),
    every later log line would fail with "--- Logging error ---". The standard library's own
    last-resort handler looks ``sys.stderr`` up the same way.
    """

    @property
    def stream(self) -> TextIO:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def configure_logging(settings: Settings, role: str | None = None) -> None:
    """Log lines with time and level; with several processes, each says which it is."""
    who = f"[{role} {os.getpid()}] " if role else ""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
        handlers=[CurrentStderr()],
        force=True,
    )


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (uvicorn[standard] installs it), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def uvicorn_config(settings: Settings, worker: WorkerContext | None) -> uvicorn.Config:
    """The app behind its guard, with the service's protocol and limits."""
    app = create_app(settings, worker)
    in_flight = SharedInFlight(worker.shared, worker.process) if worker else None
    guarded = guarded_app(app, in_flight)
    return uvicorn.Config(
        guarded,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # uvicorn's lines through the root logger (configure_logging): the same format, the
        # process's role on each, and the current stderr; its own config would give its loggers
        # handlers of their own, on the streams of the moment.
        log_config=None,
        access_log=settings.access_log,
        # uvloop + httptools (uvicorn[standard]): the fastest pure-Python stack; the protocol
        # is httptools' with header limits and timeouts (service.protocol).
        loop="auto",
        http=guarded_protocol(
            settings,
            guarded,
            worker.shared if worker else None,
            worker.process if worker else 0,
            hot_answer(settings, guarded),
        ),
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=10,
        # Bound to 127.0.0.1 by default, behind no proxy: skip X-Forwarded-* handling (a layer
        # of middleware on every request).
        proxy_headers=False,
    )


def hot_answer(settings: Settings, guarded: AdmissionGuard) -> HotAnswer | None:
    """What the protocol answers inference requests with (the fast path's ``answer``), unless
    they go through ASGI (``--http-impl asgi``)."""
    fast = guarded.app
    return fast.answer if settings.http_impl == "lean" and isinstance(fast, FastPath) else None


def run_single(settings: Settings) -> None:
    """Serve alone until interrupted: one process, which owns the models."""
    uvicorn.Server(uvicorn_config(settings, None)).run()


def run_worker(settings: Settings, worker: WorkerContext, sock: socket.socket) -> None:
    """A worker process: serve the app on the supervisor's listening socket."""
    configure_logging(settings, f"worker {worker.process}")
    try:
        config = uvicorn_config(settings, worker)
    except (ConfigError, DeviceError) as err:
        logging.getLogger(__name__).error("cannot serve: %s", err)
        raise SystemExit(2) from None
    uvicorn.Server(config).run(sockets=[sock])
