"""Run the app under uvicorn: one process, which owns the models.

Several uvicorn workers would each load every model (and on a GPU each would claim the card);
scale out with one process per GPU or per machine instead.
"""

from __future__ import annotations

import logging

import uvicorn

from service.app import create_app, guarded_app
from service.protocol import guarded_protocol
from service.settings import Settings


def run(settings: Settings) -> None:
    """Build the app (failing fast on bad settings) and serve it until interrupted."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = guarded_app(create_app(settings))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        access_log=settings.access_log,
        # uvloop + httptools (uvicorn[standard]): the fastest pure-Python stack; the protocol
        # is httptools' with header limits and timeouts (service.protocol).
        loop="auto",
        http=guarded_protocol(settings, app),
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=10,
        # Bound to 127.0.0.1 by default, behind no proxy: skip X-Forwarded-* handling (a layer
        # of middleware on every request).
        proxy_headers=False,
    )
