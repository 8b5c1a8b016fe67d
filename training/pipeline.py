"""Train several variants in a row with a progress display, export each, and tabulate them.

This is what ``mnist-serve train`` and ``mnist-serve demo`` run; the pieces it strings together
(load, train, export) each live in their own module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mnist_serve.repository import ModelRepository
from training import catalog
from training.data import Mnist
from training.export import export_model
from training.train import TrainConfig, batches_per_epoch, train_variant


@dataclass(frozen=True)
class Trained:
    """What one variant's training produced: its metadata and where it was exported."""

    metadata: dict[str, Any]
    path: Path


def train_and_export(
    variant_names: Sequence[str],
    data: Mnist,
    config: TrainConfig,
    models_dir: Path,
    console: Console,
) -> list[Trained]:
    """Train and export each named variant in turn, showing per-batch and per-epoch progress."""
    repository = ModelRepository(models_dir)
    train_images = len(data.limited(config.limit).x_train)
    steps = config.epochs * batches_per_epoch(train_images, config.batch_size)
    done: list[Trained] = []
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        for name in variant_names:
            task = progress.add_task(f"{name:>16}", total=steps)

            def on_epoch(
                epoch: int, seconds: float, logs: dict[str, float], name: str = name
            ) -> None:
                progress.console.print(
                    f"{name}: epoch {epoch}/{config.epochs}  {seconds:6.1f} s  "
                    f"loss {logs.get('loss', float('nan')):.4f}  "
                    f"acc {logs.get('accuracy', float('nan')):.4f}  "
                    f"val_loss {logs.get('val_loss', float('nan')):.4f}  "
                    f"val_acc {logs.get('val_accuracy', float('nan')):.4f}"
                )

            def on_batch(_batch: int, task: TaskID = task) -> None:
                progress.advance(task)

            result = train_variant(catalog.get(name), data, config, on_epoch, on_batch)
            exported = export_model(result, data, repository)
            done.append(Trained(exported.read_metadata(), exported.path))
            progress.console.print(f"[green]exported[/] {name} -> {exported.path}")
    return done


def figures_table(trained: Sequence[Trained]) -> Table:
    """The trained variants side by side: parameters, MACs, accuracy, loss and timings."""
    table = Table(title="Trained variants")
    for column in ("variant", "version", "parameters", "MACs/image", "test acc", "test loss",
                   "s/epoch", "train s", "SavedModel"):  # fmt: skip
        table.add_column(column, justify="left" if column == "variant" else "right")
    for item in trained:
        m = item.metadata
        per_epoch = sum(m["epoch_seconds"]) / len(m["epoch_seconds"])
        table.add_row(
            m["variant"],
            str(m["version"]),
            f"{m['parameters']:,}",
            f"{m['macs']:,}",
            f"{m['test_accuracy']:.2%}",
            f"{m['test_loss']:.4f}",
            f"{per_epoch:.1f}",
            f"{m['training_seconds']:.1f}",
            f"{m['savedmodel_bytes'] / 1e6:.2f} MB",
        )
    return table
