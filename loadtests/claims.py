"""The question the user came with: do the depthwise model's claims hold when it is served?

The seed study claimed that its depthwise variant (first convolution depthwise, second 7x7) has
fewer parameters (823,828 against 1,199,882), is more accurate (99.21 % against 99.1 % after 12
epochs) and cuts inference time. Each claim is set against what this run and the models'
metadata measured, with an interval where one exists, and a verdict: ``holds``, ``does not``
or ``within noise`` (the interval includes "no difference"), or ``one run`` (no interval).

Test accuracy comes from the models' metadata (the full 10,000-image test set), not from the
digits sent under load; its interval is the normal approximation for the difference of two
proportions over 10,000 images each (seed-to-seed variation, which is larger, is not in it).
The open loop's claim is :mod:`loadtests.rate_claims`', and the report's one-sentence summary
of them all :mod:`loadtests.bottom_line`'s.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from loadtests.analysis import Axis, Speedup
from loadtests.described import ServedVariant
from loadtests.results import RunRecord
from modelrepo.contract import TEST_SIZE
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
    # open loop: both met every rate tried (a ceiling, no tie), or a lower bound overlaps
    NOT_SEPARATED = "not separated"
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


def claims(record: RunRecord, items: Sequence[Speedup]) -> list[Claim]:
    """The claims of the second variant named against the first (the baseline), from the
    models' figures and the closed loop (the open loop's: :mod:`loadtests.rate_claims`)."""
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
    return out
