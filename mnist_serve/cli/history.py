"""``mnist-serve history`` and ``history compare``: past load tests, and two side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mnist_serve.cli.options import console

app = typer.Typer(
    help="Past load tests, stored in runs/history.sqlite ($MNIST_SERVE_HISTORY to move it).",
    no_args_is_help=False,
)
HistoryOption = Annotated[
    Path | None,
    typer.Option(
        "--history",
        help="History file. Default: $MNIST_SERVE_HISTORY, else runs/history.sqlite.",
        show_default=False,
    ),
]


@app.callback(invoke_without_command=True)
def history_list(ctx: typer.Context, history_file: HistoryOption = None) -> None:
    """List the stored load tests (newest last); `history compare A B` sets two side by side."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from loadtests import history

    path = history_file or history.default_path(Path("runs"))
    if not path.is_file():
        console.print(f"no history yet at {path}: run `mnist-serve loadtest` first")
        return
    table = Table(title=f"Load tests in {path}")
    columns = (
        "id",
        "when",
        "folder",
        "models",
        "closed loop: clients x repeats",
        "open loop: max rate within SLO",
        "CPU",
    )
    for column in columns:
        table.add_column(column)
    for run in history.runs(path):
        plan = run.plan
        runtimes = f" on {', '.join(plan.runtimes)}" if plan.runtimes else ""
        closed = history.throughputs(path, run)
        rates = history.rates(path, run.id)
        table.add_row(
            str(run.id),
            run.created_at,
            Path(run.folder).name,
            ", ".join(plan.variants) + runtimes,
            f"{','.join(map(str, plan.concurrency))} x {plan.repeats}" if closed else "-",
            ", ".join(f"{m} {r:,.0f}/s ({slo})" for (m, slo), (r, _) in rates.items()) or "-",
            run.machine.cpu,
        )
    console.print(table)
    show_studies(path)


def show_studies(path: Path) -> None:
    """The explore and tune runs stored beside the load tests, if any."""
    from rich.table import Table

    from loadtests.studies import studies

    found = studies(path)
    if not found:
        return
    table = Table(title=f"Explore and tune runs in {path}")
    for column in ("id", "kind", "when", "folder", "summary"):
        table.add_column(column)
    for study in found:
        table.add_row(
            str(study.id), study.kind, study.created_at, Path(study.folder).name, study.summary
        )
    console.print(table)


@app.command("compare")
def history_compare(
    before: Annotated[str, typer.Argument(help="A run: its id or folder.")],
    after: Annotated[str, typer.Argument(help="Another run: its id or folder.")],
    history_file: HistoryOption = None,
) -> None:
    """What changed between two runs, level by level, with 95% intervals over repeats: the
    speedup of each variant over the first, then each model's throughput."""
    from loadtests import history
    from loadtests.analysis import compare_runs
    from mnist_serve.cli.render import comparison

    path = history_file or history.default_path(Path("runs"))
    try:
        first, second = history.get(path, before), history.get(path, after)
    except KeyError as err:
        raise typer.BadParameter(str(err.args[0])) from err
    comparison(compare_runs(path, first, second))
