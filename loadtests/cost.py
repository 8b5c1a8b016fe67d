"""What an inference costs: dollars per million and joules per inference, at each model's best
rate, with where each number comes from.

The rate: each model's highest Poisson arrival rate within the SLO (the open-loop search,
:mod:`loadtests.slo`), else, with no open-loop search, its closed-loop peak throughput over
the levels (labelled as such: no latency bound). The price: ``--price-per-hour``, the
machine's price in USD. The power: ``--watts``, else the mean RAPL package power over the load
test's loops (:mod:`loadtests.power`), else none, and the report says so. Then::

    USD per million inferences = price_per_hour / (rate_per_s * 3600) * 1e6
    joules per inference       = watts / rate_per_s

A session writes them to ``cost.json`` (:class:`CostRecord`, typed like the other results
files, saved and loaded here); the report shows :func:`cost_table` and :func:`bottom_line`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter, ValidationError

from loadtests.openloop_results import OpenLoopRecord
from loadtests.power import PowerReading
from loadtests.rate_claims import WHY_LOWER_BOUND
from loadtests.results import JSON_CONFIG, SCHEMA, ResultsError, RunRecord

COST_FILE = "cost.json"
SECONDS_PER_HOUR = 3600
NO_PRICE = "no price: give --price-per-hour"


class RateSource(StrEnum):
    """Which rate a cost is at."""

    SLO = "highest rate within the SLO (open loop)"
    CLOSED_PEAK = "closed-loop peak throughput (no open-loop search: no latency bound)"


class WattsSource(StrEnum):
    """Where the power figure comes from."""

    FLAG = "--watts"
    RAPL = "RAPL"
    NONE = "none"


@dataclass(frozen=True)
class Pricing:
    """What the command line gave: the machine's price and power (None: not given)."""

    price_per_hour: float | None = None
    watts: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("--price-per-hour", self.price_per_hour), ("--watts", self.watts)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class ModelCost:
    """One model's cost and energy per inference at its rate."""

    model: str
    rate_per_s: float  # 0: no rate met the SLO
    rate_source: RateSource
    rate_detail: str  # the SLO, or the level of the closed-loop peak
    usd_per_million: float | None  # None: no price, or no rate
    joules_per_inference: float | None  # None: no power figure, or no rate
    # The model met every rate the search tried: its rate is a lower bound, its cost and
    # energy per inference upper bounds (shown ">=" and "<=").
    open_ended: bool = False

    @property
    def bound(self) -> tuple[str, str]:
        """The prefixes of the rate and of the cost figures: (">= ", "<= ") or ("", "")."""
        return (">= ", "<= ") if self.open_ended else ("", "")


@dataclass
class CostRecord:
    """A run's cost and energy per inference: ``cost.json``."""

    __pydantic_config__ = JSON_CONFIG

    price_per_hour: float | None
    watts: float | None  # the figure used: the flag's, or RAPL's mean
    watts_source: WattsSource
    power: PowerReading | None  # the RAPL reading over the loops, when there was one
    power_note: str  # where the watts come from, or why there are none
    models: list[ModelCost]
    schema: int = SCHEMA

    @property
    def price_note(self) -> str:
        """Where the price comes from, or that there is none."""
        if self.price_per_hour is None:
            return NO_PRICE
        return f"${self.price_per_hour:g}/h, from --price-per-hour"

    @property
    def watts_short(self) -> str:
        """The power figure and its source, briefly."""
        if self.watts is None:
            return "no power figure"
        if self.watts_source is WattsSource.RAPL:
            return f"{self.watts:.1f} W, the mean RAPL package power over the run"
        return f"{self.watts:g} W, from --watts"

    def save(self, folder: Path) -> Path:
        """Write ``cost.json`` into ``folder``."""
        path = folder / COST_FILE
        path.write_bytes(TypeAdapter(CostRecord).dump_json(self, indent=2) + b"\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> CostRecord:
        """Read ``folder/cost.json``; :class:`ResultsError` saying what is wrong otherwise."""
        path = folder / COST_FILE
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:
            raise ResultsError(f"cannot read {path}: {err}") from err
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ResultsError(f"{path} is from another mnist-serve (results schema {SCHEMA})")
        try:
            return TypeAdapter(CostRecord).validate_python(data)
        except ValidationError as err:
            raise ResultsError(f"{path} is not a valid CostRecord: {err}") from err


def load(folder: Path) -> CostRecord | None:
    """The run's cost record, if it has one."""
    return CostRecord.load(folder) if (folder / COST_FILE).is_file() else None


def usd_per_million(price_per_hour: float, rate_per_s: float) -> float:
    """What a million inferences cost on a machine at ``price_per_hour`` serving ``rate_per_s``."""
    return price_per_hour / (rate_per_s * SECONDS_PER_HOUR) * 1e6


def joules_per_inference(watts: float, rate_per_s: float) -> float:
    """Energy per inference on a machine drawing ``watts`` while serving ``rate_per_s``."""
    return watts / rate_per_s


def model_rates(
    closed: RunRecord | None, openloop: OpenLoopRecord | None
) -> list[tuple[str, float, RateSource, str, bool]]:
    """(model, rate, source, detail, open-ended) per model: the open-loop search's highest
    rate within the SLO when there was one (open-ended when it met every rate tried: a lower
    bound), else the closed-loop peak (the highest mean over repeats of a level's
    throughput)."""
    if openloop is not None:
        return [
            (
                model,
                openloop.max_rate.get(model, 0.0),
                RateSource.SLO,
                str(openloop.slo),
                openloop.max_rate.get(model, 0.0) > 0 and openloop.open_ended(model),
            )
            for model in openloop.models
        ]
    if closed is None:
        return []
    per_level: dict[str, dict[int, list[float]]] = {}
    for step in closed.steps:
        levels = per_level.setdefault(str(step.target), {})
        levels.setdefault(step.concurrency, []).append(step.throughput_rps)
    out = []
    for target, levels in per_level.items():
        level, values = max(levels.items(), key=lambda item: float(np.mean(item[1])))
        peak = float(np.mean(values))
        out.append((target, peak, RateSource.CLOSED_PEAK, f"at {level} clients", False))
    return out


def build(
    pricing: Pricing,
    closed: RunRecord | None,
    openloop: OpenLoopRecord | None,
    reading: PowerReading | None = None,
    power_problem: str = "",
) -> CostRecord:
    """The cost record of a run from its results, the command line and the power reading."""
    if pricing.watts is not None:
        watts: float | None = pricing.watts
        source, note = WattsSource.FLAG, f"{pricing.watts:g} W, from --watts"
    elif reading is not None and reading.seconds > 0 and reading.joules > 0:
        watts, source = reading.watts, WattsSource.RAPL
        note = (
            f"{reading.watts:.1f} W, the mean RAPL power of {', '.join(reading.domains)} over "
            f"the load test ({reading.seconds:.0f} s; the whole CPU package: server and load "
            "generator together, idle gaps between steps included)"
        )
    else:
        watts, source = None, WattsSource.NONE
        note = power_problem or "no power reading: give --watts"
    models = []
    for model, rate, rate_source, detail, open_ended in model_rates(closed, openloop):
        price = pricing.price_per_hour
        models.append(
            ModelCost(
                model,
                rate,
                rate_source,
                detail,
                usd_per_million(price, rate) if price is not None and rate > 0 else None,
                joules_per_inference(watts, rate) if watts is not None and rate > 0 else None,
                open_ended,
            )
        )
    return CostRecord(pricing.price_per_hour, watts, source, reading, note, models)


def cost_table(record: CostRecord) -> tuple[str, tuple[list[str], list[list[str]]]]:
    """The report's table (title, (header, rows)): per model, its rate and where it comes
    from, USD per million inferences and joules per inference; the title says where the price
    and the power come from."""
    title = (
        f"Cost and energy per inference at each model's best rate (price: {record.price_note}; "
        f"power: {record.power_note})"
    )
    header = ["model", "rate (req/s)", "rate from", "USD per million inferences", "J/inference"]
    rows = [
        [
            m.model,
            f"{m.bound[0]}{m.rate_per_s:,.0f}",
            f"{m.rate_source} {m.rate_detail}"
            + (f" (a lower bound: it {WHY_LOWER_BOUND})" if m.open_ended else ""),
            f"{m.bound[1]}${m.usd_per_million:.4g}" if m.usd_per_million is not None else "-",
            f"{m.bound[1]}{m.joules_per_inference:.3g}"
            if m.joules_per_inference is not None
            else "-",
        ]
        for m in record.models
    ]
    return title, (header, rows)


def bottom_line(record: CostRecord) -> str:
    """One sentence for the report's bottom line: each model's cost per million inferences
    and energy per inference, at which rate, from which price and power ("" if neither)."""
    priced = [m for m in record.models if m.usd_per_million is not None]
    powered = [m for m in record.models if m.joules_per_inference is not None]
    if not priced and not powered:
        return ""
    first = record.models[0]
    where = (
        f"at each model's highest rate within {first.rate_detail}"
        if first.rate_source is RateSource.SLO
        else "at each model's closed-loop peak throughput (no open-loop search)"
    )
    parts = []
    if priced:
        each = ", ".join(f"{m.model} {m.bound[1]}${m.usd_per_million:.3g}" for m in priced)
        parts.append(f"a million inferences cost {each} (at {record.price_note})")
    if powered:
        each = ", ".join(f"{m.model} {m.bound[1]}{m.joules_per_inference:.3g} J" for m in powered)
        parts.append(f"an inference takes {each} (at {record.watts_short})")
    return f"Cost {where}: " + "; ".join(parts) + "."
