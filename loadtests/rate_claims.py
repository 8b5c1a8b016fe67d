"""The open loop's claim: does the candidate sustain a higher arrival rate within the SLO?

Each other variant is set against the plan's first on the same runtime. The search brackets
each model's answer between the highest rate that met the SLO and the lowest that missed it
with the client keeping up, so a verdict is given only when the brackets are apart; a model
that met every rate tried (or missed only where the client itself lagged) has a bound, not a
figure (">= 1,600"), and two such are "not separated". The closed loop's and the
seed study's claims are :mod:`loadtests.claims`'.
"""

from __future__ import annotations

from loadtests.claims import Claim, Kind, Verdict
from loadtests.openloop_results import OpenLoopRecord
from loadtests.results import LoadPlan
from modelrepo.layout import ModelName


def rate_pairs(openloop: OpenLoopRecord, plan: LoadPlan) -> list[tuple[str, str]]:
    """(candidate, baseline) model pairs of an open-loop sweep of ``plan``'s models: each other
    variant against the plan's first on the same runtime."""
    base_name = plan.variants[0]
    out = []
    for name in plan.model_names():
        model, baseline = str(name), str(ModelName(base_name, name.runtime))
        if name.variant != base_name and {model, baseline} <= openloop.max_rate.keys():
            out.append((model, baseline))
    return out


# Why a highest rate within the SLO is a lower bound, not the model's limit (the reports' words).
WHY_LOWER_BOUND = "met every rate tried, or missed only where the client could not keep up"


def rate_figure(openloop: OpenLoopRecord, model: str) -> str:
    """A model's highest rate within the SLO: "at least" when its answer is a lower bound
    (it met every rate tried, or missed only where the client could not keep up)."""
    rate = f"{openloop.max_rate[model]:,.0f}"
    return f">= {rate}" if openloop.open_ended(model) and openloop.max_rate[model] else rate


def rate_ratio(openloop: OpenLoopRecord, model: str, baseline: str) -> str:
    """``model``'s highest rate within the SLO against ``baseline``'s, as a bound when either
    met every rate tried (">=" or "<="), or why there is no ratio: "2.00x", ">= 1.50x",
    "not separated", "baseline met none", "neither met the SLO"."""
    if openloop.open_ended(model) and openloop.open_ended(baseline):
        return "not separated"
    if not openloop.max_rate[baseline]:
        return "neither met the SLO" if not openloop.max_rate[model] else "baseline met none"
    if not openloop.max_rate[model]:
        return "0.00x"  # it met none: no bound to give
    prefix = ">= " if openloop.open_ended(model) else "<= " if openloop.open_ended(baseline) else ""
    return f"{prefix}{openloop.ratio_to(model, baseline):.2f}x"


def rate_measured(openloop: OpenLoopRecord, model: str, baseline: str) -> str:
    """The claim's measurement: both rates and their ratio, or why there is no ratio."""
    if openloop.open_ended(model) and openloop.open_ended(baseline):
        top = max(openloop.max_rate[model], openloop.max_rate[baseline])
        lags = lag_notes(openloop, (model, baseline))
        if openloop.client is not None and openloop.client.unmeasurable:
            return f"no miss bounds either model: {not_separated(openloop, (model, baseline))}"
        if not lags:
            return (
                f"both met every rate tried, up to {top:,.0f} req/s: "
                f"{not_separated(openloop, (model, baseline))}"
            )
        return (
            f"neither missed the SLO with the client keeping up, up to {top:,.0f} req/s{lags}: "
            f"{not_separated(openloop, (model, baseline))}"
        )
    undecided = [p for m in (model, baseline) if (p := openloop.undecided(m)) is not None]
    text = (
        f"{rate_figure(openloop, model)} vs {rate_figure(openloop, baseline)} req/s of "
        f"{baseline} ({rate_ratio(openloop, model, baseline)})"
    )
    for point in undecided:
        text += f"; {point.model} at {point.rate:,.0f} req/s {point.verdict}"
    return text + lag_notes(openloop, (model, baseline))


def lag_notes(openloop: OpenLoopRecord, models: tuple[str, ...]) -> str:
    """A clause per miss of ``models`` with the client itself late, which bounds nothing."""
    return "".join(
        f"; at {point.rate:,.0f} req/s, where {m} missed, the client itself lagged "
        f"(p99 {point.lag_p99_ms:.2f} ms late): that miss may be the client's, so it does "
        f"not bound {m}'s rate"
        for m in models
        for point in openloop.lagged_misses(m)
    )


def not_separated(openloop: OpenLoopRecord, models: tuple[str, ...] = ()) -> str:
    """What to do when the rates tried did not separate ``models`` (default: all)."""
    top = max((p.rate for p in openloop.points), default=0.0)
    if openloop.client is not None and openloop.client.unmeasurable:
        return (
            f"this machine cannot measure {openloop.slo} now: {openloop.client.summary}, so no "
            "model's miss can be told from the client's: try a looser --slo, a client on another "
            "machine (--url), or a quieter machine"
        )
    if any(openloop.lagged_misses(m) for m in models or tuple(openloop.models)):
        return (
            "the rates did not separate the models: where they missed, the client itself "
            f"lagged (past {openloop.slo.client_lag_limit_ms:g} ms); a tighter --slo makes them "
            "miss where the client keeps up, or run the client on another machine (--url)"
        )
    if openloop.client is not None and openloop.client.limit is None:
        return (
            f"the rates did not separate the models up to {top:,.0f} req/s, where the search "
            f"stopped: {openloop.client.summary}; give --ceiling N, or a tighter --slo"
        )
    if openloop.ceiling is not None and top >= openloop.ceiling:
        if openloop.client is not None:
            return (
                f"the rates did not separate the models up to {top:,.0f} req/s, the client's "
                f"ceiling ({openloop.client.summary}): a tighter --slo separates them, or a "
                "client on a faster machine (--url)"
            )
        return (
            f"the rates did not separate the models: the search stopped at --ceiling "
            f"{openloop.ceiling:g}; --ceiling auto goes up to what the client sustains"
        )
    higher = ",".join(f"{top * k:g}" for k in (2, 4, 8))
    return f"the rates did not separate the models: give higher --rates, e.g. --rates {higher}"


def rate_claims(openloop: OpenLoopRecord, plan: LoadPlan) -> list[Claim]:
    """Per candidate model, its highest arrival rate within the SLO against its baseline's
    (same runtime). The search brackets each answer between the highest rate that met the SLO
    and the lowest that missed it; the claim holds or fails only when the brackets are apart."""
    return [
        Claim(
            Kind.RATE,
            f"faster inference: {model}, highest Poisson arrival rate within {openloop.slo}",
            "cuts inference time",
            rate_measured(openloop, model, baseline),
            rate_verdict(openloop, model, baseline),
            openloop.ratio_to(model, baseline),
            model,
        )
        for model, baseline in rate_pairs(openloop, plan)
    ]


def rate_verdict(openloop: OpenLoopRecord, model: str, baseline: str) -> Verdict:
    """holds / does not when the two search brackets are apart; not separated when both met
    every rate tried (a ceiling, not a tie), or when one is a lower bound only (it missed only
    with the client late) that reaches into the other's bracket: more search would not tell;
    needs more requests when an upper end of a bracket is a rate LoadGen could not decide; else
    within search resolution."""
    if openloop.open_ended(model) and openloop.open_ended(baseline):
        return Verdict.NOT_SEPARATED
    (low_c, high_c), (low_b, high_b) = openloop.bracket(model), openloop.bracket(baseline)
    if low_c >= high_b and openloop.undecided(baseline) is None:
        return Verdict.HOLDS
    if high_c <= low_b and openloop.undecided(model) is None:
        return Verdict.DOES_NOT
    if openloop.undecided(model) or openloop.undecided(baseline):
        return Verdict.NEEDS_MORE
    if openloop.open_ended(model) or openloop.open_ended(baseline):
        return Verdict.NOT_SEPARATED  # a lower bound (the client lagged) within the other's
    return Verdict.WITHIN_RESOLUTION
