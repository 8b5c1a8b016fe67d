"""``mnist-serve history``, ``history compare`` and ``history check``: past load tests, two side
by side, and a regression gate for CI (:mod:`loadtests.gate`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mnist_serve.cli.options import console, runs_dir

if TYPE_CHECKING:
    from rich.table import Table

    from loadtests import gate

app = typer.Typer(
    help="Past load tests, stored in runs/history.sqlite ($MNIST_SERVE_HISTORY to move it; "
    "runs/ is $MNIST_SERVE_RUNS_DIR when set).",
    no_args_is_help=False,
)
HistoryOption = Annotated[
    Path | None,
    typer.Option(
        "--history",
        help="History file. Default: $MNIST_SERVE_HISTORY, else history.sqlite in "
        "$MNIST_SERVE_RUNS_DIR, else runs/history.sqlite.",
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

    path = history_file or history.default_path(runs_dir())
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
    speedup of each variant over the first, then each model's throughput and p99."""
    from loadtests import history
    from loadtests.analysis import compare_runs
    from mnist_serve.cli.render import comparison

    path = history_file or history.default_path(runs_dir())
    if not path.is_file():  # reading would create an empty one
        raise typer.BadParameter(f"no history at {path}: run `mnist-serve loadtest` first")
    try:
        first, second = history.get(path, before), history.get(path, after)
    except KeyError as err:
        raise typer.BadParameter(str(err.args[0])) from err
    comparison(compare_runs(path, first, second))


@app.command("check")
def history_check(
    run: Annotated[
        str | None,
        typer.Argument(
            help="The run to judge: its id or folder. Default: the latest.", show_default=False
        ),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            help="The run to judge it against, stored before it. Default: the latest earlier run "
            "with the same plan (models, runtimes, protocols, levels, payloads) on the same CPU, "
            "against a service started with the same options (--tuned...), measured the same "
            "way (closed loop, open loop or both).",
            show_default=False,
        ),
    ] = None,
    max_regression: Annotated[
        str,
        typer.Option(
            help="How much worse a figure may get (5% or 0.05): a throughput, speedup or "
            "open-loop rate lower, or a p99 higher, by more than this, with 95% confidence "
            "over all the figures together (Bonferroni), fails the check."
        ),
    ] = "5%",
    show_all: Annotated[
        bool, typer.Option("--all", help="Show every figure compared, not only what moved.")
    ] = False,
    pass_if_nothing: Annotated[
        bool,
        typer.Option(
            "--pass-if-nothing-to-compare",
            help="Exit 0, not 2, when there is no earlier run to compare with (a CI history's "
            "first run). A mistyped option, an unknown run or a history file that is not there "
            "still exits 2, so none passes the gate the way `|| [ $? -eq 2 ]` lets it.",
        ),
    ] = False,
    history_file: HistoryOption = None,
) -> None:
    """A regression gate for CI: exit 1 when a speedup, a throughput, a p99 or an open-loop
    rate got worse beyond both its interval (95% for all the figures together) and
    --max-regression; 0 otherwise; 2 when there is nothing to compare (0 with
    --pass-if-nothing-to-compare) or an option is wrong. The rule is in loadtests/gate.py."""
    from loadtests import gate, history

    try:
        threshold = gate.parse_threshold(max_regression)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    path = history_file or history.default_path(runs_dir())
    if not path.is_file():  # a wrong path (or runs dir): never "nothing to compare", a pass
        raise typer.BadParameter(f"no history at {path}: run `mnist-serve loadtest` first")
    try:
        before, after = gate.pick_runs(path, run, against)
        judged = gate.check(path, before, after, threshold)
    except KeyError as err:
        raise typer.BadParameter(str(err.args[0])) from err
    except ValueError as err:  # --against not before the run: a usage error
        raise typer.BadParameter(str(err)) from err
    except gate.NothingToCompare as err:
        console.print(f"[yellow]history check: nothing to compare:[/] {err}", highlight=False)
        raise typer.Exit(0 if pass_if_nothing else 2) from err
    if before.comparable != after.comparable:
        console.print(
            "[yellow]the runs differ in models, levels, payloads, CPU or service options "
            "(--tuned): judged on what they share[/]"
        )
    rows = judged.judged if show_all else judged.moved
    if rows:
        console.print(gate_table(judged, rows))
    outcome = "[red bold]FAIL[/]" if judged.failed else "[green bold]PASS[/]"
    console.print(f"{outcome} {judged.summary()}", highlight=False)
    for j in judged.regressions:
        where = f" at {j.level} clients" if j.level is not None else ""
        console.print(
            f"  regressed: {j.metric} of {j.subject}{where}: {j.metric.shown(j.before)} -> "
            f"{j.metric.shown(j.after)} ({j.change.mean - 1:+.1%}, CI "
            f"{j.change.low - 1:+.1%} to {j.change.high - 1:+.1%})",
            highlight=False,
        )
    if judged.failed:
        raise typer.Exit(1)


def gate_table(judged: gate.Gate, rows: list[gate.Judged]) -> Table:
    """What moved: each figure in the two runs, its change and interval, the verdict."""
    from rich.table import Table

    table = Table(
        title=f"run {judged.before.id} -> run {judged.after.id} (change = new/old - 1, "
        "Welch interval over repeats, 95% for all the figures together; regressed = worse "
        f"beyond {judged.threshold:.0%} with that confidence)"
    )
    for column in (
        "figure",
        "model",
        "clients",
        f"run {judged.before.id}",
        f"run {judged.after.id}",
        "change",
        "95% CI",
        "verdict",
    ):
        table.add_column(column)
    colours = {"regressed": "red bold", "worse, within threshold": "yellow", "better": "green"}
    for j in rows:
        c = j.change
        interval = "-" if math.isnan(c.low) else f"{c.low - 1:+.1%} to {c.high - 1:+.1%}"
        colour = colours.get(j.verdict, "")
        table.add_row(
            str(j.metric),
            j.subject,
            str(j.level) if j.level is not None else "open loop",
            j.metric.shown(j.before),
            j.metric.shown(j.after),
            f"{c.mean - 1:+.1%}",
            interval,
            f"[{colour}]{j.verdict}[/]" if colour else str(j.verdict),
        )
    return table
