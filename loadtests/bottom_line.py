"""The report's bottom line: one sentence on the candidate against the baseline.

The closed loop's speedup at the highest load measured (and how many other comparisons there
were at that load), the open loop's arrival-rate ratio, the multiply-adds and the accuracy, in
the words of the claims' verdicts (:mod:`loadtests.claims`, :mod:`loadtests.rate_claims`), so
that the sentence never says more than the claims table does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from loadtests.analysis import Axis, Speedup
from loadtests.claims import Verdict, accuracy_gap, pair
from loadtests.openloop_results import OpenLoopRecord
from loadtests.rate_claims import rate_figure, rate_pairs, rate_ratio, rate_verdict
from loadtests.results import RunRecord


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
            if openloop.client is not None and openloop.client.unmeasurable:
                named = False  # this part's subject is not the candidate
                parts.append(
                    f"the arrival rates cannot separate {model} and {baseline} within "
                    f"{openloop.slo} on this machine now: the client kept up with no rate "
                    "against a server that does nothing"
                )
            elif verdict is Verdict.NOT_SEPARATED and not (
                openloop.lagged_misses(model) or openloop.lagged_misses(baseline)
            ):
                named = False  # this part's subject is not the candidate
                parts.append(
                    f"{model} and {baseline} both met every arrival rate tried within "
                    f"{openloop.slo} (not separated)"
                )
            elif verdict is Verdict.NOT_SEPARATED:
                named = False  # this part's subject is not the candidate
                parts.append(
                    f"the arrival rates did not separate {model} and {baseline} within "
                    f"{openloop.slo}: where they missed, the client itself lagged"
                )
            elif not openloop.max_rate[model] and not openloop.max_rate[baseline]:
                named = False  # this part's subject is not the candidate
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
