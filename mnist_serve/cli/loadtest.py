"""``mnist-serve loadtest`` and ``report``: drive the models with identical load, report.

The workflow itself is :mod:`loadtests.session`; this module turns options into its plan and
shows its progress (:class:`mnist_serve.cli.render.ConsoleListener`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from loadtests import defaults
from mnist_serve.cli.options import (
    DEFAULT_MODELS_DIR,
    DEFAULT_SLO,
    BudgetOption,
    CeilingOption,
    DataOption,
    MinRequestsOption,
    ModelsOption,
    PrecisionOption,
    PriceOption,
    RatesOption,
    SloOption,
    WattsOption,
    check_data_path,
    console,
    csv,
    default_out,
    parse_runtimes,
    percent,
    seconds,
)
from mnist_serve.cli.render import ConsoleListener, announce_report, load_test_failed

if TYPE_CHECKING:
    from loadtests.cost import Pricing
    from loadtests.protocols import Protocol
    from loadtests.results import LoadPlan
    from loadtests.session import Outcome, Sweep


def parse_sweep(
    rates: str, slo: str, duration_s: int, min_requests: int, ceiling: str | None = None
) -> Sweep:
    """The open-loop sweep of --rates, --slo and --ceiling (None: auto); BadParameter when
    malformed."""
    from loadtests.session import AUTO, Sweep

    try:
        return Sweep.parse(
            rates, slo, duration_s, min_requests, AUTO if ceiling is None else ceiling
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err


def parse_protocols(text: str) -> tuple[Protocol, ...]:
    """'native,kserve-grpc' -> the protocols; BadParameter naming unknown ones."""
    from loadtests.protocols import PROTOCOLS, Protocol

    names = csv(text, str)
    unknown = [name for name in names if name not in PROTOCOLS]
    if unknown:
        raise typer.BadParameter(f"unknown protocols {unknown}; known: {', '.join(PROTOCOLS)}")
    return tuple(Protocol(name) for name in names)


def run_load_test(
    plan: LoadPlan,
    out: Path,
    url: str | None,
    models: Path,
    grpc_url: str | None = None,
    sweep: Sweep | None = None,
    closed: bool = True,
    pricing: Pricing | None = None,
    server_args: tuple[str, ...] = (),
    announce: bool = True,
    history_path: Path | None = None,
) -> Outcome:
    """Run a load-test session with its progress on the console, then write and show its
    report (every mode; unless ``announce`` is False); exit 1 if the load test fails (or a
    step had no success)."""
    from loadtests import session
    from loadtests.runner import LoadTestError

    try:
        listener = ConsoleListener()
        outcome = session.run_load_test(
            plan,
            out,
            url,
            models,
            listener,
            server_args=server_args,
            grpc_url=grpc_url,
            sweep=sweep,
            closed=closed,
            pricing=pricing,
            history_path=history_path,
        )
    except LoadTestError as err:
        load_test_failed(err)
        raise typer.Exit(1) from err
    if announce:
        announce_report(out)
    record = outcome.closed
    if record is not None and record.stalled_steps:
        first = record.stalled_steps[0]
        console.print(
            f"[yellow]{len(record.stalled_steps)} of {len(record.steps)} windows finished no "
            f"request while the same model's other windows served (first: {first.target} at "
            f"{first.concurrency} client(s), window {first.repeat + 1}): a stall of the machine "
            "or the client, left out of the comparisons; see the report[/]"
        )
    if record is not None and record.broken_steps:
        # The report and the history are written; the command still says the run failed.
        first = record.broken_steps[0]
        load_test_failed(
            LoadTestError(
                f"{len(record.broken_steps)} of {len(record.steps)} steps had no successful "
                f"request (first: {first.target} at {first.concurrency} client(s), "
                f"{first.failure_line}); see the report"
            )
        )
        raise typer.Exit(1)
    return outcome


def run_tuned(
    plan: LoadPlan,
    out: Path,
    models: Path,
    grpc_url: str | None,
    sweep: Sweep | None,
    closed: bool,
    pricing: Pricing | None = None,
) -> None:
    """``--tuned``: the plan at the defaults (in ``out/defaults``), then with every model at
    its tuned configuration (in ``out``), and whether the answer differs. Both runs go in the
    history beside ``out`` (the defaults run is an ordinary run, comparable with others)."""
    import dataclasses

    from loadtests import history
    from loadtests.tuned_compare import answer_in, compare

    console.print("[bold]1/2: at the service's defaults[/]")
    before = run_load_test(
        plan,
        out / "defaults",
        None,
        models,
        grpc_url,
        sweep,
        closed,
        pricing,
        announce=False,
        history_path=history.default_path(out.parent),
    )
    console.print("[bold]2/2: each model at its tuned configuration (serve --tuned)[/]")
    if sweep is not None and before.openloop is not None and before.openloop.client is not None:
        # One ceiling for both runs: the client's, as calibrated before the first.
        sweep = dataclasses.replace(sweep, ceiling=before.openloop.client)
    after = run_load_test(
        plan, out, None, models, grpc_url, sweep, closed, pricing, ("--tuned",), announce=False
    )
    answers = (answer_in(out / "defaults"), answer_in(out))
    comparison = compare(
        after.served, (before.closed, before.openloop), (after.closed, after.openloop), answers
    )
    comparison.save(out)
    for model, config in comparison.configs.items():
        console.print(f"  {model}: {config}")
    announce_report(out)
    console.print(f"[bold]{comparison.verdict()}[/]")


def loadtest(
    url: Annotated[
        str | None,
        typer.Option(help="Service to test, e.g. http://127.0.0.1:8000. Default: start one here."),
    ] = None,
    variants: Annotated[str, typer.Option(help="Comma-separated; the first is the baseline.")] = (
        "original,depthwise"
    ),
    runtimes: Annotated[
        str,
        typer.Option(
            help="Comma-separated runtimes to drive each variant on (savedmodel, onnx, litert, "
            "openvino); the first is the baseline of the runtime comparison. "
            "Default: the server's default runtime."
        ),
    ] = "",
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            "--protocols",
            help="Comma-separated protocols: native (/predict), tfserving (TF Serving REST), "
            "kserve-http (KServe V2 REST, binary tensors), kserve-grpc (KServe V2 gRPC). "
            "Several: each model is driven over each, and compared with the first.",
        ),
    ] = "native",
    grpc_url: Annotated[
        str | None,
        typer.Option(
            help="host:port of the server's KServe V2 gRPC endpoint, for kserve-grpc with "
            "--url. Without --url the service started here gets one."
        ),
    ] = None,
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrent-client levels.")] = (
        defaults.CLI_CONCURRENCY
    ),
    duration: Annotated[
        str, typer.Option(help="One measurement window; models alternate window by window.")
    ] = defaults.CLI_WINDOW,
    warmup: Annotated[
        str,
        typer.Option(
            help="Unrecorded warm-up at the start of each Locust run, shared by the models."
        ),
    ] = defaults.CLI_WARMUP,
    repeats: Annotated[
        int,
        typer.Option(
            min=1,
            help="Windows per model and level: at least these (exactly, with --precision off).",
        ),
    ] = defaults.REPEATS,
    precision: PrecisionOption = defaults.CLI_PRECISION,
    budget: BudgetOption = defaults.CLI_BUDGET,
    mode: Annotated[str, typer.Option(help="Payloads: json (pixels) or png (uploads).")] = "json",
    processes: Annotated[
        int, typer.Option(min=1, help="Locust processes (its distributed mode) to spread the load.")
    ] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Results folder. Default: runs/loadtest-<time>.")
    ] = None,
    arrival: Annotated[
        str,
        typer.Option(
            help="closed: Locust users that wait for each answer (concurrency levels). "
            "poisson: open loop, MLPerf LoadGen's Server scenario: requests at scheduled "
            "Poisson times whatever the answers (--rates, --slo), latency from the scheduled "
            "time, each rate judged VALID or INVALID by LoadGen."
        ),
    ] = "closed",
    rates: RatesOption = defaults.CLI_RATES,
    slo: SloOption = DEFAULT_SLO,
    min_requests: MinRequestsOption = defaults.MIN_REQUESTS,
    ceiling: CeilingOption = None,
    tuned: Annotated[
        bool,
        typer.Option(
            "--tuned",
            help="Compare the models each at its best: run once against a service at its "
            "defaults (in OUT/defaults), once against one started with --tuned (each model "
            "with the configuration `mnist-serve tune` saved), and say whether the answer "
            "differs. Starts its own services (no --url).",
        ),
    ] = False,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    data: DataOption = None,
    price_per_hour: PriceOption = None,
    watts: WattsOption = None,
) -> None:
    """Drive every variant x runtime with identical load; write a side-by-side report.

    Closed loop (default): Locust users at each concurrency level, the models in short
    alternating windows until every comparison is decided within --precision or --budget
    is spent. Open loop (--arrival poisson): MLPerf LoadGen's Server scenario at each
    --rates, judged VALID or INVALID against --slo (with LoadGen's early stopping), then the
    highest VALID rate per model by bisection. Either way: report.md and report.html in the
    results folder.
    """
    from loadtests.cost import Pricing
    from loadtests.protocols import Protocol
    from loadtests.results import LoadPlan

    check_data_path(data)
    pricing = Pricing(price_per_hour, watts)
    if arrival not in ("closed", "poisson"):
        raise typer.BadParameter(f"--arrival is closed or poisson, not {arrival!r}")
    try:
        plan = LoadPlan(
            variants=csv(variants, str),
            runtimes=parse_runtimes(runtimes),
            protocols=parse_protocols(protocol),
            concurrency=csv(concurrency, int),
            duration_s=seconds(duration),
            warmup_s=seconds(warmup, minimum=0),
            repeats=repeats,
            mode=mode,
            processes=processes,
            mnist=str(data) if data else "",
            precision=percent(precision),
            budget_s=seconds(budget),
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    if tuned and url is not None:
        raise typer.BadParameter("--tuned starts its own services: leave out --url")
    if arrival == "poisson":
        if plan.protocols != (Protocol.NATIVE,) or plan.mode != "json":
            raise typer.BadParameter("open loop sends JSON over the native protocol only (for now)")
        sweep = parse_sweep(rates, slo, plan.duration_s, min_requests, ceiling)
        target = out or default_out("openloop")
        if tuned:
            run_tuned(plan, target, models, None, sweep, closed=False, pricing=pricing)
            return
        run_load_test(plan, target, url, models, sweep=sweep, closed=False, pricing=pricing)
        return
    if tuned:
        target = out or default_out("loadtest")
        run_tuned(plan, target, models, grpc_url, None, closed=True, pricing=pricing)
        return
    run_load_test(
        plan, out or default_out("loadtest"), url, models, grpc_url=grpc_url, pricing=pricing
    )


def report(
    folder: Annotated[Path, typer.Argument(help="A load-test results folder (with results.json).")],
) -> None:
    """Rebuild report.md and report.html from a load test's recorded results."""
    if not (folder / "results.json").is_file():
        raise typer.BadParameter(f"{folder} holds no results.json")
    announce_report(folder)
