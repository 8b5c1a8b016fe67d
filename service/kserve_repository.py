"""The KServe V2 / Triton model-repository extension over REST: the index, load and unload.

``POST /v2/repository/index`` lists every served model name with its version and state;
``POST /v2/repository/models/<name>/load`` and ``.../unload`` act on the variant the name names
(``service.control``, which says why they are allowed in the default mode). tritonclient's
``get_model_repository_index``, ``load_model`` and ``unload_model`` work against it. The gRPC
calls are in ``service.kserve_grpc``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.control import ModelControl, index
from service.decode import read_body
from service.errors import BadRequest, ServeError
from service.inference import registry_of
from service.kserve import v2_error

router = APIRouter(prefix="/v2/repository", tags=["KServe V2 model repository"])


class NotHere(ServeError):
    """Model control is not available in this engine."""

    status = 501
    code = "not_implemented"


def control_of(request: Request) -> ModelControl:
    """This process's model control (501 with the replicas engine)."""
    control: ModelControl | None = request.app.state.models.control
    if control is None:
        raise NotHere(
            "model control needs one owner of the models: use --engine executor (the "
            "default) or --workers 1, not --engine replicas"
        )
    return control


async def options(request: Request) -> dict[str, Any]:
    """The request's JSON object (none sent: {}), or a clear 400.

    Load and unload take no options here (Triton's ``parameters``, such as a config override,
    are not supported), so theirs are read only to be checked.
    """
    body = await read_body(request, registry_of(request).limits)
    if not body.strip():
        return {}
    try:
        found = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"the request is not valid JSON: {err}") from err
    if not isinstance(found, dict):
        raise BadRequest("the request must be a JSON object")
    return found


@router.post("/index", summary="Repository index")
async def repository_index(request: Request) -> Response:
    """Every served model (each variant, and each variant@runtime): version and state;
    ``{"ready": true}``: only those serving."""
    try:
        ready = (await options(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise BadRequest(f'"ready" must be true or false, not {ready!r}')
    except ServeError as err:
        return v2_error(err)
    return JSONResponse([asdict(entry) for entry in index(registry_of(request), ready)])


@router.post("/models/{name}/load", summary="Load a model")
async def repository_load(name: str, request: Request) -> Response:
    """Serve the variant ``name`` names again (its pinned or latest complete version)."""
    try:
        await options(request)
        await control_of(request).load(name)
    except ServeError as err:
        return v2_error(err)
    return JSONResponse({})


@router.post("/models/{name}/unload", summary="Unload a model")
async def repository_unload(name: str, request: Request) -> Response:
    """Stop serving the variant ``name`` names, once its requests in flight are done."""
    try:
        await options(request)
        await control_of(request).unload(name)
    except ServeError as err:
        return v2_error(err)
    return JSONResponse({})
