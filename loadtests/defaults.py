"""What a load test does when not told, in one place that imports nothing heavy: the command
line shows these in ``--help`` without loading NumPy or Locust, and a :class:`LoadPlan` built in
code starts from the same figures.

``loadtest`` measures for a decision (several short windows a model, alternating); ``demo`` is
the same measurement made shorter, so that the main job ends in minutes on two cores.
"""

from __future__ import annotations

# The closed loop of `mnist-serve loadtest` (and LoadPlan's defaults).
CONCURRENCY = (1, 8, 32, 64)  # concurrent clients, one Locust run per level
WINDOW_S = 2  # one measurement window; the models alternate window by window
WARMUP_S = 2  # unrecorded, at the start of each Locust run
REPEATS = 4  # windows per model and level (at least, when sequential)
# The command line asks for a decision: windows until every comparison is within ±5 %, for at
# most 10 minutes. A LoadPlan built in code keeps fixed windows (precision 0) unless asked.
PRECISION = 0.05
BUDGET_S = 600
# The open loop's arrival rates (requests/s), each judged by LoadGen, and the requests each run
# measures at least: a p99 then rests on the 10 slowest.
RATES = (100, 200, 400, 800)
MIN_REQUESTS = 1000

# `mnist-serve demo`: the same measurement, shorter.
DEMO_CONCURRENCY = (1, 8, 32)
DEMO_WINDOW_S = 1
# The demo's models are warm already when a step starts: this only lets connections settle.
DEMO_WARMUP_S = 1
DEMO_BUDGET_S = 360
DEMO_RATES = (200, 400, 800, 1600)
# The demo's open-loop runs are as long as --min-requests needs (1,000 requests: 5 s at
# 200/s, 1.25 s at 800/s), at least this: the search then takes about 30 s per model on a slow
# machine, and a minute on a fast one, where it doubles on up to the client's ceiling.
DEMO_OPEN_LOOP_S = 1


def listed(values: tuple[int, ...]) -> str:
    """``(1, 8, 32)`` as the command line takes it: ``1,8,32``."""
    return ",".join(str(v) for v in values)


def span(seconds: int) -> str:
    """A duration as the command line takes it: ``600`` is ``10m``, ``90`` is ``90s``."""
    return f"{seconds // 60}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds}s"


def share(fraction: float) -> str:
    """A precision as the command line takes it: ``0.05`` is ``5%``, ``0.025`` is ``2.5%``."""
    return f"{fraction * 100:g}%"


# As the command line spells them (its options' defaults).
CLI_CONCURRENCY = listed(CONCURRENCY)
CLI_WINDOW = span(WINDOW_S)
CLI_WARMUP = span(WARMUP_S)
CLI_PRECISION = share(PRECISION)
CLI_BUDGET = span(BUDGET_S)
CLI_RATES = listed(RATES)
CLI_DEMO_CONCURRENCY = listed(DEMO_CONCURRENCY)
CLI_DEMO_WINDOW = span(DEMO_WINDOW_S)
CLI_DEMO_BUDGET = span(DEMO_BUDGET_S)
CLI_DEMO_RATES = listed(DEMO_RATES)
