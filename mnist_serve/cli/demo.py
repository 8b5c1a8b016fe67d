"""``mnist-serve demo``: the main job. Train the seed models if missing, serve them,
load-test both (closed loop, then open loop), report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadtests import defaults
from mnist_serve.cli.loadtest import parse_sweep, run_load_test
from mnist_serve.cli.models import train_variants
from mnist_serve.cli.options import (
    DEFAULT_MODELS_DIR,
    DEFAULT_SLO,
    ENV_PREFIX,
    BudgetOption,
    CeilingOption,
    DataOption,
    MinRequestsOption,
    ModelsOption,
    PrecisionOption,
    PriceOption,
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
from training import catalog


def check_device() -> None:
    """Exit 2 when $MNIST_SERVE_DEVICE (what the demo's service will read) asks for a GPU this
    machine does not have."""
    import os

    from service.device import DeviceError, gpu_wanted
    from service.settings import Settings

    device = os.environ.get(f"{ENV_PREFIX}DEVICE") or Settings.model_fields["device"].default
    try:
        gpu_wanted(device)
    except DeviceError as err:
        console.print(f"[red]cannot serve:[/] {err}")
        raise typer.Exit(2) from err


def demo(
    epochs: Annotated[
        int, typer.Option(min=1, help="Epochs if models must be trained (12 = the reference run).")
    ] = 2,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    data: DataOption = None,
    concurrency: Annotated[str, typer.Option(help="Concurrent-client levels.")] = (
        defaults.CLI_DEMO_CONCURRENCY
    ),
    duration: Annotated[
        str, typer.Option(help="One measurement window; the models alternate window by window.")
    ] = defaults.CLI_DEMO_WINDOW,
    runtimes: Annotated[
        str | None,
        typer.Option(
            help="Runtimes to compare. Default: savedmodel and the fastest other runtime "
            "found at export.",
            show_default=False,
        ),
    ] = None,
    repeats: Annotated[int, typer.Option(min=2, help="Windows per model and level, at least.")] = (
        defaults.REPEATS
    ),
    precision: PrecisionOption = defaults.CLI_PRECISION,
    budget: BudgetOption = defaults.CLI_DEMO_BUDGET,
    rates: Annotated[
        str,
        typer.Option(
            help="Open-loop Poisson arrival rates (requests/s) after the closed-loop steps, "
            "each run measuring --min-requests requests (at least 1 s); 'none' to skip the "
            "open loop."
        ),
    ] = defaults.CLI_DEMO_RATES,
    slo: SloOption = DEFAULT_SLO,
    min_requests: MinRequestsOption = defaults.MIN_REQUESTS,
    ceiling: CeilingOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Results folder. Default: runs/demo-<time>.")
    ] = None,
    price_per_hour: PriceOption = None,
    watts: WattsOption = None,
) -> None:
    """The main job: train the seed models if missing, serve them, load-test both, report.

    Both variants are compared on the SavedModel and on the fastest other runtime (the
    smallest batch-1 time the exports recorded for the depthwise model): closed loop (clients
    that wait for each answer) at each --concurrency, in alternating one-second windows until
    every comparison is decided within --precision or the --budget is spent, then open loop
    (Poisson arrivals at --rates) with the highest rate each model sustains within --slo.
    """
    from loadtests import session
    from loadtests.cost import Pricing
    from loadtests.results import LoadPlan
    from modelrepo.layout import ModelRepository

    check_data_path(data)
    check_device()  # DEVICE=gpu on a machine without one: said now, not after the training
    pricing = Pricing(price_per_hour, watts)
    sweep = (
        None
        if rates.strip().lower() == "none"
        else parse_sweep(rates, slo, defaults.DEMO_OPEN_LOOP_S, min_requests, ceiling)
    )
    given = parse_runtimes(runtimes) if runtimes is not None else None

    def plan_on(chosen: tuple[str, ...]) -> LoadPlan:
        """The closed-loop plan; BadParameter (exit 2) for a bad option."""
        try:
            return session.demo_plan(
                catalog.SEED_VARIANTS,
                chosen,
                csv(concurrency, int),
                seconds(duration),
                repeats,
                str(data) if data else "",
                percent(precision),
                seconds(budget),
            )
        except ValueError as err:
            raise typer.BadParameter(str(err)) from err

    plan_on(("savedmodel",) if given is None else given)  # checked before minutes of training
    repository = ModelRepository(models)
    missing = [name for name in catalog.SEED_VARIANTS if not repository.versions(name)]
    if missing:
        console.print(f"[bold]1/2[/] training {missing} for {epochs} epochs into {models}/")
        from training.train import TrainConfig

        train_variants(missing, data, TrainConfig(epochs=epochs), models)
    else:
        console.print(
            f"[bold]1/2[/] using the models already in {models}/ (delete them to retrain)"
        )
    # --runtimes none: bare names, the server's default runtime; not given: the demo's choice.
    chosen = (
        given if given is not None else session.demo_runtimes(repository, catalog.SEED_VARIANTS[-1])
    )
    on = " and ".join(chosen) or "the server's default runtime"
    console.print(f"[bold]2/2[/] serving both on {on}, load-testing under identical load")
    plan = plan_on(chosen)
    run_load_test(plan, out or default_out("demo"), None, models, sweep=sweep, pricing=pricing)
