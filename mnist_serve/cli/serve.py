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
