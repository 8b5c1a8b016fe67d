"""Our own API: ``POST /predict/<variant>`` and its error shape.

The request is JSON pixels (``{"image": ...}`` or ``{"images": [...]}``), a multipart upload or
a raw picture (``service.decode``); the answer has, per image, the digit, its confidence and the
ten probabilities, with the server's timing in the body and in a ``Server-Timing`` header.
Errors are ``{"error": <code>, "detail": <message>, ...}`` (:func:`error_response`, which is
also FastAPI's handler for every other route of the app).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.adapter import Decoded, HttpAdapter, Result, Target, infer
from service.decode import Limits, decode_request
from service.errors import INTERNAL_DETAIL, ServeError
from service.inference import registry_of
from service.openapi import ERRORS, PREDICT_BODY
from service.schemas import PredictResponse

log = logging.getLogger(__name__)
router = APIRouter()


def error_response(err: ServeError, path: str) -> Response:
    """A ServeError's JSON answer (our protocol's shape); server-side ones are logged."""
    if err.status >= 500 and err.status != 503 and err.detail != INTERNAL_DETAIL:  # a bug: logged
        log.error("%s on %s: %s", err.code, path, err.detail)
    return Response(
        orjson.dumps(err.body()),
        status_code=err.status,
        headers=err.headers(),
        media_type="application/json",
    )


class NativeAdapter(HttpAdapter[None]):
    """``/predict``: pixels or a picture in, digits with their probabilities out."""

    async def decode(self, source: Request, limits: Limits) -> Decoded[None]:
        """JSON pixels, a multipart upload or a raw picture (service.decode)."""
        return Decoded(await decode_request(source, limits), None)

    def render(self, source: Request, result: Result[None]) -> Response:
        """One entry per image, and the server's timing in body and header."""
        served, timing = result.model, result.timing
        queue_ms, model_ms = timing.queue_s * 1000, timing.model_s * 1000
        body = {
            "variant": served.model.variant,
            "runtime": served.runtime_name,
            "model": served.name,
            "version": served.model.version,
            "predictions": [
                {
                    "digit": int(row.argmax()),
                    "confidence": float(row.max()),
                    "probabilities": row.tolist(),
                }
                for row in result.probabilities.astype(float)
            ],
            "timing": {
                "queue_ms": round(queue_ms, 4),
                "model_ms": round(model_ms, 4),
                "batch_images": timing.batch_images,
            },
        }
        app_ms = (time.perf_counter() - result.started) * 1000
        server_timing = f"queue;dur={queue_ms:.4f}, model;dur={model_ms:.4f}, app;dur={app_ms:.4f}"
        return Response(
            orjson.dumps(body),
            media_type="application/json",
            headers={"Server-Timing": server_timing},
        )

    async def refuse(self, source: Request, err: ServeError) -> Response:
        """``{"error": code, "detail": message}`` with the error's status."""
        return error_response(err, source.url.path)


NATIVE = NativeAdapter()

RuntimeQuery = Annotated[
    str | None,
    Query(
        description="Runtime to use (savedmodel, onnx, litert, openvino); "
        "default: the variant's default runtime. Same as naming the model variant@runtime.",
    ),
]


@router.post(
    "/predict/{variant}",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra={"requestBody": PREDICT_BODY},
    summary="Classify digits with one variant (on one runtime)",
)
async def predict(variant: str, request: Request, runtime: RuntimeQuery = None) -> Response:
    """Classify JSON pixels or an uploaded digit picture with the named variant (or model)."""
    # registry_of, not a Depends: dependency solving costs on the hot path.
    return await infer(NATIVE, registry_of(request), request, Target(variant, runtime))
