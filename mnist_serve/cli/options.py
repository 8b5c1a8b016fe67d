"""What the commands share: the console, common options and the parsing of option values
(each error a ``BadParameter``, exit code 2)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from modelrepo.layout import CONVERTED_RUNTIMES, RUNTIME_NAMES
from service.settings import Settings
from training import catalog

# Outside a terminal Rich assumes 80 columns, which folds every table; logs and CI get 120.
console = Console(width=None if sys.stdout.isatty() else 120)

# Where models and runs live: Settings' defaults and environment variables, which `serve`
# reads, so that every command finds what the others wrote.
ENV_PREFIX = Settings.model_config.get("env_prefix", "")
DEFAULT_MODELS_DIR: Path = Settings.model_fields["models_dir"].default
MODELS_ENV = f"{ENV_PREFIX}MODELS_DIR"
RUNS_ENV = f"{ENV_PREFIX}RUNS_DIR"
ALL_CONVERTED = ",".join(CONVERTED_RUNTIMES)
DEFAULT_SLO = "p99=20ms"
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
    typer.Option(
        "--models",
        envvar=MODELS_ENV,
        help="Model repository: <models>/<variant>/<version>/ SavedModels.",
    ),
]
RatesOption = Annotated[
    str,
    typer.Option(
        help="Open loop: comma-separated Poisson arrival rates, requests/s, each run by MLPerf "
        "LoadGen (Server scenario) in order until one is not VALID for the --slo; the search "
        "then bisects between the last two. All VALID: the rate doubles, up to --ceiling."
    ),
]
SloOption = Annotated[
    str,
    typer.Option(
        help="Open loop: the latency target whose highest sustainable arrival rate is searched "
        "for each model, e.g. p99=20ms (failed requests count as over the bound)."
    ),
]
CeilingOption = Annotated[
    str | None,
    typer.Option(
        metavar="auto|REQ/S",
        help="Open loop: when every --rates is VALID, the search doubles the top rate up to "
        "this (req/s) so the models are separated, not tied at the top rate. Default: auto, "
        "the highest rate LoadGen with our client sustains within --slo against a null server "
        "on this machine, calibrated at the start in about ten one-second runs (above it a miss "
        "would be the client's). 0: stop at --rates.",
        show_default=False,
    ),
]
MinRequestsOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Open loop: LoadGen's minimum query count per run (runs at low rates last "
        "longer). LoadGen's early stopping needs 459 for a p99 even with none over the bound; "
        "fewer leaves a rate undecided ('needs N more requests').",
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        help="Closed loop: measure each level in short windows until the 95% interval of every "
        "comparison (candidate over baseline throughput, paired window by window) is within "
        "±this and decided: faster, slower or equivalent (TOST). 'off': exactly --repeats "
        "windows."
    ),
]
BudgetOption = Annotated[
    str,
    typer.Option(
        help="Closed loop: the time budget with --precision, shared by the levels (20s, 5m); "
        "when it is spent, an undecided comparison is reported inconclusive, with the time "
        "that would decide it."
    ),
]


def percent(text: str) -> float:
    """'5%', '0.05' or 'off' -> 0.05, 0.05, 0.0; BadParameter otherwise."""
    cleaned = text.strip().lower()
    if cleaned in ("off", "none", "0", "0%"):
        return 0.0
    try:
        value = float(cleaned[:-1]) / 100 if cleaned.endswith("%") else float(cleaned)
    except ValueError as err:
        raise typer.BadParameter(f"{text!r} is not a precision such as 5% or off") from err
    if not 0 < value < 1:
        raise typer.BadParameter(f"precision {text!r} must be between 0% and 100%")
    return value


PriceOption = Annotated[
    float | None,
    typer.Option(
        "--price-per-hour",
        callback=lambda value: positive("--price-per-hour", value),
        help="The machine's price, USD per hour: the report gives each model's cost per million "
        "inferences at its highest rate within the --slo (open loop), else at its closed-loop "
        "peak throughput.",
        show_default=False,
    ),
]
WattsOption = Annotated[
    float | None,
    typer.Option(
        "--watts",
        callback=lambda value: positive("--watts", value),
        help="The machine's power draw under load, W: the report gives joules per inference "
        "at the same rate. Default: the CPU package power read from RAPL during the run, "
        "where the system offers it.",
        show_default=False,
    ),
]


def positive(name: str, value: float | None) -> float | None:
    """A number that must be above 0 when given (BadParameter otherwise)."""
    if value is not None and not 0 < value < float("inf"):
        raise typer.BadParameter(f"{name} must be a positive number, got {value}")
    return value


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


def parse_runtimes(text: str, allowed: tuple[str, ...] = RUNTIME_NAMES) -> tuple[str, ...]:
    """'onnx,litert' -> ('onnx', 'litert'); 'none' or '' -> (); BadParameter for unknown names."""
    if text.strip().lower() in ("", "none"):
        return ()
    names = csv(text, str)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise typer.BadParameter(f"unknown runtimes {list(unknown)}; known: {', '.join(allowed)}")
    return names


def csv(text: str, convert: Callable[[str], T]) -> tuple[T, ...]:
    """'1, 8,32' -> (1, 8, 32) with ``convert``; BadParameter naming the bad value."""
    try:
        return tuple(convert(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise typer.BadParameter(f"{text!r}: {err}") from err


def seconds(text: str, minimum: int = 1) -> int:
    """'20s', '2m' -> whole seconds, at least ``minimum``; BadParameter otherwise."""
    from loadtests.runner import parse_duration

    try:
        return parse_duration(text, minimum)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err


def runs_dir() -> Path:
    """Where runs go: $MNIST_SERVE_RUNS_DIR (whose reports `serve`'s page lists), else
    Settings' default, ``runs``."""
    return Path(os.environ.get(RUNS_ENV) or Settings.model_fields["runs_dir"].default)


def default_out(prefix: str) -> Path:
    """``runs/<prefix>-<time>``: where a run goes when no --out is given."""
    return runs_dir() / f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}"
