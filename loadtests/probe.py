"""What the load test is about to drive, found out before the first step.

Is the target mnist-serve (its ``/readyz`` and ``/variants``: wait for it, check it serves every
variant on every runtime of the plan) or another server (checked through each protocol's own
status call)? Is each model ready over each protocol? And how does a digit go to each model
over each tensor protocol (:func:`read_layouts`, from the model's metadata:
:mod:`loadtests.shaping`)? Anything that stops the load test is a :class:`LoadTestError`
saying what is wrong.
"""

from __future__ import annotations

import time
from typing import assert_never

import httpx

from loadtests.described import ServedEngine, ServedVariant
from loadtests.protocols import Protocol
from loadtests.results import LoadPlan
from loadtests.shaping import LayoutError, TensorLayout, fetch_layout


class LoadTestError(Exception):
    """The load test could not run (target unreachable, Locust failed, ...)."""


def check_target(
    url: str, plan: LoadPlan, grpc_url: str | None = None, wait_s: float = 120
) -> list[ServedVariant]:
    """Fail fast on an unreachable target; check every model answers in every protocol swept.

    Against mnist-serve (it has ``/readyz``), wait for readiness and return its ``/variants``
    entries (figures, runtimes, devices); against any other server, return bare names.
    """
    served = wait_for_mnist_serve(url, wait_s)
    if served is not None:
        check_served(url, plan, served)
    if Protocol.KSERVE_GRPC in plan.protocols and not grpc_url:
        raise LoadTestError("--protocol kserve-grpc needs the server's gRPC address (--grpc-url)")
    for protocol in plan.protocols:
        for model in plan.models():
            if not model_answers(protocol, url, grpc_url, model):
                raise LoadTestError(f"{model} is not ready over {protocol} at {grpc_url or url}")
    return served if served is not None else [ServedVariant(v) for v in plan.variants]


def wait_for_mnist_serve(url: str, wait_s: float) -> list[ServedVariant] | None:
    """``/variants`` of an mnist-serve target once ready; None for another kind of server."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            ready = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.HTTPError as err:
            raise LoadTestError(
                f"cannot reach {url} ({type(err).__name__}: {err}); is the service running? "
                "Leave out --url to let the load test start one."
            ) from err
        if ready.status_code not in (200, 503):
            # Not mnist-serve (TF Serving answers 404, Triton 400): checked per protocol instead.
            return None
        if ready.status_code == 200:
            break
        if time.monotonic() > deadline:
            raise LoadTestError(f"{url} did not become ready within {wait_s:.0f} s: {ready.text}")
        time.sleep(0.5)
    return ServedVariant.from_server(httpx.get(f"{url}/variants", timeout=10).json())


def served_engine(url: str) -> ServedEngine | None:
    """mnist-serve's engine and worker count (None from a version without ``/engine``)."""
    try:
        answer = httpx.get(f"{url}/engine", timeout=10)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    info = answer.json()
    return ServedEngine(info["engine"], info["workers"], info["max_in_flight"])


def check_served(url: str, plan: LoadPlan, entries: list[ServedVariant]) -> None:
    """Every variant of the plan served by mnist-serve, on every runtime of the plan."""
    served = {entry.name: entry for entry in entries}
    missing = [v for v in plan.variants if v not in served]
    if missing:
        raise LoadTestError(f"{url} does not serve {missing} (it serves {', '.join(served)})")
    for variant in plan.variants:
        states = {r.runtime: r.state for r in served[variant].runtimes}
        absent = [r for r in plan.runtimes if states.get(r) != "ready"]
        if absent:
            raise LoadTestError(
                f"{url} does not serve {variant} on {', '.join(absent)} "
                f"(runtimes there: {', '.join(f'{k} {v}' for k, v in states.items()) or 'none'})"
            )


def model_answers(protocol: Protocol, url: str, grpc_url: str | None, model: str) -> bool:
    """Whether ``model`` reports ready through ``protocol``'s own status call."""
    try:
        match protocol:
            case Protocol.NATIVE:
                return True  # mnist-serve's own readiness was checked above
            case Protocol.TFSERVING:
                status = httpx.get(f"{url}/v1/models/{model}", timeout=10)
                states = [v.get("state") for v in status.json().get("model_version_status", [])]
                return status.status_code == 200 and "AVAILABLE" in states
            case Protocol.KSERVE_HTTP:
                return httpx.get(f"{url}/v2/models/{model}/ready", timeout=10).status_code == 200
            case Protocol.KSERVE_GRPC:
                import tritonclient.grpc as grpcclient

                client = grpcclient.InferenceServerClient(url=grpc_url or "")
                try:
                    return bool(client.is_model_ready(model))
                finally:
                    client.close()
            case _:
                assert_never(protocol)
    except Exception as err:  # any failure to get a status means: not ready
        raise LoadTestError(f"{model} over {protocol}: {type(err).__name__}: {err}") from err


def read_layouts(
    url: str, grpc_url: str | None, plan: LoadPlan
) -> dict[tuple[str, Protocol], TensorLayout]:
    """Per (model, tensor protocol) of the plan, how to shape a digit, from the model's metadata
    read through that protocol; LoadTestError naming the first model that cannot take one."""
    layouts: dict[tuple[str, Protocol], TensorLayout] = {}
    for protocol in plan.protocols:
        if protocol is Protocol.NATIVE:
            continue  # /predict takes pixels or pictures, not tensors
        for model in plan.models():
            try:
                layouts[(model, protocol)] = fetch_layout(protocol, url, grpc_url, model)
            except LayoutError as err:
                raise LoadTestError(f"{err} (over {protocol})") from err
    return layouts
