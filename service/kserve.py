"""KServe V2 / Open Inference Protocol over REST, with the binary tensor data extension.

On the same models and batchers as ``/predict``:

* ``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``;
* ``GET /v2/models/<name>[/versions/<v>]`` (model metadata) and ``.../ready``;
* ``POST /v2/models/<name>[/versions/<v>]/infer``: one FP32 input ``image`` of shape
  ``[N, 28, 28, 1]`` (or ``[N, 28, 28]``, ``[N, 784]``), its data in JSON (flat or nested) or,
  with the binary extension, as ``N * 784 * 4`` little-endian bytes after the JSON header (whose
  length the ``Inference-Header-Content-Length`` header gives, and the input's
  ``binary_data_size`` parameter). The output ``probabilities`` ``[N, 10]`` comes back in JSON,
  or as raw bytes when the request asks (``binary_data`` on the output, or
  ``binary_data_output`` on the request): the cheapest way to move the tensors.

Model names follow the service's rule (``depthwise``, ``depthwise@onnx``); versions are the
repository's numbered folders. Errors are ``{"error": "<message>"}``. The tensor checks live
here and are shared with the gRPC endpoint (service/kserve_grpc.py).
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from modelrepo.contract import CLASSES, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, PIXELS, SIDE
from service.adapter import Decoded, HttpAdapter, Result, Target, infer
from service.decode import Limits, read_body, validate_pixels
from service.errors import BadRequest, InvalidInput, ServeError
from service.inference import registry_of, url_version
from service.registry import ServedModel

router = APIRouter(prefix="/v2", tags=["KServe V2 (Open Inference Protocol)"])
SERVER_NAME = "mnist-serve"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"
PLATFORMS = {
    "savedmodel": "tensorflow_savedmodel",
    "onnx": "onnxruntime_onnx",
    "litert": "tensorflow_lite",
    "openvino": "openvino",
}


def v2_error(err: ServeError) -> JSONResponse:
    """A ServeError as the protocol writes errors: ``{"error": message}``."""
    return JSONResponse({"error": err.detail}, status_code=err.status, headers=err.headers())


def model_metadata(name: str, model: ServedModel) -> dict[str, Any]:
    """The protocol's model metadata response."""
    return {
        "name": name,
        "versions": [str(model.model.version)],
        "platform": PLATFORMS[model.runtime_name],
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, CLASSES]}],
    }


# One image's shapes an input may take (after N): the declared [28, 28, 1], and two flattenings.
IMAGE_SHAPES = ((SIDE, SIDE, 1), (SIDE, SIDE), (PIXELS,))


def check_input(
    name: str, datatype: str, shape: Any, max_images: int
) -> tuple[int, tuple[int, ...]]:
    """The batch size and array shape of the one input tensor, or a clear 400.

    ``shape`` is what the client sent (a JSON value, or a gRPC message's repeated int64).
    """
    if name != INPUT_NAME:
        raise BadRequest(f"unknown input {name!r}: the model takes one input, {INPUT_NAME!r}")
    if datatype != "FP32":
        raise BadRequest(f"input {INPUT_NAME!r} must be FP32, got {datatype}")
    dims = list(shape) if isinstance(shape, list | tuple) else [shape]
    if any(type(d) is not int for d in dims):
        raise BadRequest(f"input shape {reprlib.repr(shape)} is not a list of whole numbers")
    if tuple(dims[1:]) not in IMAGE_SHAPES or dims[0] < 1:
        raise BadRequest(
            f"input shape {dims} is not [N, {SIDE}, {SIDE}, 1], [N, {SIDE}, {SIDE}] "
            f"or [N, {PIXELS}] with N >= 1"
        )
    if dims[0] > max_images:
        raise BadRequest(f"{dims[0]} images in one request; the limit is {max_images}")
    return dims[0], tuple(dims)


def to_images(array: np.ndarray) -> np.ndarray:
    """A checked-shape array -> validated model input (pixels in [0, 1], finite)."""
    try:
        return validate_pixels(array.reshape(len(array), -1))
    except InvalidInput as err:
        raise BadRequest(err.detail) from err


def from_raw(raw: bytes, batch: int) -> np.ndarray:
    """Little-endian FP32 bytes of ``batch`` images -> validated model input."""
    if len(raw) != batch * PIXELS * 4:
        raise BadRequest(
            f"the binary input holds {len(raw)} bytes; {batch} FP32 images need "
            f"{batch * PIXELS * 4}"
        )
    return to_images(np.frombuffer(raw, dtype="<f4").reshape(batch, PIXELS))


def parse_infer(body: bytes, header_length: str | None, max_images: int) -> tuple[Any, np.ndarray]:
    """The JSON request and its images, from JSON data or the binary section after it."""
    split = len(body)
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(
            body
        ):
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not valid")
        split = int(header_length)
    try:
        request = orjson.loads(body[:split])
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"the inference request is not valid JSON: {err}") from err
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f'the request must hold "inputs" with one tensor, {INPUT_NAME!r}')
    tensor = inputs[0]
    batch, shape = check_input(
        str(tensor.get("name")), str(tensor.get("datatype")), tensor.get("shape"), max_images
    )
    binary_size = parameters(tensor, f"input {INPUT_NAME!r}").get("binary_data_size")
    if binary_size is not None:
        if type(binary_size) is not int:
            raise BadRequest(f"binary_data_size {binary_size!r} is not a whole number of bytes")
        if split + binary_size != len(body):
            raise BadRequest(
                f"binary_data_size {binary_size} does not match the {len(body) - split} bytes "
                "after the JSON header"
            )
        return request, from_raw(body[split:], batch)
    if "data" not in tensor:
        raise BadRequest(f'input {INPUT_NAME!r} has neither "data" nor binary_data_size')
    try:
        array = np.asarray(tensor["data"], dtype=np.float32).reshape(shape)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"input data does not fit shape {list(shape)}: {err}") from err
    return request, to_images(array)


def parameters(owner: dict[str, Any], what: str) -> dict[str, Any]:
    """``owner``'s ``parameters`` object ({} when absent), or a clear 400."""
    found = owner.get("parameters")
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise BadRequest(f'the "parameters" of {what} must be a JSON object')
    return found


def wants_binary(request: dict[str, Any]) -> bool:
    """Whether the client asked for the output as raw bytes (the request's outputs checked)."""
    outputs = request.get("outputs")
    if outputs is None:
        outputs = []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise BadRequest('"outputs" must be a list of objects, each naming an output')
    for output in outputs:
        if output.get("name") not in (None, OUTPUT_NAME):
            raise BadRequest(
                f"unknown output {output.get('name')!r}; the model has {OUTPUT_NAME!r}"
            )
    wanted = [parameters(o, f"output {OUTPUT_NAME!r}").get("binary_data") for o in outputs]
    return bool(parameters(request, "the request").get("binary_data_output")) or any(wanted)


@router.get("", summary="Server metadata")
async def v2_server() -> JSONResponse:
    """The server's name, version and protocol extensions."""
    from service import __version__

    return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})


@router.get("/health/live", summary="Server live")
async def v2_live() -> JSONResponse:
    """200 while the process runs."""
    return JSONResponse({"live": True})


@router.get("/health/ready", summary="Server ready")
async def v2_ready(request: Request) -> JSONResponse:
    """200 once every model has loaded (or failed) and one serves; 503 before."""
    ready = registry_of(request).ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def _metadata(request: Request, name: str, version: str | None) -> Response:
    try:
        return JSONResponse(
            model_metadata(name, registry_of(request).lookup(name, version=url_version(version)))
        )
    except ServeError as err:
        return v2_error(err)


async def _model_ready(request: Request, name: str, version: str | None) -> Response:
    try:
        model = registry_of(request).lookup(name, version=url_version(version))
    except ServeError as err:
        return v2_error(err)
    ready = model.state == "ready"
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}", summary="Model metadata")
async def v2_model(name: str, request: Request) -> Response:
    """Name, versions, platform (the runtime) and the input and output tensors."""
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model metadata, one version")
async def v2_model_version(name: str, version: str, request: Request) -> Response:
    """The same, for one version (404 unless it is the served one)."""
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", summary="Model ready")
async def v2_model_ready(name: str, request: Request) -> Response:
    """200 when the model serves, 503 while loading or after failing to load."""
    return await _model_ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model ready, one version")
async def v2_model_version_ready(name: str, version: str, request: Request) -> Response:
    """The same, for one version."""
    return await _model_ready(request, name, version)


@dataclass(frozen=True, slots=True)
class V2Request:
    """What an inference request asks of its answer besides the images."""

    id: Any  # echoed back as sent (a string, by the protocol); None: none sent
    binary: bool  # the output as raw bytes


class KServeAdapter(HttpAdapter[V2Request]):
    """The V2 REST inference: a tensor in JSON or binary in, answered in kind."""

    async def decode(self, source: Request, limits: Limits) -> Decoded[V2Request]:
        """The one FP32 input, from JSON data or the binary section after the JSON header."""
        body = await read_body(source, limits)
        header = source.headers.get(HEADER_LENGTH)
        parsed, images = parse_infer(body, header, limits.max_images)
        return Decoded(images, V2Request(parsed.get("id"), wants_binary(parsed)))

    def render(self, source: Request, result: Result[V2Request]) -> Response:
        """``probabilities`` [N, 10] in JSON, or raw little-endian FP32 bytes."""
        probabilities, request = result.probabilities, result.decoded.request
        output: dict[str, Any] = {
            "name": OUTPUT_NAME,
            "datatype": "FP32",
            "shape": list(probabilities.shape),
        }
        answer: dict[str, Any] = {
            "model_name": result.target.name,
            "model_version": str(result.model.model.version),
        }
        if request.id is not None:
            answer["id"] = request.id
        if not request.binary:
            output["data"] = probabilities.astype(float).ravel().tolist()
            answer["outputs"] = [output]
            return Response(orjson.dumps(answer), media_type="application/json")
        raw = np.ascontiguousarray(probabilities, dtype="<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        answer["outputs"] = [output]
        header_bytes = orjson.dumps(answer)
        return Response(
            header_bytes + raw,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header_bytes))},
        )

    async def refuse(self, source: Request, err: ServeError) -> Response:
        """``{"error": message}`` with the error's status."""
        return v2_error(err)


KSERVE = KServeAdapter()


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensors)")
async def v2_infer(name: str, request: Request) -> Response:
    """Classify FP32 images sent as a tensor named image."""
    return await infer(KSERVE, registry_of(request), request, Target(name))


@router.post("/models/{name}/versions/{version}/infer", summary="Inference, one version")
async def v2_infer_version(name: str, version: str, request: Request) -> Response:
    """The same, pinned to one version (404 unless it is the served one)."""
    target = Target(name, version=url_version(version))
    return await infer(KSERVE, registry_of(request), request, target)
