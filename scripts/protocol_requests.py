"""Each protocol's benchmark request for one MNIST digit, the files the load generators read,
and a check that the server answers it right (for scripts/bench_protocols.py and its test).

The same digit goes out in every protocol: ``native`` (``POST /predict/<model>``,
``{"image": [784 floats]}``), ``tfserving`` (``{"instances": [28x28x1]}``), ``kserve-json``
(V2 JSON ``data``), ``kserve-binary`` (V2 with the binary tensor extension both ways) and
``kserve-grpc`` (a length-prefixed ``ModelInferRequest`` with ``raw_input_contents``). wrk gets
a Lua script per HTTP protocol, h2load the gRPC frame as its body file; :func:`h2load` runs
it and reads its answer.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from loadtests.procs import ServerProcess
from loadtests.protocols import Protocol, decode, decode_grpc, encode, error_message
from loadtests.shaping import TensorLayout

PROTOCOLS = ("native", "tfserving", "kserve-json", "kserve-binary", "kserve-grpc")
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
GRPC_HEADERS = {"content-type": "application/grpc", "te": "trailers"}

READS_AS = {  # how loadtests.protocols reads each HTTP protocol's answer
    "native": Protocol.NATIVE,
    "tfserving": Protocol.TFSERVING,
    "kserve-json": Protocol.KSERVE_HTTP,
    "kserve-binary": Protocol.KSERVE_HTTP,
}


class CheckError(RuntimeError):
    """A protocol's request not answered right (or a load generator's output not understood)."""


@dataclass(frozen=True)
class Request:
    """One protocol's request as the load generators send it (gRPC: ``path`` is the method's,
    ``body`` the length-prefixed message)."""

    protocol: str
    path: str
    body: bytes
    headers: dict[str, str]


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message on the wire: flag 0 (not compressed), 4-byte big-endian length, bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_unframe(body: bytes) -> bytes:
    """The message in one length-prefixed gRPC frame; ValueError if it is not exactly one."""
    if len(body) < 5 or body[0] != 0:
        raise ValueError("not an uncompressed gRPC frame")
    (length,) = struct.unpack(">I", body[1:5])
    if length != len(body) - 5:
        raise ValueError(f"the frame says {length} bytes, {len(body) - 5} follow")
    return body[5:]


def grpc_message(model: str, digit: np.ndarray) -> bytes:
    """The serialized ``ModelInferRequest`` of ``digit`` (uint8 28x28), raw FP32 contents."""
    from tritonclient.grpc import service_pb2 as pb

    layout = TensorLayout.ours(model)
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=layout.input, datatype=layout.datatype, shape=list(layout.shape)
    )
    raw = encode(Protocol.KSERVE_GRPC, "json", model, digit, layout).body
    request = pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[raw])
    return bytes(request.SerializeToString())


def requests_for(model: str, digit: np.ndarray) -> dict[str, Request]:
    """Each protocol's request for ``digit`` (uint8 28x28) to ``model``; JSON pixels are
    rounded to 4 decimals, as the load test sends them."""
    layout = TensorLayout.ours(model)
    json_type = {"content-type": "application/json"}
    pixels = np.round(digit / 255.0, 4)
    native = json.dumps({"image": pixels.ravel().tolist()}).encode()
    v2_json = {
        "inputs": [
            {
                "name": layout.input,
                "shape": list(layout.shape),
                "datatype": layout.datatype,
                "data": pixels.ravel().tolist(),
            }
        ]
    }
    tfserving = encode(Protocol.TFSERVING, "json", model, digit, layout)
    binary = encode(Protocol.KSERVE_HTTP, "json", model, digit, layout)
    return {
        "native": Request("native", f"/predict/{model}", native, json_type),
        "tfserving": Request("tfserving", tfserving.path, tfserving.body, tfserving.headers),
        "kserve-json": Request(
            "kserve-json", f"/v2/models/{model}/infer", json.dumps(v2_json).encode(), json_type
        ),
        "kserve-binary": Request("kserve-binary", binary.path, binary.body, binary.headers),
        "kserve-grpc": Request(
            "kserve-grpc", GRPC_PATH, grpc_frame(grpc_message(model, digit)), GRPC_HEADERS
        ),
    }


def lua_script(folder: Path, request: Request) -> Path:
    """A wrk script POSTing ``request``: its body read from a file (bytes as they are)."""
    body = folder / f"{request.protocol}.body"
    body.write_bytes(request.body)
    lines = ['wrk.method = "POST"', f'wrk.path = "{request.path}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in request.headers.items()]
    lines += [f'local f = io.open("{body}", "rb")', 'wrk.body = f:read("*a")', "f:close()"]
    script = folder / f"{request.protocol}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def generator_files(folder: Path, requests: dict[str, Request]) -> dict[str, Path]:
    """Per protocol, what its generator reads: a wrk script, or (gRPC) h2load's body file."""
    files = {}
    for name, request in requests.items():
        if name == "kserve-grpc":
            files[name] = folder / "kserve-grpc.body"
            files[name].write_bytes(request.body)
        else:
            files[name] = lua_script(folder, request)
    return files


def check_answer(server: ServerProcess, request: Request, label: int) -> None:
    """Send ``request`` once with a real client; CheckError unless OK with digit ``label``."""
    if request.protocol == "kserve-grpc":
        import grpc
        from tritonclient.grpc import service_pb2 as pb

        assert server.grpc_target is not None, "the server was started without gRPC"
        with grpc.insecure_channel(server.grpc_target) as channel:
            call = channel.unary_unary(request.path)  # no serializers: these exact bytes
            try:
                raw = call(grpc_unframe(request.body), timeout=30)
            except ValueError as err:
                raise CheckError(f"kserve-grpc: the body is not one gRPC message: {err}") from err
            except grpc.RpcError as err:
                raise CheckError(f"kserve-grpc: {err.code().name}: {err.details()}") from err
        answer = pb.ModelInferResponse.FromString(raw)
        row = decode_grpc(answer, TensorLayout.ours(answer.model_name))
    else:
        response = httpx.post(
            server.url + request.path, content=request.body, headers=request.headers, timeout=30
        )
        if response.status_code != 200:
            message = error_message(response.content)
            raise CheckError(f"{request.protocol}: HTTP {response.status_code}: {message}")
        split = response.headers.get("inference-header-content-length")
        row = decode(READS_AS[request.protocol], response.content, split)
    if int(np.argmax(row)) != label:
        raise CheckError(f"{request.protocol}: answered {int(np.argmax(row))}, not {label}")


def h2load_command(
    target: str, connections: int, seconds: int, body: Path, log: Path | None = None
) -> list[str]:
    """h2load POSTing ``body`` as gRPC calls to ``target`` (host:port): ``connections`` HTTP/2
    connections, one call in flight on each; one thread at c=1, two above (as wrk)."""
    threads = 1 if connections == 1 else 2
    command = ["h2load", f"-t{threads}", f"-c{connections}", "-m1", f"-D{seconds}"]
    command += ["-d", str(body)] + [f"-H{k}: {v}" for k, v in GRPC_HEADERS.items()]
    command += ["--log-file", str(log)] if log else []
    return [*command, f"http://{target}{GRPC_PATH}"]


def h2load(target: str, connections: int, seconds: int, body: Path) -> dict[str, float]:
    """One h2load run: requests/s, p50 ms (from its per-request log), answers, failures."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "requests.log"
        command = h2load_command(target, connections, seconds, body, log)
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
        rows = np.loadtxt(log, dtype=np.int64, ndmin=2) if log.stat().st_size else None
    found = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    counts = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (found and counts and status):
        raise CheckError(f"h2load's output was not understood:\n{out}")
    ok = rows[rows[:, 1] == 200, 2] if rows is not None else np.zeros(0)
    return {
        "rps": float(found.group(1)),
        "p50": float(np.median(ok)) / 1e3 if ok.size else float("nan"),
        "requests": float(counts.group(1)),
        "errors": float(sum(int(n) for n in counts.groups()[1:]) + int(status.group(4))),
    }
