"""``mnist-serve explore``: a family of models, trained if missing, served on every runtime,
measured, and set on a Pareto front of accuracy against served speed.

The workflow is :mod:`loadtests.explore`; this module turns options into its plan and draws its
progress (a bar per phase with the time left).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mnist_serve.cli.options import (
    DEFAULT_MODELS_DIR,
    DEFAULT_SLO,
    DataOption,
    ModelsOption,
    SloOption,
    check_data_path,
    console,
    csv,
    parse_runtimes,
    runs_dir,
)

if TYPE_CHECKING:
    from loadtests.explore_report import ExploreReport
    from loadtests.openloop_results import ClientCeiling, ClientRun


class ExploreProgress:
    """Explore's progress on the console (a :class:`loadtests.explore.ExploreListener`)."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def training(self, variants: list[str]) -> None:
        """Say which variants are trained first."""
        console.print(f"training the variants not exported yet: {', '.join(variants)}")

    def phase(self, name: str, total: int, seconds_each: float) -> None:
        """A bar over the phase's models with the estimated time left."""
        self._close()
        console.print(f"{name}: {total} models, about {total * seconds_each / 60:.1f} min")
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
        )
        self.progress.start()
        self.task = self.progress.add_task(name, total=total)

    def model_done(self, model: str, summary: str) -> None:
        """A line per model, and the bar advanced."""
        if self.progress is not None and self.task is not None:
            self.progress.console.print(f"  {model:<28} {escape(summary)}")
            self.progress.advance(self.task)

    def skipped(self, models: list[str]) -> None:
        """Say what is kept from before."""
        console.print(
            f"{len(models)} models measured before are kept (--again re-measures them): "
            f"{', '.join(models)}"
        )

    def client_run(self, run: ClientRun) -> None:
        """A line per calibration run against the null server."""
        self._close()
        console.print(f"  {escape(run.summary)}")

    def client_calibrated(self, ceiling: ClientCeiling, kept: bool) -> None:
        """The ceiling every model's search stops at."""
        where = " (kept from the run resumed)" if kept else ""
        console.print(f"The open loop's ceiling{where}: {escape(ceiling.summary)}")
        if ceiling.unmeasurable:
            from loadtests.openloop_results import UNMEASURABLE

            console.print(f"[red]{escape(UNMEASURABLE)}[/]")

    def finished(self, report: ExploreReport, run_id: int) -> None:
        """Where the report is, the answer, the front."""
        self._close()
        console.print(f"Report: {report.html}  (also {report.markdown}, {report.json})")
        console.print(f"[bold]{escape(report.answer)}[/]")
        if report.warning:
            console.print(f"[yellow]{escape(report.warning)}[/]")
        front = [r.m.model for r in report.ranked if r.rank_p50 == 1]
        console.print(f"Pareto front (accuracy vs p50 at one client): {', '.join(front)}")
        console.print(f"stored in the history as explore run {run_id}")


def explore(
    family: Annotated[
        str,
        typer.Option(help="The family to explore: all, seed, kernels, strides, padding, pooling."),
    ] = "all",
    variants: Annotated[
        str,
        typer.Option(
            help="Comma-separated variants of the family to explore (train if missing, "
            "measure, report), e.g. small-stride2,small-stride4. Default: all of them."
        ),
    ] = "",
    epochs: Annotated[
        int, typer.Option(min=1, help="Epochs for the variants trained because missing.")
    ] = 2,
    runtimes: Annotated[
        str,
        typer.Option(help="Comma-separated runtimes to measure. Default: every one exported."),
    ] = "",
    slo: SloOption = DEFAULT_SLO,
    again: Annotated[
        bool, typer.Option("--again", help="Re-measure models measured before.")
    ] = False,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="A short version (for the tests): training on 2,000 images for 1 epoch, "
            "fractions of a second per measurement. Its figures are not to be quoted.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Results folder; a re-run resumes from its explore.json (unless the SLO or "
            "the budget, --quick or not, changed: then it starts afresh). Default: "
            "runs/explore ($MNIST_SERVE_RUNS_DIR/explore).",
            show_default=False,
        ),
    ] = None,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    data: DataOption = None,
) -> None:
    """Measure every variant@runtime of a family through HTTP and set them on a Pareto front.

    Trains what is missing, serves every model on one service, and measures each: p50/p99 at
    one client, throughput at 32, the highest Poisson rate within the --slo, and its time alone
    at batch 1 and 32. Writes explore.md, explore.html and explore.json into --out.
    """
    from loadtests.explore import QUICK_TRAIN_LIMIT, ExplorePlan, run_explore
    from loadtests.explore_report import ExploreError
    from loadtests.openloop_results import Slo
    from loadtests.runner import LoadTestError
    from training.data import DataError

    check_data_path(data)
    if runtimes.strip().lower() == "none":  # explore measures served runtimes
        raise typer.BadParameter("name runtimes to measure, or leave out --runtimes for all")
    try:
        plan = ExplorePlan(
            family=family,
            chosen=tuple(dict.fromkeys(csv(variants, str))),
            models_dir=models,
            out=out or runs_dir() / "explore",
            runtimes=parse_runtimes(runtimes) or ExplorePlan.runtimes,
            epochs=1 if quick else epochs,
            train_limit=QUICK_TRAIN_LIMIT if quick else None,
            slo=Slo.parse(slo),
            again=again,
            quick=quick,
            mnist=str(data) if data else "",
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    listener = ExploreProgress()
    try:
        run_explore(plan, console, listener)
    except DataError as err:  # MNIST unreadable: the same exit as every command's --data
        listener._close()
        console.print(f"[red]error:[/] {escape(str(err))}")
        raise typer.Exit(2) from err
    except (LoadTestError, ExploreError) as err:
        listener._close()
        console.print(f"[red]explore failed:[/] {escape(str(err))}")
        raise typer.Exit(1) from err
