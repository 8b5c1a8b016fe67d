"""What the commands print with Rich: a written report, a load test's progress, the history."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from loadtests import steal
from mnist_serve.cli.options import console

if TYPE_CHECKING:
    from loadtests.analysis import RunComparison
    from loadtests.changes import Change
    from loadtests.decision import Stop
    from loadtests.openloop_results import ClientCeiling, ClientRun, OpenLoopRecord, RatePoint
    from loadtests.results import LoadPlan, Step, StepResult
    from loadtests.sequential import Estimate
    from loadtests.session import Sweep
    from loadtests.stats import Interval


def announce_report(folder: Path) -> None:
    """Write the report of a results folder and print where it is, the claims and the verdict."""
    from loadtests.claims import Verdict
    from loadtests.report import build_report
    from loadtests.results import ResultsError

    try:
        written = build_report(folder)
    except ResultsError as err:
        console.print(f"[red]cannot report on {folder}:[/] {err}")
        raise typer.Exit(1) from err
    console.print(f"Report: {written.html}  (also {written.markdown})")
    if written.answer is not None:
        found = written.answer
        console.print(f"[bold]Deploy {found.recommended}[/]: {found.why}.")
        for name, text in (
            ("Effect", found.effect),
            ("Cost in accuracy", found.cost),
            ("Cost to serve", found.price),
        ):
            if text:
                console.print(f"  [bold]{name}:[/] {text.replace('**', '')}")
        if found.changes:
            console.print("  [bold]What would change the answer:[/]")
            for change in found.changes:
                console.print(f"    - {change}")
    elif written.bottom_line:
        console.print(f"[bold]{written.bottom_line}[/]")
    header, rows = written.comparisons
    if rows:
        table = Table(title="Comparisons: throughput, candidate over baseline (>1 = faster)")
        keep = [0, 1, 2, 3, 4, 8]  # p50, p99 and pairs are in the report
        for index in keep:
            table.add_column(header[index])
        colours = {"faster": "green", "slower": "red", "equivalent": "cyan"}
        for row in rows:
            colour = colours.get(row[8], "yellow")
            table.add_row(*[row[i] for i in keep[:-1]], f"[{colour}]{row[8]}[/]")
        console.print(table)
    if written.claims:
        from loadtests.claims import Kind

        colours = {Verdict.HOLDS: "green", Verdict.DOES_NOT: "red"}
        shown = [
            f"{c.claim.split(' (')[0]} [{colours.get(c.verdict, 'yellow')}]{c.verdict}[/]"
            for c in written.claims
            if c.kind not in (Kind.THROUGHPUT, Kind.RATE)  # those are the comparisons above
        ]
        console.print("The seed study's other claims: " + "; ".join(shown) + " (report: all)")
    for line in written.verdict:
        console.print(f"  • {line}")


class ConsoleListener:
    """A load-test session's progress on the console: a bar over the closed-loop steps with a
    line per step, a line per open-loop run (a :class:`loadtests.session.Listener`)."""

    def __init__(self, verbose: bool = False) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.verbose = verbose  # a line per window, not only per check
        self.told_steal = False  # a window's CPU steal over steal.NOISY was said

    def service_starting(self, models: Path) -> None:
        """Say a service is being started."""
        console.print(f"starting a service on 127.0.0.1 from {models}/ ...")

    def closed_loop_started(self, plan: LoadPlan, url: str) -> None:
        """Announce the plan and start the progress bar."""
        windows = f"{plan.repeats} windows of {plan.duration_s} s per model and level"
        if plan.precision > 0:
            from loadtests.decision import MIN_PAIRS

            least = max(plan.repeats, MIN_PAIRS)
            windows = f"{least} windows of {plan.duration_s} s per model and level"
            budget = f", budget {plan.budget_s / 60:.1f} min" if plan.budget_s else ""
            windows = (
                f"at least {windows}, more until each ratio is within ±{plan.precision:.0%}{budget}"
            )
        else:
            windows += f", about {plan.seconds / 60:.1f} min"
        console.print(
            f"Load test of {', '.join(plan.models())} over {', '.join(plan.protocols)} "
            f"at {url}: {windows}"
        )
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.progress = Progress(*columns, console=console)
        self.progress.start()
        self.task = self.progress.add_task("starting", total=len(plan.steps()))

    def step(self, step: Step, index: int, total: int, result: StepResult | None) -> None:
        """Move the bar; print a finished step's figures."""
        if self.progress is None or self.task is None:
            return
        if result is None:
            self.progress.update(
                self.task,
                total=total,
                description=f"{step.concurrency} clients, windows from {step.repeat + 1}",
            )
            return
        self.progress.update(self.task, total=total, completed=index + 1)
        if steal.noisy(result.cpu_steal) and not self.told_steal:
            self.told_steal = True  # once a run: the report counts the windows
            self.progress.console.print(
                f"[yellow]CPU steal {steal.percent(result.cpu_steal)} in a window: the "
                "hypervisor is giving this machine's CPU to someone else, so figures read "
                f"slower and noisier than the machine is; {steal.ADVICE}[/]"
            )
        if result.failed:
            self.progress.console.print(
                f"{step.target!s:>20} c={step.concurrency:<3} w{step.repeat + 1}: [red]FAILED[/]: "
                f"{result.errors} of {result.requests} requests failed: "
                f"{escape(result.failure_line)}",
                highlight=False,
            )
            return
        if self.verbose or result.errors or result.warnings:
            p = result.latency_ms
            self.progress.console.print(
                f"{step.target!s:>20} c={step.concurrency:<3} w{step.repeat + 1}: "
                f"{result.throughput_rps:8.1f} req/s  p50 {p.p50:.3f} ms  p99 {p.p99:.3f} ms  "
                f"errors {result.errors}  accuracy {result.accuracy:.2%}"
                + steal.note(result.cpu_steal)
                + (f"  [yellow]{escape(result.failure_line)}[/]" if result.errors else "")
                + "".join(f"  [yellow]{w}[/]" for w in result.warnings)
            )

    def level_checked(self, level: int, estimates: list[Estimate], stop: Stop | None) -> None:
        """A line per headline ratio after each Locust run, and how the level ended."""
        if self.progress is None:
            return
        out = self.progress.console
        for e in estimates:
            t = e.throughput
            width = f" ±{t.half_width:.1%}" if t.half_width == t.half_width else ""
            out.print(
                f"  c={level:<3} {e.candidate} vs {e.baseline}: {t}{width} after {t.n} "
                f"window pairs: [bold]{e.decision}[/]"
            )
        if stop is not None:
            extra = (
                f"; about {stop.needed_pairs} pairs would settle it"
                if stop.needed_pairs and not stop.settled
                else ""
            )
            out.print(
                f"  c={level}: {stop.reason} after {stop.pairs} windows per model "
                f"({stop.seconds:.0f} s){extra}"
            )

    def closed_loop_finished(self) -> None:
        """Stop the bar."""
        if self.progress is not None:
            self.progress.stop()
        self.progress, self.task = None, None

    def open_loop_started(self, plan: LoadPlan, sweep: Sweep) -> None:
        """Announce the search."""
        from loadtests.openloop_results import ClientCeiling
        from loadtests.session import AUTO
        from loadtests.slo import WARMUP_S

        rates = ", ".join(f"{r:g}" for r in sweep.rates)
        if sweep.ceiling == AUTO:
            top = "doubling up to the client's own ceiling, calibrated first"
        elif isinstance(sweep.ceiling, ClientCeiling):
            top = f"doubling up to the client's ceiling, {sweep.ceiling.summary}"
        elif sweep.ceiling:
            top = f"doubling up to {sweep.ceiling:,.0f} req/s"
        else:
            top = "stopping at the top rate (--ceiling 0)"
        console.print(
            f"Open loop (MLPerf LoadGen, Server scenario): {', '.join(plan.models())} at {rates} "
            f"req/s (each run at least {sweep.seconds} s and {sweep.min_requests:,} requests "
            f"after {WARMUP_S:g} s of warm-up; LoadGen judges each rate VALID or INVALID), then "
            f"the highest VALID rate within {sweep.slo} by bisection, the models in alternating "
            f"order; if every rate is met, {top}"
        )

    def client_run(self, run: ClientRun) -> None:
        """A line per calibration run against the null server."""
        colour = "green" if run.valid else "red"
        console.print(f"  [{colour}]{escape(run.summary)}[/]")

    def client_calibrated(self, ceiling: ClientCeiling) -> None:
        """The ceiling the search will stop at."""
        console.print(f"The open loop's ceiling: {ceiling.summary}")
        if ceiling.unmeasurable:
            from loadtests.openloop_results import UNMEASURABLE

            console.print(f"[red]{escape(UNMEASURABLE)}[/]")

    def rate_point(self, point: RatePoint) -> None:
        """A line per open-loop run, with LoadGen's verdict."""
        colour = "green" if point.met else ("yellow" if point.undecided else "red")
        console.print(
            f"{point.model:>22} {point.rate:8.1f}/s: {point.ok}/{point.requests} ok, "
            f"p50 {point.latency_ms.p50:.2f} p99 {point.latency_ms.p99:.2f} ms, "
            f"[{colour}]{point.verdict}[/]"
            + {1: "", 2: " (second run)"}.get(point.runs, f" (run {point.runs})")
            + steal.note(point.cpu_steal)
        )

    def open_loop_finished(self, record: OpenLoopRecord, data: Path) -> None:
        """Each model's highest rate, and where the results are."""
        from loadtests.openloop_tables import same_runtime_baseline
        from loadtests.rate_claims import not_separated, rate_figure, rate_ratio

        for model in record.models:
            base = same_runtime_baseline(record.models, model)  # as the claims compare
            ratio = ""
            if model != base and base in record.max_rate:
                ratio = f" (vs {base}: {rate_ratio(record, model, base)})"
            console.print(
                f"[bold]{model}[/]: {rate_figure(record, model)} req/s within {record.slo}{ratio}"
            )
        if len(record.models) > 1 and all(record.open_ended(m) for m in record.models):
            console.print(f"[yellow]{not_separated(record)}[/]")
        console.print(f"Open-loop results: {data}  (LoadGen's logs: {data.parent / 'loadgen'})")

    def stored(self, run_id: int, path: Path) -> None:
        """Where the run went in the history."""
        console.print(f"History: run {run_id} in {path}")


def load_test_failed(err: Exception) -> None:
    """Print why the load test failed."""
    console.print(f"[red]load test failed:[/] {escape(str(err))}", highlight=False)


def comparison(compared: RunComparison) -> None:
    """Two runs side by side: speedups, throughputs, open-loop rates, and what moved."""
    first, second = compared.before, compared.after
    if not compared.comparable:
        console.print(
            "[yellow]the runs differ in models, levels, payloads, CPU or service options "
            "(--tuned): compare with care[/]"
        )
    for title, changes, unit in (
        ("Speedup (throughput ratio)", compared.speedups, "x"),
        ("Throughput, req/s", compared.throughputs, ""),
        ("p99 latency", compared.p99s, " ms"),
    ):
        if changes:
            heading = f"{title}: run {first.id} -> run {second.id}"
            console.print(change_table(heading, changes, unit, first.id, second.id))
    if compared.rates:
        table = Table(
            title=f"Open loop, highest rate within the SLO: run {first.id} -> run {second.id} "
            "(moved = the search brackets do not overlap)"
        )
        for column in ("model", "SLO", f"run {first.id}", f"run {second.id}", "ratio", "moved"):
            table.add_column(column)
        for rate in compared.rates:
            table.add_row(
                rate.model,
                rate.slo,
                f"{rate.before[0]:,.0f}/s",
                f"{rate.after[0]:,.0f}/s",
                f"{rate.ratio:.2f}x",
                "[bold]yes[/]" if rate.moved else "no",
            )
        console.print(table)


def change_table(title: str, changes: list[Change], unit: str, first: int, second: int) -> Table:
    """One figure per target and level in two runs, with whether it moved."""
    table = Table(title=title)
    for column in ("model", "clients", f"run {first}", f"run {second}", "ratio", "moved"):
        table.add_column(column)
    for change in changes:
        table.add_row(
            change.name,
            str(change.level),
            shown(change.before, unit),
            shown(change.after, unit),
            f"{change.ratio:.2f}x",
            "[bold]yes[/]" if change.moved else "no",
        )
    return table


def shown(interval: Interval, unit: str) -> str:
    """A mean and its interval: throughputs as whole numbers, ratios and latencies with two
    decimals."""
    digits = 2 if unit else 0
    text = f"{interval.mean:,.{digits}f}{unit}"
    if interval.low == interval.low:  # not NaN
        text += f" [{interval.low:,.{digits}f}, {interval.high:,.{digits}f}]"
    return text
