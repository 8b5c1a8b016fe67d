"""The ``mnist-serve`` command: catalogue, train, serve, load-test, report, and the demo.

Heavy modules (TensorFlow, Locust, matplotlib) are imported inside the commands that need
them, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from training import catalog

app = typer.Typer(
    help="Train, serve and load-test MNIST CNN variants: "
    "is the 'optimized' one faster when served?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Outside a terminal Rich assumes 80 columns, which folds every table; logs and CI get 120.
console = Console(width=None if sys.stdout.isatty() else 120)

DEFAULT_MODELS_DIR = Path("models")

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="MNIST as a Keras-layout .npz or a folder of the four IDX .gz files. "
        "Default: $MNIST_DATA, else download with Keras (needs internet).",
        show_default=False,
    ),
]
ModelsOption = Annotated[
    Path,
    typer.Option("--models", help="Model repository: <models>/<variant>/<version>/ SavedModels."),
]


def check_variants(names: list[str] | None) -> list[str]:
    """Reject unknown variant names with the list of known ones (exit code 2)."""
    for name in names or []:
        if name not in catalog.names():
            raise typer.BadParameter(
                f"unknown variant {name!r}. Known: {', '.join(catalog.names())}"
            )
    return names or []


def check_data_path(path: Path | None) -> Path | None:
    """Reject a --data path that does not exist before any slow import (exit code 2)."""
    if path is not None and not path.exists():
        raise typer.BadParameter(f"{path} does not exist (expected an .npz file or IDX folder)")
    return path


@app.command("variants")
def list_variants(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False,
) -> None:
    """List the catalogued variants with parameters and multiply-adds per image."""
    entries = [catalog.describe(variant) for variant in catalog.VARIANTS]
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    from rich.table import Table

    table = Table(title="Variant catalogue")
    for column in ("name", "family", "parameters", "MACs/image", "description"):
        table.add_column(
            column, justify="right" if column in ("parameters", "MACs/image") else "left"
        )
    for e in entries:
        table.add_row(
            e["name"], e["family"], f"{e['parameters']:,}", f"{e['macs']:,}", e["description"]
        )
    console.print(table)


@app.command("train")
def train(
    variants: Annotated[
        list[str] | None,
        typer.Argument(
            help="Variants to train (see `mnist-serve variants`). Default: original depthwise.",
            callback=check_variants,
            show_default=False,
        ),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(
            help="Also train every variant of this family (seed, kernels, strides, "
            "padding, pooling, or 'all')."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 12,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 128,
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="Adadelta learning rate (the reference used 1.0).")
    ] = 1.0,
    rho: Annotated[float, typer.Option(min=0.0, max=1.0, help="Adadelta rho.")] = 0.95,
    data: DataOption = None,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N training images only.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (Python, NumPy, TensorFlow).")] = 1337,
) -> None:
    """Train variants on MNIST and export each as a SavedModel with its figures."""
    names = list(variants or [])
    if family:
        members = [v.name for v in catalog.VARIANTS if family in ("all", v.family)]
        if not members:
            raise typer.BadParameter(f"unknown family {family!r}", param_hint="--family")
        names += [n for n in members if n not in names]
    names = names or list(catalog.SEED_VARIANTS)
    check_data_path(data)

    from training.data import DataError, load_mnist
    from training.pipeline import figures_table, train_and_export
    from training.train import TrainConfig

    try:
        mnist = load_mnist(data)
    except DataError as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    config = TrainConfig(epochs, batch_size, learning_rate, rho, seed, limit)
    console.print(f"MNIST from {mnist.source} (sha256 {mnist.checksum[:12]}...), training {names}")
    trained = train_and_export(names, mnist, config, models, console)
    console.print(figures_table(trained))


@app.command("serve")
def serve(
    models: ModelsOption = DEFAULT_MODELS_DIR,
    variants: Annotated[
        str | None, typer.Option(help="Comma-separated variants to serve. Default: all found.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    device: Annotated[str, typer.Option(help="auto (GPU if there is one), cpu or gpu.")] = "auto",
    batching: Annotated[
        bool, typer.Option(help="Merge concurrent requests into one model call.")
    ] = True,
    max_batch_size: Annotated[int, typer.Option(help="Images per model call, at most.")] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a part-filled batch waits for more, under load.")
    ] = 1.0,
    max_queue: Annotated[
        int, typer.Option(help="Waiting requests per variant before answering 503.")
    ] = 512,
    intra_op_threads: Annotated[
        int, typer.Option(help="TensorFlow threads inside one op (0 = TensorFlow's default).")
    ] = 0,
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info or debug.")
    ] = "info",
) -> None:
    """Serve every exported variant over HTTP (POST /predict/<variant>); settings also from
    MNIST_SERVE_* environment variables, which these flags override."""
    from pydantic import ValidationError

    from service.registry import ConfigError
    from service.server import run
    from service.settings import Settings

    overrides: dict[str, object] = {
        "models_dir": models,
        "host": host,
        "port": port,
        "device": device,
        "batching": batching,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "max_queue": max_queue,
        "intra_op_threads": intra_op_threads,
        "log_level": log_level,
    }
    if variants is not None:
        overrides["variants"] = variants
    try:
        settings = Settings.model_validate(overrides)
        run(settings)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in err.errors()
        )
        console.print(f"[red]invalid settings:[/] {problems}")
        raise typer.Exit(2) from err
    except ConfigError as err:
        console.print(f"[red]cannot serve:[/] {err}")
        raise typer.Exit(2) from err


if __name__ == "__main__":
    app()
