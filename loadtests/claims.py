"""The question the user came with: do the depthwise model's claims hold when it is served?

The seed study claimed that its depthwise variant (first convolution depthwise, second 7x7) has
fewer parameters (823,828 against 1,199,882), is more accurate (99.21 % against 99.1 % after 12
epochs) and cuts inference time. Each claim is set against what this run and the models'
metadata measured, with an interval where one exists, and a verdict: ``holds``, ``does not``
or ``within noise`` (the interval includes "no difference"), or ``one run`` (no interval).

Test accuracy comes from the models' metadata (the full 10,000-image test set), not from the
digits sent under load; its interval is the normal approximation for the difference of two
proportions over 10,000 images each (seed-to-seed variation, which is larger, is not in it).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from loadtests.analysis import Axis, Speedup
from loadtests.openloop_results import OpenLoopRecord
from loadtests.results import LoadPlan, RunRecord, ServedVariant
from modelrepo.contract import TEST_SIZE
from modelrepo.layout import ModelName
from modelrepo.metadata import SeedSummary
from modelrepo.stats import t_quantile


@dataclass(frozen=True)
class Reference:
    """A seed-study model's published figures."""

    parameters: int
    test_accuracy: float


# The seed study's figures (the keras-io CNN and its depthwise variant, 12 epochs).
REFERENCE = {
    "original": Reference(parameters=1_199_882, test_accuracy=0.991),
    "depthwise": Reference(parameters=823_828, test_accuracy=0.9921),
}


class Verdict(StrEnum):
    """What the measurement says of a claim; the value is how the report writes it."""

    HOLDS = "holds"
    DOES_NOT = "does not"
    WITHIN_NOISE = "within noise"  # the interval includes "no difference"
    ONE_RUN = "one run"  # no interval
    WITHIN_RESOLUTION = "within search resolution"  # open loop: the search brackets overlap
    NOT_SEPARATED = "not separated"  # open loop: both met every rate tried (a ceiling, no tie)
    NEEDS_MORE = "needs more requests"  # open loop: LoadGen's early stopping undecided


class Kind(StrEnum):
    """Which of the seed study's claims a :class:`Claim` checks."""

    PARAMETERS = "fewer parameters"
    MACS = "fewer multiply-adds"
    ACCURACY = "higher test accuracy"
    TRAINING = "faster training"
    THROUGHPUT = "faster inference (closed loop)"
    RATE = "faster inference (open loop)"


@dataclass(frozen=True)
class Claim:
    """One claim against its measurement: the text the report shows, and the typed figures
    behind it (``value``: the candidate against the baseline, as a ratio or a difference)."""

    kind: Kind
    claim: str
    reference: str
    measured: str
    verdict: Verdict
    value: float = math.nan
    subject: str = ""  # for inference claims: the candidate target or model
    level: int | None = None  # for closed-loop inference claims: the concurrency


def interval_verdict(low: float, high: float, none: float = 0.0) -> Verdict:
    """holds (the interval lies above ``none``, "no difference"), does not (below), or
    within noise (it includes it); one run when there is no interval."""
    if math.isnan(low):
        return Verdict.ONE_RUN
    if low > none:
        return Verdict.HOLDS
    return Verdict.DOES_NOT if high < none else Verdict.WITHIN_NOISE


def accuracy_reference(ref_base: Reference | None, ref_cand: Reference | None) -> str:
    """The seed study's accuracies, candidate vs baseline, or just "higher" when unknown."""
    if ref_base and ref_cand:
        return f"{ref_cand.test_accuracy:.2%} vs {ref_base.test_accuracy:.2%}"
    return "higher"


def median(values: list[float] | None) -> float | None:
    """The median of per-epoch times (None when there are none)."""
    return statistics.median(values) if values else None


def accuracy_difference(base: float, candidate: float) -> tuple[float, float, float]:
    """Candidate minus baseline test accuracy and its 95 % interval (independent proportions)."""
    diff = candidate - base
    se = math.sqrt(base * (1 - base) / TEST_SIZE + candidate * (1 - candidate) / TEST_SIZE)
    z = t_quantile(math.inf)  # the normal quantile: 10,000 images each
    return diff, diff - z * se, diff + z * se


def seed_pair(base: ServedVariant, cand: ServedVariant) -> tuple[SeedSummary, SeedSummary] | None:
    """The two models' seed studies, when both were trained with several seeds (--seeds)."""
    first, second = base.seeds, cand.seeds
    if first is None or second is None or len(first.seeds) < 2 or len(second.seeds) < 2:
        return None
    return first, second


def accuracy_gap(base: ServedVariant, cand: ServedVariant) -> tuple[float, float, Verdict] | None:
    """The accuracies the claims compare, candidate and baseline, and the claim's verdict:
    over seeds when both have several (the means), else the exported models'; None when
    unknown. The bottom line reads it, so that it never says more than the claims table."""
    from training.seeds import difference

    found = seed_pair(base, cand)
    if found is not None:
        first, second = found
        _, low, high = difference(first, second)
        return second.mean, first.mean, interval_verdict(low, high)
    if base.test_accuracy is None or cand.test_accuracy is None:
        return None
    _, low, high = accuracy_difference(base.test_accuracy, cand.test_accuracy)
    return cand.test_accuracy, base.test_accuracy, interval_verdict(low, high)


def seed_accuracy_claim(
    base: ServedVariant, cand: ServedVariant, ref_base: Reference | None, ref_cand: Reference | None
) -> Claim | None:
    """The accuracy claim over seeds, when both models were trained with several (--seeds)."""
    from training.seeds import difference

    found = seed_pair(base, cand)
    if found is None:
        return None
    first, second = found
    diff, low, high = difference(first, second)
    return Claim(
        Kind.ACCURACY,
        f"higher test accuracy (10,000 test images, mean of {len(second.seeds)} and "
        f"{len(first.seeds)} seeds)",
        accuracy_reference(ref_base, ref_cand),
        f"{second.mean:.2%} vs {first.mean:.2%} ({diff * 100:+.2f} points, 95% CI "
        f"{low * 100:+.2f} to {high * 100:+.2f}; seed sd {second.std * 100:.2f} and "
        f"{first.std * 100:.2f} points)",
        interval_verdict(low, high),
        diff,
    )


def pair(record: RunRecord) -> tuple[ServedVariant, ServedVariant] | None:
    """The baseline (first variant named) and the candidate (second), as the server saw them."""
    names = record.plan.variants
    if len(names) < 2:
        return None
    return (
        record.variant(names[0]) or ServedVariant(names[0]),
        record.variant(names[1]) or ServedVariant(names[1]),
    )


def claims(
    record: RunRecord, items: Sequence[Speedup], openloop: OpenLoopRecord | None = None
) -> list[Claim]:
    """The claims of the second variant named against the first (the baseline)."""
    found = pair(record)
    if found is None:
        return []
    base, cand = found
    ref_base, ref_cand = REFERENCE.get(base.name), REFERENCE.get(cand.name)
    out = []

    if base.parameters and cand.parameters:
        ref = (
            f"{ref_cand.parameters:,} vs {ref_base.parameters:,}"
            if ref_base and ref_cand
            else "fewer"
        )
        ratio = base.parameters / cand.parameters
        out.append(
            Claim(
                Kind.PARAMETERS,
                "fewer parameters",
                ref,
                f"{cand.parameters:,} vs {base.parameters:,} ({ratio:.2f}x fewer)",
                Verdict.HOLDS if cand.parameters < base.parameters else Verdict.DOES_NOT,
                ratio,
            )
        )
    if base.macs and cand.macs:
        ratio = base.macs / cand.macs
        out.append(
            Claim(
                Kind.MACS,
                "fewer multiply-adds per image",
                "implied by 'cuts inference time'",
                f"{cand.macs:,} vs {base.macs:,} ({ratio:.2f}x fewer)",
                Verdict.HOLDS if cand.macs < base.macs else Verdict.DOES_NOT,
                ratio,
            )
        )
    seeds_claim = seed_accuracy_claim(base, cand, ref_base, ref_cand)
    if seeds_claim is not None:
        out.append(seeds_claim)
    elif base.test_accuracy is not None and cand.test_accuracy is not None:
        diff, low, high = accuracy_difference(base.test_accuracy, cand.test_accuracy)
        out.append(
            Claim(
                Kind.ACCURACY,
                "higher test accuracy (10,000 test images)",
                accuracy_reference(ref_base, ref_cand),
                f"{cand.test_accuracy:.2%} vs {base.test_accuracy:.2%} ({diff * 100:+.2f} "
                f"points, 95% CI {low * 100:+.2f} to {high * 100:+.2f}; {cand.epochs} epochs, "
                "one seed)",
                interval_verdict(low, high),
                diff,
            )
        )
    e_base, e_cand = median(base.epoch_seconds), median(cand.epoch_seconds)
    if e_base and e_cand:
        out.append(
            Claim(
                Kind.TRAINING,
                "faster training",
                "implied",
                f"{e_cand:.1f} vs {e_base:.1f} s per epoch, median ({e_base / e_cand:.2f}x "
                f"{'faster' if e_cand < e_base else 'slower'})",
                Verdict.ONE_RUN if e_cand < e_base else Verdict.DOES_NOT,
                e_base / e_cand,
            )
        )
    for s in items:
        if s.kind is not Axis.VARIANT or s.baseline.variant != base.name:
            continue
        t = s.throughput
        out.append(
            Claim(
                Kind.THROUGHPUT,
                f"faster inference: {s.candidate} at {s.concurrency} client(s)",
                "cuts inference time",
                f"{t} the requests/s of {s.baseline}, p50 {s.p50_diff_ms:+.2f} ms",
                interval_verdict(t.low, t.high, none=1.0),
                t.mean,
                str(s.candidate),
                s.concurrency,
            )
        )
    if openloop is not None:
        out += rate_claims(openloop, record.plan)
    return out


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


def rate_figure(openloop: OpenLoopRecord, model: str) -> str:
    """A model's highest rate within the SLO: "at least" when it met every rate tried."""
    rate = f"{openloop.max_rate[model]:,.0f}"
    return f">= {rate}" if openloop.open_ended(model) else rate


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
        return f"both met every rate tried, up to {top:,.0f} req/s: {not_separated(openloop)}"
    undecided = [p for m in (model, baseline) if (p := openloop.undecided(m)) is not None]
    text = (
        f"{rate_figure(openloop, model)} vs {rate_figure(openloop, baseline)} req/s of "
        f"{baseline} ({rate_ratio(openloop, model, baseline)})"
    )
    for point in undecided:
        text += f"; {point.model} at {point.rate:,.0f} req/s {point.verdict}"
    return text


def not_separated(openloop: OpenLoopRecord) -> str:
    """What to do when the rates tried did not separate the models."""
    from loadtests.loadgen import SUT_CEILING

    top = max((p.rate for p in openloop.points), default=0.0)
    if openloop.ceiling is not None and top >= openloop.ceiling >= SUT_CEILING:
        return (
            f"the rates did not separate the models up to {top:,.0f} req/s: a tighter --slo "
            "or a higher --ceiling separates them"
        )
    if openloop.ceiling is not None and top >= openloop.ceiling:
        return (
            f"the rates did not separate the models: the search stopped at --ceiling "
            f"{openloop.ceiling:g}; give --ceiling {SUT_CEILING:g}"
        )
    higher = ",".join(
        f"{min(top * k, SUT_CEILING):g}" for k in (2, 4, 8) if top * k / 2 < SUT_CEILING
    )
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
    every rate tried (a ceiling, not a tie); needs more requests when an upper end of a bracket
    is a rate LoadGen could not decide; else within search resolution."""
    if openloop.open_ended(model) and openloop.open_ended(baseline):
        return Verdict.NOT_SEPARATED
    (low_c, high_c), (low_b, high_b) = openloop.bracket(model), openloop.bracket(baseline)
    if low_c >= high_b and openloop.undecided(baseline) is None:
        return Verdict.HOLDS
    if high_c <= low_b and openloop.undecided(model) is None:
        return Verdict.DOES_NOT
    if openloop.undecided(model) or openloop.undecided(baseline):
        return Verdict.NEEDS_MORE
    return Verdict.WITHIN_RESOLUTION


def bottom_line(
    record: RunRecord, items: Sequence[Speedup], openloop: OpenLoopRecord | None = None
) -> str:
    """One sentence: the speedup at the highest load measured, the MACs, the accuracy."""
    found = pair(record)
    if found is None:
        return ""
    base, cand = found
    speed = [s for s in items if s.kind is Axis.VARIANT and s.baseline.variant == base.name]
    parts = []
    if speed:
        top = max(speed, key=lambda s: s.concurrency)
        t = top.throughput
        level = f"{t.confidence * 100:g}% CI"  # a sequential run's intervals are 97.5 % ones
        interval = "" if math.isnan(t.low) else f" ({level} {t.low:.2f}-{t.high:.2f})"
        others = [s.throughput.mean for s in speed if s.concurrency == top.concurrency]
        if len(others) > 1:  # other runtimes, protocols or variants at that load
            interval += (
                f"; {len(others) - 1} other comparison(s) at that load, "
                f"{min(others):.2f}x-{max(others):.2f}x in all"
            )
        parts.append(
            f"{top.candidate} serves {t.mean:.2f}x the requests/s of {top.baseline} at "
            f"{top.concurrency} clients{interval}"
        )
    named = bool(speed)  # whether a part so far has the candidate for its subject
    if openloop is not None:
        for model, baseline in rate_pairs(openloop, record.plan)[:1]:
            verdict = rate_verdict(openloop, model, baseline)
            caveat = "" if verdict in (Verdict.HOLDS, Verdict.DOES_NOT) else f" ({verdict})"
            lowest = min((p.rate for p in openloop.points), default=math.nan)
            if verdict is Verdict.NOT_SEPARATED:
                parts.append(
                    f"{model} and {baseline} both met every arrival rate tried within "
                    f"{openloop.slo} (not separated)"
                )
            elif not openloop.max_rate[model] and not openloop.max_rate[baseline]:
                parts.append(
                    f"neither {model} nor {baseline} met {openloop.slo} at the lowest arrival "
                    f"rate tried ({lowest:,.0f} req/s)"
                )
            elif not openloop.max_rate[baseline]:
                named = True
                parts.append(
                    f"{model} sustains {rate_figure(openloop, model)} req/s within "
                    f"{openloop.slo}, where {baseline} met no rate tried"
                )
            else:
                named = True
                parts.append(
                    f"{model} sustains {rate_ratio(openloop, model, baseline)} the arrival "
                    f"rate of {baseline} within {openloop.slo}{caveat}"
                )
    own = len(parts)  # the candidate's own figures follow
    if base.macs and cand.macs:
        parts.append(f"needs {base.macs / cand.macs:.2f}x fewer multiply-adds")
    if (gap := accuracy_gap(base, cand)) is not None:
        a_cand, a_base, verdict = gap
        said = {Verdict.HOLDS: "is more accurate", Verdict.DOES_NOT: "is less accurate"}
        parts.append(
            f"{said.get(verdict, 'is as accurate within noise')} ({a_cand:.2%} vs {a_base:.2%})"
        )
    if not parts:
        return ""
    if not named and len(parts) > own:  # no part before named the candidate: name it here
        parts[own] = f"{cand.name} {parts[own]}"
    failed = [s for s in record.failed_steps if s.target.variant in (base.name, cand.name)]
    text = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    if failed:
        text += f" ({len(failed)} step(s) of these two failed: see the report)"
    return f"Bottom line: {text}."
