"""The hot routes' short way in: inference POSTs go straight to their handlers.

FastAPI keeps every route, its schema and its docs; but an inference request does not need
its middleware stack (server-error, exception, exit-stack, body-limit and telemetry layers),
its router's regex scan or its dependency solving, which together cost more CPU than the rest
of the request (docs/benchmarks.md, section G). This pure ASGI layer, just inside the
admission guard, matches the inference paths of every protocol by plain string operations and
calls the very handler functions FastAPI would call, with a Starlette ``Request``; anything
else (GETs, the web page, ``/prepare``, unknown paths) goes on to FastAPI unchanged.

Each handler maps its own errors (``service.adapter.infer``); should a
:class:`service.errors.ServeError` still escape one, it becomes our JSON answer
(``service.native.error_response``, also FastAPI's exception handler), and anything else a
logged 500, so a client never sees the difference between the two ways in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import INTERNAL_DETAIL, ServeError
from service.native import error_response

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Response]]


class HotRoutes:
    """The inference handlers by protocol, as ``create_app`` registers them with FastAPI."""

    def __init__(
        self,
        predict: Handler,
        tf_predict: Handler,
        tf_predict_version: Handler,
        v2_infer: Handler,
        v2_infer_version: Handler,
    ) -> None:
        self.predict = predict
        self.tf_predict = tf_predict
        self.tf_predict_version = tf_predict_version
        self.v2_infer = v2_infer
        self.v2_infer_version = v2_infer_version

    def match(self, path: str, request: Request) -> Awaitable[Response] | None:
        """The handler call for an inference ``path``, or None (not a hot route)."""
        if path.startswith("/predict/"):
            name = path[9:]
            if name and "/" not in name:
                return self.predict(name, request, request.query_params.get("runtime"))
        elif path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path[11:-6].split("/")
            if len(parts) == 1 and parts[0]:
                return self.v2_infer(parts[0], request)
            if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
                return self.v2_infer_version(parts[0], parts[2], request)
        elif path.startswith("/v1/models/") and path.endswith(":predict"):
            parts = path[11:-8].split("/")
            if len(parts) == 1 and parts[0]:
                return self.tf_predict(parts[0], request)
            if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
                return self.tf_predict_version(parts[0], parts[2], request)
        return None


class FastPath:
    """Pure ASGI: inference POSTs to their handlers directly, the rest to ``app``."""

    def __init__(self, app: ASGIApp, routes: HotRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a hot route here, or pass the request on."""
        if scope["type"] == "http" and scope["method"] == "POST":
            answer = self.answer(scope, receive)
            if answer is not None:
                response = await answer
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def answer(self, scope: Scope, receive: Receive) -> Awaitable[Response] | None:
        """The answer to a POST ``scope`` if its path is a hot route (errors mapped), else None.

        Also called by ``service.protocol``, which writes the answer itself."""
        scope["app"] = self.app  # what Starlette sets: handlers find the registry there
        call = self.routes.match(scope["path"], Request(scope, receive))
        return None if call is None else _mapped(call, scope["path"])


async def _mapped(call: Awaitable[Response], path: str) -> Response:
    """The handler's answer; an escaped ServeError as our JSON answer, anything else a 500."""
    try:
        return await call
    except ServeError as err:
        return error_response(err, path)
    except Exception:
        log.exception("unexpected error on %s", path)
        return error_response(ServeError(INTERNAL_DETAIL), path)
