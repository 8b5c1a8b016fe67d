"""``mnist-serve serve``: the service, its options taken from the settings."""

from __future__ import annotations

from typing import Any

import typer

from mnist_serve.cli.options import console
from mnist_serve.cli.settings_options import settings_options
from service.settings import Settings


@settings_options(Settings, flags={"models_dir": "--models"})
def serve(**given: Any) -> None:
    """Serve every exported variant on every runtime found (POST /predict/<variant>).

    Address a runtime with ?runtime=onnx or by the model name <variant>@<runtime>
    (POST /predict/depthwise@onnx); GET /variants lists what serves where. Open
    http://127.0.0.1:8000/ for the web page: draw a digit, see every model answer.

    Every option can also come from a MNIST_SERVE_* environment variable (MNIST_SERVE_PORT,
    MNIST_SERVE_MODELS_DIR, ...); an option given here wins over the variable.
    """
    from pydantic import ValidationError

    from service.device import DeviceError
    from service.registry import ConfigError
    from service.supervisor import serve as run

    try:
        settings = Settings.model_validate({k: v for k, v in given.items() if v is not None})
        if settings.tuned and given.get("workers") is None:
            settings = with_tuned_workers(settings)
        run(settings)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in err.errors()
        )
        console.print(f"[red]invalid settings:[/] {problems}")
        raise typer.Exit(2) from err
    except (ConfigError, DeviceError) as err:
        console.print(f"[red]cannot serve:[/] {err}")
        raise typer.Exit(2) from err


def with_tuned_workers(settings: Settings) -> Settings:
    """``--tuned`` without ``--workers``: the worker count the tuned models agree on, if any
    (else the settings', saying why)."""
    import os

    from service.registry import tuned_worker_counts

    if os.environ.get("MNIST_SERVE_WORKERS"):
        return settings
    from modelrepo.tuned import TunedError

    try:
        counts = tuned_worker_counts(settings)
    except TunedError as err:
        console.print(f"[red]cannot serve --tuned:[/] {err}")
        raise typer.Exit(2) from err
    found = sorted(c for c in counts if c is not None)
    if len(counts) == 1 and found:
        return settings.model_copy(update={"workers": found[0]})
    if not found:
        why = "no model served has a tuned configuration (mnist-serve tune saves them)"
    else:
        asked = [str(count) if count else "one per core" for count in found]
        if None in counts:
            asked.append("none")
        why = f"the models' tuned worker counts differ ({', '.join(asked)})"
    per_core = " (one per core)" if settings.workers == 0 else ""
    console.print(f"--tuned: {why}: serving with workers={settings.workers}{per_core}")
    return settings
