"""The ``mnist-serve`` command: catalogue, train, serve, load-test, report, and the demo.

Heavy modules (TensorFlow, Locust, matplotlib) are imported inside the commands that need
them, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console

from modelrepo.layout import CONVERTED_RUNTIMES, RUNTIME_NAMES
from service.settings import Settings
from training import catalog

if TYPE_CHECKING:
    from loadtests.results import LoadPlan, Slo
    from loadtests.runner import Target
    from loadtests.stats import Interval
    from modelrepo.layout import ModelRepository
    from training.data import Mnist
    from training.train import TrainConfig

app = typer.Typer(
    help="Train, serve and load-test MNIST CNN variants: "
    "is the 'optimized' one faster when served?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Outside a terminal Rich assumes 80 columns, which folds every table; logs and CI get 120.
console = Console(width=None if sys.stdout.isatty() else 120)

DEFAULT_MODELS_DIR = Path("models")
ALL_CONVERTED = ",".join(CONVERTED_RUNTIMES)
T = TypeVar("T")

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="MNIST as a Keras-layout .npz or a folder of the four IDX .gz files. "
        "Default: $MNIST_DATA, else download with Keras (needs internet).",
        show_default=False,
    ),
]
RuntimesToConvert = Annotated[
    str,
    typer.Option(
        help="Runtimes to convert each export to, checked against the SavedModel "
        "(onnx, litert, openvino; 'none' for the SavedModel only)."
    ),
]
ModelsOption = Annotated[
    Path,
    typer.Option("--models", help="Model repository: <models>/<variant>/<version>/ SavedModels."),
]
RatesOption = Annotated[
    str,
    typer.Option(
        help="Open loop: comma-separated Poisson arrival rates, requests/s, tried in order "
        "until one misses the --slo; the search then bisects between the last two."
    ),
]
SloOption = Annotated[
    str,
    typer.Option(
        help="Open loop: the latency target whose highest sustainable arrival rate is searched "
        "for each model, e.g. p99=20ms (failed requests count as infinitely slow)."
    ),
]
DEFAULT_SLO = "p99=20ms"
# The demo's open-loop runs are as long as --min-requests needs (1,000 requests: 5 s at
# 200/s, 1.25 s at 800/s), at least this: the search then takes about 30 s per model.
DEMO_OPEN_LOOP_S = 1
MinRequestsOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Open loop: measured requests per run at least (runs at low rates last longer): "
        "a p99 over fewer than ~1,000 hangs on a handful of requests.",
    ),
]


def check_variants(names: list[str] | None) -> list[str]:
    """Reject unknown variant names with the list of known ones (exit code 2)."""
    for name in names or []:
        if name not in catalog.names():
            raise typer.BadParameter(
                f"unknown variant {name!r}. Known: {', '.join(catalog.names())}"
            )
    return names or []


def check_data_path(path: Path | None) -> Path | None:
    """Reject a --data path that does not exist before any slow import (exit code 2)."""
    if path is not None and not path.exists():
        raise typer.BadParameter(f"{path} does not exist (expected an .npz file or IDX folder)")
    return path


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
) -> None:
    """Load MNIST (exit 2 on a bad source), train and export ``names``, print their figures."""
    from training.pipeline import figures_table, train_and_export

    mnist = load_data(data)
    console.print(f"training {names}; converting to {', '.join(runtimes) or 'no other runtime'}")
    trained = train_and_export(names, mnist, config, models, console, runtimes, extra_seeds)
    console.print(figures_table(trained))


def parse_runtimes(text: str, allowed: tuple[str, ...] = RUNTIME_NAMES) -> tuple[str, ...]:
    """'onnx,litert' -> ('onnx', 'litert'); 'none' or '' -> (); BadParameter for unknown names."""
    if text.strip().lower() in ("", "none"):
        return ()
    names = _csv(text, str)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise typer.BadParameter(f"unknown runtimes {list(unknown)}; known: {', '.join(allowed)}")
    return names


def announce_report(folder: Path) -> None:
    """Write the report of a results folder and print where it is, the claims and the verdict."""
    from rich.table import Table

    from loadtests.report import build_report
    from loadtests.results import ResultsError

    try:
        written = build_report(folder)
    except ResultsError as err:
        console.print(f"[red]cannot report on {folder}:[/] {err}")
        raise typer.Exit(1) from err
    console.print(f"Report: {written.html}  (also {written.markdown})")
    if written.bottom_line:
        console.print(f"[bold]{written.bottom_line}[/]")
    if written.claims:
        table = Table(title="The seed study's claims against this run")
        for column in ("claim", "reference", "measured", "verdict"):
            table.add_column(column)
        colours = {"holds": "green", "does not": "red"}
        for c in written.claims:
            colour = colours.get(c.verdict, "yellow")
            table.add_row(c.claim, c.reference, c.measured, f"[{colour}]{c.verdict}[/]")
        console.print(table)
    for line in written.verdict:
        console.print(f"  • {line}")


@app.command("variants")
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


@app.command("train")
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
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 12,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 128,
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="Adadelta learning rate (the reference used 1.0).")
    ] = 1.0,
    rho: Annotated[float, typer.Option(min=0.0, max=1.0, help="Adadelta rho.")] = 0.95,
    data: DataOption = None,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N training images only.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (Python, NumPy, TensorFlow).")] = 1337,
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
    each conversion is checked against the SavedModel on the 10,000 test digits.
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
        seed_list = _csv(seeds, int) if seeds else (seed,)
    except typer.BadParameter as err:
        raise typer.BadParameter(f"--seeds: {err}") from err
    if len(set(seed_list)) != len(seed_list):
        raise typer.BadParameter(f"--seeds repeat: {seeds}")
    config = TrainConfig(epochs, batch_size, learning_rate, rho, seed_list[0], limit)
    train_variants(names, data, config, models, parse_runtimes(runtimes, CONVERTED_RUNTIMES),
                   extra_seeds=seed_list[1:])  # fmt: skip


@app.command("export")
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
        done = export_runtimes(model, mnist, wanted, conversion_printer(console, model.variant))
        failed += sum("error" in entry for entry in done.values())
    if failed:
        console.print(f"[red]{failed} conversion(s) failed[/] (see above)")
        raise typer.Exit(1)


def settings_options(
    fields: type[BaseModel], flags: dict[str, str]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a ``**given`` command one ``--option`` per field of a settings class.

    Each option takes its help from the field's description and its default from the field
    (shown, not passed: an option left out is left to the MNIST_SERVE_* variable, then the
    default), so the settings are written once, in service.settings. Lists and mappings are
    typed as text and parsed by the settings' own validators. ``flags`` renames options.
    """

    def option_type(annotation: Any) -> Any:
        if annotation in (bool, int, float, Path):
            return annotation
        return str  # str, Literal, comma-separated lists, 'name=value' mappings

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        parameters = []
        for name, info in fields.model_fields.items():
            default = info.get_default(call_default_factory=True)
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            if isinstance(default, dict):
                shown = ",".join(f"{k}={v}" for k, v in default.items())
            hint = f"{info.description or ''} (default: {shown if shown != '' else 'none'})"
            option = typer.Option(
                *([flags[name]] if name in flags else []), help=hint.strip(), show_default=False
            )
            kind = option_type(info.annotation)
            parameters.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[kind | None, option],
                )
            )
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate


@app.command("serve")
@settings_options(Settings, flags={"models_dir": "--models"})
def serve(**given: Any) -> None:
    """Serve every exported variant on every runtime found (POST /predict/<variant>).

    Address a runtime with ?runtime=onnx or by the model name <variant>@<runtime>
    (POST /predict/depthwise@onnx); GET /variants lists what serves where. Open
    http://127.0.0.1:8000/ for the web page: draw a digit, see every model answer.

    Every option can also come from a MNIST_SERVE_* environment variable (MNIST_SERVE_PORT,
    MNIST_SERVE_MODELS_DIR, ...); an option given here wins over the variable.
    """
    from pydantic import ValidationError

    from service.device import DeviceError
    from service.registry import ConfigError
    from service.server import run

    try:
        settings = Settings.model_validate({k: v for k, v in given.items() if v is not None})
        run(settings)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in err.errors()
        )
        console.print(f"[red]invalid settings:[/] {problems}")
        raise typer.Exit(2) from err
    except (ConfigError, DeviceError) as err:
        console.print(f"[red]cannot serve:[/] {err}")
        raise typer.Exit(2) from err


def _csv(text: str, convert: Callable[[str], T]) -> tuple[T, ...]:
    try:
        return tuple(convert(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise typer.BadParameter(f"{text!r}: {err}") from err


def _seconds(text: str, minimum: int = 1) -> int:
    from loadtests.runner import parse_duration

    try:
        return parse_duration(text, minimum)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err


def _default_out(prefix: str) -> Path:
    from datetime import datetime

    return Path("runs") / f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}"


@dataclass(frozen=True)
class Sweep:
    """An open-loop sweep to run after (or instead of) the closed-loop steps."""

    rates: tuple[float, ...]
    slo: Slo
    seconds: int
    min_requests: int

    @classmethod
    def parse(cls, rates: str, slo: str, seconds: int, min_requests: int) -> Sweep:
        """From the command line's --rates and --slo; BadParameter when malformed."""
        from loadtests.results import Slo

        try:
            target, arrival_rates = Slo.parse(slo), _csv(rates, float)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from err
        if not arrival_rates or min(arrival_rates) <= 0:
            raise typer.BadParameter("--rates must be positive numbers")
        return cls(arrival_rates, target, seconds, min_requests)


def run_load_test(
    plan: LoadPlan,
    out: Path,
    url: str | None,
    models: Path,
    server_args: tuple[str, ...] = (),
    grpc_url: str | None = None,
    sweep: Sweep | None = None,
    closed: bool = True,
) -> None:
    """Run ``plan`` (closed loop) and/or ``sweep`` (open loop) against ``url``, or against one
    service started here for both; then store, write and announce the report."""
    from rich.markup import escape

    from loadtests.runner import LoadTestError, target_service

    out.mkdir(parents=True, exist_ok=True)
    if url is None:
        console.print(f"starting a service on 127.0.0.1 from {models}/ ...")
    try:
        with target_service(url, grpc_url, models, out, server_args,
                            grpc="kserve-grpc" in plan.protocols) as target:  # fmt: skip
            if closed:
                console.print(
                    f"Load test of {', '.join(plan.models())} over {', '.join(plan.protocols)} "
                    f"at {target.url}: {len(plan.steps())} steps, about "
                    f"{plan.seconds / 60:.1f} min"
                )
                run_closed_loop(plan, out, target, server_args)
            if sweep is not None:
                run_sweep(plan, sweep, out, target.url)
    except LoadTestError as err:
        console.print(f"[red]load test failed:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(1) from err
    from loadtests import history
    from loadtests.results import OpenLoopRecord, RunRecord

    path = history.default_path(out.parent)
    run_id = history.store(path, out, plan, RunRecord.load(out) if closed else None,
                           OpenLoopRecord.load(out) if sweep else None)  # fmt: skip
    console.print(f"History: run {run_id} in {path}")
    if closed:
        announce_report(out)


def run_closed_loop(
    plan: LoadPlan, out: Path, target: Target, server_args: tuple[str, ...]
) -> None:
    """The Locust steps of ``plan`` with a progress bar and a line per finished step."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loadtests.results import Step, StepResult
    from loadtests.runner import run_plan

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("starting", total=len(plan.steps()))

        def on_step(step: Step, index: int, total: int, result: StepResult | None) -> None:
            if result is None:
                progress.update(
                    task,
                    description=f"{step.target or step.model} @ {step.concurrency} clients, "
                    f"repeat {step.repeat + 1}/{plan.repeats}",
                )
                return
            progress.advance(task)
            p = result.latency_ms
            progress.console.print(
                f"{step.target or step.model:>20} c={step.concurrency:<3} r{step.repeat + 1}: "
                f"{result.throughput_rps:8.1f} req/s  p50 {p.p50:.3f} ms  p99 {p.p99:.3f} ms  "
                f"errors {result.errors}  accuracy {result.accuracy:.2%}"
                + "".join(f"  [yellow]{w}[/]" for w in result.warnings)
            )

        run_plan(plan, out, target, server_args, on_step)


def run_sweep(plan: LoadPlan, sweep: Sweep, out: Path, url: str) -> None:
    """The open-loop sweep and SLO search (loadtests/slo.py), a line per run."""
    from loadtests import slo
    from loadtests.results import RatePoint

    rates = ", ".join(f"{r:g}" for r in sweep.rates)
    console.print(
        f"Open loop: {', '.join(plan.models())} at {rates} req/s (each run at least "
        f"{sweep.seconds} s and {sweep.min_requests:,} requests after {slo.WARMUP_S:g} s of "
        "warm-up; a miss is run again and judged on both), then the highest rate within "
        f"{sweep.slo} by bisection, the models in alternating order"
    )

    def show(point: RatePoint) -> None:
        console.print(
            f"{point.model:>22} {point.rate:8.1f}/s: {point.ok}/{point.requests} ok, "
            f"p50 {point.latency_ms.p50:.2f} p99 {point.latency_ms.p99:.2f} ms, "
            f"SLO {'met' if point.met else '[red]missed[/]'}"
            + (" (2 runs pooled)" if point.runs > 1 else "")
        )

    record = slo.run_sweep(url, plan.models(), sweep.rates, sweep.seconds, sweep.slo, out,
                           plan.mnist or None, on_point=show,
                           min_requests=sweep.min_requests)  # fmt: skip
    base = record.models[0]
    for model in record.models:
        rate = record.max_rate[model]
        ratio = f" ({record.ratio_to(model, base):.2f}x {base})" if model != base else ""
        console.print(f"[bold]{model}[/]: {rate:,.0f} req/s within {sweep.slo}{ratio}")
    from loadtests.report import write_openloop_report

    console.print(
        f"Open-loop results: {write_openloop_report(out)}  (data: {out / 'openloop.json'})"
    )


@app.command("loadtest")
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
        "1,8,32,64"
    ),
    duration: Annotated[str, typer.Option(help="Measured time per step (20s, 1m).")] = "20s",
    warmup: Annotated[
        str, typer.Option(help="Unrecorded warm-up at the start of each step.")
    ] = "3s",
    repeats: Annotated[
        int, typer.Option(min=1, help="Repeats per level, in alternating order.")
    ] = 3,
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
            "poisson: open loop, requests at scheduled Poisson times whatever the answers "
            "(--rates, --slo), latency from the scheduled time."
        ),
    ] = "closed",
    rates: RatesOption = "100,200,400,800",
    slo: SloOption = DEFAULT_SLO,
    min_requests: MinRequestsOption = 1000,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    data: DataOption = None,
) -> None:
    """Drive every variant x runtime with identical load; write a side-by-side report.

    Closed loop (default): Locust users at each concurrency level. Open loop
    (--arrival poisson): requests at each --rates, then the highest rate meeting --slo per
    model, found by bisection; results in openloop.md and openloop.json.
    """
    from loadtests.results import LoadPlan

    check_data_path(data)
    if arrival not in ("closed", "poisson"):
        raise typer.BadParameter(f"--arrival is closed or poisson, not {arrival!r}")
    try:
        plan = LoadPlan(
            variants=_csv(variants, str),
            runtimes=parse_runtimes(runtimes),
            protocols=_csv(protocol, str),
            concurrency=_csv(concurrency, int),
            duration_s=_seconds(duration),
            warmup_s=_seconds(warmup, minimum=0),
            repeats=repeats,
            mode=mode,
            processes=processes,
            mnist=str(data) if data else "",
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    if arrival == "poisson":
        if plan.protocols != ("native",) or plan.mode != "json":
            raise typer.BadParameter("open loop sends JSON over the native protocol only (for now)")
        sweep = Sweep.parse(rates, slo, plan.duration_s, min_requests)
        run_load_test(plan, out or _default_out("openloop"), url, models, sweep=sweep,
                      closed=False)  # fmt: skip
        return
    run_load_test(plan, out or _default_out("loadtest"), url, models, grpc_url=grpc_url)


history_app = typer.Typer(
    help="Past load tests, stored in runs/history.sqlite ($MNIST_SERVE_HISTORY to move it).",
    no_args_is_help=False,
)
app.add_typer(history_app, name="history")
HistoryOption = Annotated[
    Path | None,
    typer.Option("--history", help="History file. Default: $MNIST_SERVE_HISTORY, else "
                 "runs/history.sqlite.", show_default=False),
]  # fmt: skip


@history_app.callback(invoke_without_command=True)
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
    for column in ("id", "when", "folder", "models", "closed loop: clients x repeats",
                   "open loop: max rate within SLO", "CPU"):  # fmt: skip
        table.add_column(column)
    for run in history.runs(path):
        plan = run.plan
        models = ", ".join(plan.variants) + (
            f" on {', '.join(plan.runtimes)}" if plan.runtimes else ""
        )
        closed = history.throughputs(path, run.id)
        rates = history.rates(path, run.id)
        table.add_row(
            str(run.id), run.created_at, Path(run.folder).name, models,
            f"{','.join(map(str, plan.concurrency))} x {plan.repeats}" if closed else "-",
            ", ".join(f"{m} {r:,.0f}/s ({slo})" for (m, slo), (r, _) in rates.items()) or "-",
            run.machine.cpu,
        )  # fmt: skip
    console.print(table)


@history_app.command("compare")
def history_compare(
    before: Annotated[str, typer.Argument(help="A run: its id or folder.")],
    after: Annotated[str, typer.Argument(help="Another run: its id or folder.")],
    history_file: HistoryOption = None,
) -> None:
    """What changed between two runs, level by level, with 95% intervals over repeats: the
    speedup of each variant over the first, then each model's throughput."""
    from rich.table import Table

    from loadtests import history
    from loadtests.report import comparisons

    path = history_file or history.default_path(Path("runs"))
    try:
        first, second = history.get(path, before), history.get(path, after)
    except KeyError as err:
        raise typer.BadParameter(str(err.args[0])) from err
    if first.comparable != second.comparable:
        console.print("[yellow]the runs differ in models, levels, payloads or CPU: "
                      "compare with care[/]")  # fmt: skip
    pairs = [(b, c) for kind, b, c in comparisons(second.plan) if kind == "variant"]
    speedups = history.compare_speedups(path, first, second, pairs)
    throughputs = history.compare(path, first, second)
    for title, changes, unit in (
        ("Speedup (throughput ratio)", speedups, "x"),
        ("Throughput, req/s", throughputs, ""),
    ):
        if not changes:
            continue
        table = Table(title=f"{title}: run {first.id} -> run {second.id}")
        for column in ("model", "clients", f"run {first.id}", f"run {second.id}", "ratio",
                       "moved"):  # fmt: skip
            table.add_column(column)
        for change in changes:
            table.add_row(change.target, str(change.level), shown(change.before, unit),
                          shown(change.after, unit), f"{change.ratio:.2f}x",
                          "[bold]yes[/]" if change.moved else "no")  # fmt: skip
        console.print(table)
    rate_changes = history.compare_rates(path, first, second)
    if rate_changes:
        table = Table(title=f"Open loop, highest rate within the SLO: run {first.id} -> "
                      f"run {second.id} (moved = the search brackets do not overlap)")  # fmt: skip
        for column in ("model", "SLO", f"run {first.id}", f"run {second.id}", "ratio", "moved"):
            table.add_column(column)
        for rate in rate_changes:
            table.add_row(rate.model, rate.slo, f"{rate.before[0]:,.0f}/s",
                          f"{rate.after[0]:,.0f}/s", f"{rate.ratio:.2f}x",
                          "[bold]yes[/]" if rate.moved else "no")  # fmt: skip
        console.print(table)


def shown(interval: Interval, unit: str) -> str:
    """A mean and its interval: throughputs as whole numbers, ratios with two decimals."""
    digits = 2 if unit else 0
    text = f"{interval.mean:,.{digits}f}{unit}"
    if interval.low == interval.low:  # not NaN
        text += f" [{interval.low:,.{digits}f}, {interval.high:,.{digits}f}]"
    return text


@app.command("report")
def report(
    folder: Annotated[Path, typer.Argument(help="A load-test results folder (with results.json).")],
) -> None:
    """Rebuild report.md and report.html from a load test's recorded results."""
    if not (folder / "results.json").is_file():
        hint = (
            " (an open-loop run alone: its report is openloop.md)"
            if (folder / "openloop.json").is_file()
            else ""
        )
        raise typer.BadParameter(f"{folder} holds no results.json{hint}")
    announce_report(folder)


def demo_runtimes(repository: ModelRepository) -> tuple[str, ...]:
    """savedmodel and the converted runtime with the fastest batch-1 time for the last variant."""
    metadata = repository.get(catalog.SEED_VARIANTS[-1]).read_metadata()
    timed = {
        name: entry["batch1_ms"]
        for name, entry in metadata.get("runtimes", {}).items()
        if "batch1_ms" in entry
    }
    return ("savedmodel", min(timed, key=timed.__getitem__)) if timed else ("savedmodel",)


@app.command("demo")
def demo(
    epochs: Annotated[
        int, typer.Option(min=1, help="Epochs if models must be trained (12 = the reference run).")
    ] = 2,
    models: ModelsOption = DEFAULT_MODELS_DIR,
    data: DataOption = None,
    concurrency: Annotated[str, typer.Option(help="Concurrent-client levels.")] = "1,8,32",
    duration: Annotated[str, typer.Option(help="Measured time per step.")] = "4s",
    runtimes: Annotated[
        str | None,
        typer.Option(
            help="Runtimes to compare. Default: savedmodel and the fastest other runtime "
            "found at export.",
            show_default=False,
        ),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats per level.")] = 3,
    rates: Annotated[
        str,
        typer.Option(
            help="Open-loop Poisson arrival rates (requests/s) after the closed-loop steps, "
            "each run measuring --min-requests requests (at least 1 s); 'none' to skip the "
            "open loop."
        ),
    ] = "200,400,800,1600",
    slo: SloOption = DEFAULT_SLO,
    min_requests: MinRequestsOption = 1000,
    out: Annotated[
        Path | None, typer.Option(help="Results folder. Default: runs/demo-<time>.")
    ] = None,
) -> None:
    """The main job: train the seed models if missing, serve them, load-test both, report.

    Both variants are compared on the SavedModel and on the fastest other runtime (the
    smallest batch-1 time the exports recorded for the depthwise model): closed loop (clients
    that wait for each answer) at each --concurrency, then open loop (Poisson arrivals at
    --rates) with the highest rate each model sustains within --slo.
    """
    from loadtests.results import LoadPlan
    from modelrepo.layout import ModelRepository

    check_data_path(data)
    sweep = (
        None
        if rates.strip().lower() == "none"
        else Sweep.parse(rates, slo, DEMO_OPEN_LOOP_S, min_requests)
    )
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
    chosen = parse_runtimes(runtimes) if runtimes is not None else demo_runtimes(repository)
    console.print(
        f"[bold]2/2[/] serving both on {' and '.join(chosen)}, load-testing under identical load"
    )
    plan = LoadPlan(
        variants=catalog.SEED_VARIANTS,
        runtimes=chosen,
        concurrency=_csv(concurrency, int),
        duration_s=_seconds(duration),
        warmup_s=1,  # the models are warm already: this only lets connections settle
        repeats=repeats,
        mnist=str(data) if data else "",
    )
    run_load_test(plan, out or _default_out("demo"), None, models, sweep=sweep)


if __name__ == "__main__":
    app()
