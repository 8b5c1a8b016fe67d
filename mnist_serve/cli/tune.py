"""``mnist-serve tune``: each model's best serving configuration under the SLO, saved beside it
for ``serve --tuned`` (the workflow is :mod:`loadtests.tune`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mnist_serve.cli.options import (
    DEFAULT_MODELS_DIR,
    DEFAULT_SLO,
    DataOption,
    ModelsOption,
    SloOption,
    check_data_path,
    console,
    default_out,
    seconds,
)


def tune(
    models_to_tune: Annotated[
        list[str],
        typer.Argument(
            metavar="MODEL...",
            help="Models to tune: variant@runtime (a bare variant means its SavedModel).",
        ),
    ],
    budget: Annotated[
        str, typer.Option(help="Time for the whole search (5m, 90s), shared by the models.")
    ] = "5m",
    slo: SloOption = DEFAULT_SLO,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Fractions of a second per measurement (for the tests)."),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Report folder. Default: runs/tune-<time>.")
    ] = None,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    data: DataOption = None,
) -> None:
    """Find each model's best serving configuration under the --slo, as Model Analyzer does.

    Searches max batch size (1, 8, 16, 32, 64), max wait (0, 0.25, 1, 2 ms), intra-op threads
    (1, 2) and workers (one process, one per core), one at a time from the defaults: the
    highest Poisson rate within the SLO wins, the lowest p50 at one client breaks ties. Saves
    the best to <models>/<variant>/tuned.json, which `serve --tuned` (and `loadtest --tuned`)
    apply, if it met the SLO; says what the budget left out. Exits 1 when no model got a
    configuration saved (every trial failed, none met the SLO, or none fitted the budget).
    """
    from loadtests.openloop_results import Slo
    from loadtests.runner import LoadTestError
    from loadtests.tune import run_tune
    from loadtests.tune_results import Trial
    from modelrepo.layout import ModelName, ModelRepository

    check_data_path(data)
    try:
        target = Slo.parse(slo)
        names = [ModelName.parse(text) for text in models_to_tune]
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    names = [ModelName(n.variant, n.runtime or "savedmodel") for n in names]
    repository = ModelRepository(models)
    for name in names:
        versions = repository.versions(name.variant)
        if not versions or (name.runtime or "savedmodel") not in versions[-1].runtimes():
            raise typer.BadParameter(f"{name} is not exported under {models}")
    budget_s = seconds(budget)

    def show(model: str, trial: Trial | None, text: str) -> None:
        if trial is None:
            console.print(f"  {model}: [yellow]{escape(text)}[/]")
        else:
            console.print(
                f"  {model}: {escape(text)}: {trial.max_rate:,.0f} req/s within {target}, "
                f"p50 {trial.p50_ms:.3f} ms ({trial.seconds:.0f} s)"
            )

    console.print(
        f"tuning {', '.join(map(str, names))} under {target} within {budget_s} s "
        "(a service started per configuration; without --quick, the client's ceiling "
        "calibrated first)"
    )
    folder = out or default_out("tune")
    try:
        record, page, run_id = run_tune(
            models,
            names,
            target,
            budget_s,
            folder,
            quick,
            show,
            str(data) if data else None,
            lambda run: console.print(f"  {escape(run.summary)}"),
        )
    except LoadTestError as err:
        console.print(f"[red]tune failed:[/] {escape(str(err))}")
        raise typer.Exit(1) from err
    from loadtests.tune_report import verdict

    if record.client is not None:
        console.print(escape(record.client.search_note))
    for tuning in record.models:
        console.print(f"[bold]{escape(verdict(tuning))}[/]")
        if tuning.skipped:
            console.print(f"  skipped for the budget: {escape(', '.join(tuning.skipped))}")
        if tuning.failed:
            console.print(f"  [red]failed to serve[/]: {escape('; '.join(tuning.failed))}")
    console.print(f"Report: {page}; stored in the history as tune run {run_id}")
    if not any(tuning.saved for tuning in record.models):
        console.print("[red]no configuration saved for any model[/] (see above)")
        raise typer.Exit(1)
