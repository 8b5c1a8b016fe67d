"""Train several variants in a row with a progress display, export each, and tabulate them.

This is what ``mnist-serve train`` and ``mnist-serve demo`` run; the pieces it strings together
(load, train, export) each live in their own module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

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

from modelrepo.layout import CONVERTED_RUNTIMES, ModelRepository
from modelrepo.metadata import ModelMetadata
from training import catalog
from training.convert import ConversionError, Converted
from training.data import Mnist
from training.export import OnConverted, export_model
from training.seeds import summarize
from training.train import TrainConfig, batches_per_epoch, train_variant


@dataclass(frozen=True)
class Trained:
    """What one variant's training produced: its metadata and where it was exported."""

    metadata: ModelMetadata
    path: Path


def train_and_export(
    variant_names: Sequence[str],
    data: Mnist,
    config: TrainConfig,
    models_dir: Path,
    console: Console,
    runtimes: Sequence[str] = CONVERTED_RUNTIMES,
    extra_seeds: Sequence[int] = (),
) -> list[Trained]:
    """Train and export each named variant (with ``runtimes``' artifacts), showing progress.

    With ``extra_seeds``, each variant is also trained once per extra seed (not exported) and
    the exported version's metadata gets the seeds' summary (training.seeds).
    """
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
            progress.update(task, description=f"{name:>16} (converting)")
            exported = export_model(
                result, data, repository, runtimes, conversion_printer(progress.console, name)
            )
            progress.console.print(f"[green]exported[/] {name} -> {exported.path}")
            if extra_seeds:
                runs = [result]
                for seed in extra_seeds:
                    progress.reset(task, description=f"{name:>16} (seed {seed})")
                    runs.append(
                        train_variant(
                            catalog.get(name), data, replace(config, seed=seed), on_epoch, on_batch
                        )
                    )
                summary = summarize(
                    [r.config.seed for r in runs],
                    [round(r.test_accuracy, 6) for r in runs],
                    [r.epoch_seconds for r in runs],
                )
                metadata = exported.load_metadata()
                exported.save_metadata(metadata.model_copy(update={"seeds": summary}))
                progress.console.print(
                    f"{name}: test accuracy over seeds {summary.seeds}: mean {summary.mean:.2%}, "
                    f"sd {summary.std * 100:.2f} points, "
                    f"95% CI {summary.low:.2%}-{summary.high:.2%}"
                )
            done.append(Trained(exported.load_metadata(), exported.path))
    return done


def conversion_printer(console: Console, variant: str) -> OnConverted:
    """A callback that prints each conversion's outcome as it finishes."""

    def show(runtime: str, outcome: Converted | ConversionError) -> None:
        if isinstance(outcome, ConversionError):
            console.print(f"[red]{variant}: {runtime} conversion failed:[/] {outcome.cause}")
            return
        console.print(
            f"{variant}: {runtime:<8} {outcome.artifact} in {outcome.convert_seconds:.1f} s, "
            f"max diff {outcome.max_abs_diff:.1e}, test acc {outcome.test_accuracy:.2%}, "
            f"batch 1 {outcome.batch1_ms:.3f} ms"
        )

    return show


def figures_table(trained: Sequence[Trained]) -> Table:
    """The trained variants side by side: parameters, MACs, accuracy, loss and timings."""
    table = Table(title="Trained variants")
    for column in (
        "variant",
        "version",
        "parameters",
        "MACs/image",
        "test acc",
        "test loss",
        "s/epoch",
        "train s",
        "SavedModel",
        "runtimes",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for item in trained:
        m = item.metadata
        per_epoch = sum(m.epoch_seconds) / len(m.epoch_seconds)
        table.add_row(
            m.variant,
            str(m.version),
            f"{m.parameters:,}",
            f"{m.macs:,}",
            f"{m.test_accuracy:.2%}",
            f"{m.test_loss:.4f}",
            f"{per_epoch:.1f}",
            f"{m.training_seconds:.1f}",
            f"{m.savedmodel_bytes / 1e6:.2f} MB",
            ", ".join(["savedmodel", *sorted(m.usable_runtimes())]),
        )
    return table
