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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtests.report import Speedup

# The seed study's figures (the keras-io CNN and its depthwise variant, 12 epochs).
REFERENCE = {
    "original": {"parameters": 1_199_882, "test_accuracy": 0.991},
    "depthwise": {"parameters": 823_828, "test_accuracy": 0.9921},
}
TEST_IMAGES = 10_000
Z95 = 1.959964


@dataclass(frozen=True)
class Claim:
    """One claim against its measurement."""

    claim: str
    reference: str
    measured: str
    verdict: str  # "holds", "does not", "within noise" or "one run"


def interval_verdict(low: float, high: float, none: float = 0.0) -> str:
    """holds (the interval lies above ``none``, "no difference"), does not (below), or
    within noise (it includes it); one run when there is no interval."""
    if math.isnan(low):
        return "one run"
    return "holds" if low > none else "does not" if high < none else "within noise"


def accuracy_reference(ref_base: dict[str, Any], ref_cand: dict[str, Any]) -> str:
    """The seed study's accuracies, candidate vs baseline, or just "higher" when unknown."""
    if ref_base and ref_cand:
        return f"{ref_cand['test_accuracy']:.2%} vs {ref_base['test_accuracy']:.2%}"
    return "higher"


def variant_of(target: str) -> str:
    """The variant of a report target ("depthwise@onnx via tfserving" -> "depthwise")."""
    return target.split(" via ")[0].split("@")[0]


def _figure(entry: dict[str, Any], key: str) -> float | None:
    """A number from a variant's metadata; a list (per-epoch times) gives its median."""
    value = entry.get(key)
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return float(sorted(value)[len(value) // 2])
    return float(value) if isinstance(value, int | float) else None


def accuracy_difference(base: float, candidate: float) -> tuple[float, float, float]:
    """Candidate minus baseline test accuracy and its 95 % interval (independent proportions)."""
    diff = candidate - base
    se = math.sqrt(base * (1 - base) / TEST_IMAGES + candidate * (1 - candidate) / TEST_IMAGES)
    return diff, diff - Z95 * se, diff + Z95 * se


def seed_accuracy_claim(
    base: dict[str, Any], cand: dict[str, Any], ref_base: dict[str, Any], ref_cand: dict[str, Any]
) -> Claim | None:
    """The accuracy claim over seeds, when both models were trained with several (--seeds)."""
    from training.seeds import SeedSummary, difference

    def seeds_of(entry: dict[str, Any]) -> SeedSummary | None:
        found = entry.get("seeds") or entry.get("metadata", {}).get("seeds")
        return SeedSummary(**found) if isinstance(found, dict) else None

    first, second = seeds_of(base), seeds_of(cand)
    if first is None or second is None:
        return None
    if len(first.seeds) < 2 or len(second.seeds) < 2:
        return None
    diff, low, high = difference(first, second)
    return Claim(
        f"higher test accuracy (10,000 test images, mean of {len(second.seeds)} and "
        f"{len(first.seeds)} seeds)",
        accuracy_reference(ref_base, ref_cand),
        f"{second.mean:.2%} vs {first.mean:.2%} ({diff * 100:+.2f} points, 95% CI "
        f"{low * 100:+.2f} to {high * 100:+.2f}; seed sd {second.std * 100:.2f} and "
        f"{first.std * 100:.2f} points)",
        interval_verdict(low, high),
    )


def claims(record: dict[str, Any], items: Sequence[Speedup]) -> list[Claim]:
    """The claims of the second variant named against the first (the baseline)."""
    variants = record["plan"]["variants"]
    if len(variants) < 2:
        return []
    by_name = {entry["name"]: entry for entry in record["variants"]}
    base_name, cand_name = variants[0], variants[1]
    base, cand = by_name.get(base_name, {}), by_name.get(cand_name, {})
    ref_base, ref_cand = REFERENCE.get(base_name, {}), REFERENCE.get(cand_name, {})
    out = []

    p_base, p_cand = _figure(base, "parameters"), _figure(cand, "parameters")
    if p_base and p_cand:
        ref = (
            f"{ref_cand['parameters']:,} vs {ref_base['parameters']:,}"
            if ref_base and ref_cand
            else "fewer"
        )
        out.append(
            Claim(
                "fewer parameters",
                ref,
                f"{p_cand:,.0f} vs {p_base:,.0f} ({p_base / p_cand:.2f}x fewer)",
                "holds" if p_cand < p_base else "does not",
            )
        )
    m_base, m_cand = _figure(base, "macs"), _figure(cand, "macs")
    if m_base and m_cand:
        out.append(
            Claim(
                "fewer multiply-adds per image",
                "implied by 'cuts inference time'",
                f"{m_cand:,.0f} vs {m_base:,.0f} ({m_base / m_cand:.2f}x fewer)",
                "holds" if m_cand < m_base else "does not",
            )
        )
    seeds_claim = seed_accuracy_claim(base, cand, ref_base, ref_cand)
    a_base, a_cand = _figure(base, "test_accuracy"), _figure(cand, "test_accuracy")
    if seeds_claim is not None:
        out.append(seeds_claim)
    elif a_base is not None and a_cand is not None:
        diff, low, high = accuracy_difference(a_base, a_cand)
        out.append(
            Claim(
                "higher test accuracy (10,000 test images)",
                accuracy_reference(ref_base, ref_cand),
                f"{a_cand:.2%} vs {a_base:.2%} ({diff * 100:+.2f} points, 95% CI "
                f"{low * 100:+.2f} to {high * 100:+.2f}; {cand.get('epochs')} epochs, one seed)",
                interval_verdict(low, high),
            )
        )
    e_base, e_cand = _figure(base, "epoch_seconds"), _figure(cand, "epoch_seconds")
    if e_base and e_cand:
        out.append(
            Claim(
                "faster training",
                "implied",
                f"{e_cand:.1f} vs {e_base:.1f} s per epoch, median ({e_base / e_cand:.2f}x "
                f"{'faster' if e_cand < e_base else 'slower'})",
                "one run" if e_cand < e_base else "does not",
            )
        )
    for s in items:
        if s.kind != "variant" or variant_of(s.baseline) != base_name:
            continue
        t = s.throughput
        verdict = interval_verdict(t.low, t.high, none=1.0)
        out.append(
            Claim(
                f"faster inference: {s.candidate} at {s.concurrency} client(s)",
                "cuts inference time",
                f"{t} the requests/s of {s.baseline}, p50 {s.p50_diff_ms:+.2f} ms",
                verdict,
            )
        )
    return out


def bottom_line(record: dict[str, Any], items: Sequence[Speedup]) -> str:
    """One sentence: the speedup at the highest load measured, the MACs, the accuracy."""
    variants = record["plan"]["variants"]
    if len(variants) < 2:
        return ""
    base_name, cand_name = variants[0], variants[1]
    speed = [s for s in items if s.kind == "variant" and variant_of(s.baseline) == base_name]
    parts = []
    if speed:
        top = max(speed, key=lambda s: s.concurrency)
        t = top.throughput
        interval = "" if math.isnan(t.low) else f" (95% CI {t.low:.2f}-{t.high:.2f})"
        parts.append(
            f"{top.candidate} serves {t.mean:.2f}x the requests/s of {top.baseline} at "
            f"{top.concurrency} clients{interval}"
        )
    by_name = {entry["name"]: entry for entry in record["variants"]}
    base, cand = by_name.get(base_name, {}), by_name.get(cand_name, {})
    m_base, m_cand = _figure(base, "macs"), _figure(cand, "macs")
    if m_base and m_cand:
        parts.append(f"needs {m_base / m_cand:.2f}x fewer multiply-adds")
    a_base, a_cand = _figure(base, "test_accuracy"), _figure(cand, "test_accuracy")
    if a_base is not None and a_cand is not None:
        _, low, high = accuracy_difference(a_base, a_cand)
        if high < 0:
            accuracy = f"is less accurate ({a_cand:.2%} vs {a_base:.2%})"
        elif low > 0:
            accuracy = f"is more accurate ({a_cand:.2%} vs {a_base:.2%})"
        else:
            accuracy = f"is as accurate within noise ({a_cand:.2%} vs {a_base:.2%})"
        parts.append(accuracy)
    if not parts:
        return ""
    text = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    return f"Bottom line: {text}."
