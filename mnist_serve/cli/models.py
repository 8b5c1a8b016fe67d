"""``mnist-serve variants``, ``train`` and ``export``: the catalogue and the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mnist_serve.cli.options import (
    ALL_CONVERTED,
    DEFAULT_MODELS_DIR,
    DataOption,
    ModelsOption,
    RuntimesToConvert,
    check_data_path,
    check_variants,
    console,
    csv,
    parse_runtimes,
)
from modelrepo.layout import CONVERTED_RUNTIMES
from modelrepo.metadata import FailedConversion
from training import catalog
from training.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_RHO,
    DEFAULT_SEED,
    MAX_SEED,
)

if TYPE_CHECKING:
    from training.data import Mnist
    from training.pipeline import Trained
    from training.train import TrainConfig


def load_data(data: Path | None) -> Mnist:
    """MNIST from ``data`` (or $MNIST_DATA); exit 2 with the reason when it can't be read."""
    from training.data import DataError, load_mnist

    try:
        mnist = load_mnist(data)
    except DataError as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    console.print(f"MNIST from {mnist.source} (sha256 {mnist.checksum[:12]}...)")
    return mnist


def train_variants(
    names: list[str],
    data: Path | None,
    config: TrainConfig,
    models: Path,
    runtimes: tuple[str, ...] = CONVERTED_RUNTIMES,
    extra_seeds: tuple[int, ...] = (),
) -> list[Trained]:
    """Load MNIST (exit 2 on a bad source), train and export ``names``, print their figures;
    what was trained (a failed conversion is recorded in its metadata, not raised)."""
    from training.pipeline import figures_table, train_and_export

    mnist = load_data(data)
    console.print(f"training {names}; converting to {', '.join(runtimes) or 'no other runtime'}")
    trained = train_and_export(names, mnist, config, models, console, runtimes, extra_seeds)
    console.print(figures_table(trained))
    return trained


def positive(value: float) -> float:
    """A value that must be above 0 (typer's ``min`` includes it)."""
    if not value > 0:
        raise typer.BadParameter(f"must be > 0, got {value}")
    return value


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
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = DEFAULT_EPOCHS,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = DEFAULT_BATCH_SIZE,
    learning_rate: Annotated[
        float,
        typer.Option(
            callback=positive, help="Adadelta learning rate, > 0 (the reference used 1.0)."
        ),
    ] = DEFAULT_LEARNING_RATE,
    rho: Annotated[float, typer.Option(min=0.0, max=1.0, help="Adadelta rho.")] = DEFAULT_RHO,
    data: DataOption = None,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N training images only.")
    ] = None,
    seed: Annotated[
        int,
        typer.Option(min=0, max=MAX_SEED, help="Random seed (Python, NumPy, TensorFlow)."),
    ] = DEFAULT_SEED,
    seeds: Annotated[
        str,
        typer.Option(
            help="Train each variant once per seed (e.g. 1,2,3): the first is exported, and its "
            "metadata records every seed's test accuracy, their mean, spread and 95% interval. "
            "Overrides --seed."
        ),
    ] = "",
    runtimes: RuntimesToConvert = ALL_CONVERTED,
) -> None:
    """Train variants on MNIST and export each as a SavedModel with its figures.

    Each export is also converted for the other runtimes (ONNX Runtime, LiteRT, OpenVINO), and
    each conversion is checked against the SavedModel on the 10,000 test digits. Exits 1 if any
    conversion failed (the SavedModels are published all the same; `export` retries).
    """
    names = list(variants or [])
    if family:
        members = [v.name for v in catalog.VARIANTS if family in ("all", v.family)]
        if not members:
            raise typer.BadParameter(f"unknown family {family!r}", param_hint="--family")
        names += [n for n in members if n not in names]
    names = names or list(catalog.SEED_VARIANTS)
    check_data_path(data)

    from training.train import TrainConfig

    try:
        seed_list = csv(seeds, int) if seeds else (seed,)
    except typer.BadParameter as err:
        raise typer.BadParameter(f"--seeds: {err}") from err
    if not seed_list:
        raise typer.BadParameter(f"--seeds names no seed: {seeds!r}")
    if len(set(seed_list)) != len(seed_list):
        raise typer.BadParameter(f"--seeds repeat: {seeds}")
    if not all(0 <= s <= MAX_SEED for s in seed_list):  # checked before any training
        raise typer.BadParameter(f"--seeds must be between 0 and {MAX_SEED}: {seeds}")
    config = TrainConfig(epochs, batch_size, learning_rate, rho, seed_list[0], limit)
    converted = parse_runtimes(runtimes, CONVERTED_RUNTIMES)
    trained = train_variants(names, data, config, models, converted, extra_seeds=seed_list[1:])
    failed = [
        f"{t.metadata.variant}@{runtime}"
        for t in trained
        for runtime, entry in t.metadata.runtimes.items()
        if isinstance(entry, FailedConversion)
    ]
    if failed:  # the SavedModels are published all the same; the command says what failed
        console.print(f"[red]{len(failed)} conversion(s) failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)


def export(
    variants: Annotated[
        list[str],
        typer.Argument(help="Variants whose exported version gets the runtimes' artifacts."),
    ],
    runtime: Annotated[
        str,
        typer.Option(
            "--runtime",
            "--runtimes",
            help="Comma-separated runtimes to convert to: onnx, litert, openvino.",
        ),
    ] = ALL_CONVERTED,
    version: Annotated[
        int | None, typer.Option(min=1, help="Version to convert. Default: the latest.")
    ] = None,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    data: DataOption = None,
) -> None:
    """Convert already exported versions for other runtimes, in place, checked on test digits.

    Exits 1 if any conversion fails (the SavedModel and the other artifacts are kept).
    """
    from modelrepo.layout import ModelRepository, RepositoryError
    from modelrepo.runtimes import RuntimeLoadError
    from training.export import export_runtimes
    from training.pipeline import conversion_printer

    wanted = parse_runtimes(runtime, CONVERTED_RUNTIMES)
    if not wanted:
        raise typer.BadParameter("name at least one runtime", param_hint="--runtime")
    check_data_path(data)
    repository = ModelRepository(models)
    try:
        versions = [repository.get(name, version) for name in variants]
    except RepositoryError as err:
        raise typer.BadParameter(str(err)) from err
    mnist = load_data(data)
    failed = 0
    for model in versions:
        console.print(f"[bold]{model.variant}[/] version {model.version}: {', '.join(wanted)}")
        try:
            done = export_runtimes(model, mnist, wanted, conversion_printer(console, model.variant))
        except (RepositoryError, RuntimeLoadError) as err:  # no metadata, or no SavedModel
            console.print(f"[red]{model.variant} version {model.version} cannot be read:[/] {err}")
            failed += len(wanted)
            continue
        failed += sum("error" in entry for entry in done.values())
    if failed:
        console.print(f"[red]{failed} conversion(s) failed[/] (see above)")
        raise typer.Exit(1)
