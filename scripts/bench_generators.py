"""How fast can each open-loop generator issue? LoadGen with our Python SUT vs the asyncio one.

A null HTTP server (:mod:`loadtests.null_server`, its own process, answers ``ok`` at once) takes
Poisson load from (a) MLPerf LoadGen's Server scenario with our system under test
(loadtests.loadgen) and (b) the asyncio generator (loadtests.openloop), at rising rates, on the
same cores. For each: the rate achieved, p50/p99 latency from the scheduled time, and the
generator's own lateness. Where a generator's latency on a server that does nothing rises,
that generator (not the server) is the limit: the highest rate it can measure honestly on this
machine.

Run: ``python scripts/bench_generators.py [--rates 500,1000,2000,4000] [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from loadtests.client_ceiling import null_server
from loadtests.loadgen import run_server_scenario
from loadtests.openloop import run_open_loop
from loadtests.openloop_results import Slo


def main() -> None:
    """Both generators at each rate; a Markdown table on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,2000,4000")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with null_server() as url, tempfile.TemporaryDirectory() as folder:
        print("| generator | asked/s | achieved/s | p50 ms | p99 ms | lag p99 ms | verdict |")
        print("|---|---|---|---|---|---|---|")
        for rate in rates:
            run = run_server_scenario(
                url,
                [b"{}"] * 64,
                rate,
                Slo(99, 10),
                Path(folder) / f"r{rate:g}",
                min_duration_s=args.seconds,
                min_queries=0,
                warmup_s=0.5,
            )
            r = run.result
            verdict = "VALID" if r.valid else "INVALID"
            print(
                f"| LoadGen + Python SUT | {rate:g} | {r.completed_qps:,.0f} | "
                f"{r.latency_ms.p50:.2f} | {r.latency_ms.p99:.2f} | {run.sut_lag_p99_ms:.2f} "
                f"| {verdict} (p99 <= 10 ms) |",
                flush=True,
            )
            result = asyncio.run(
                run_open_loop(url, b"{}", rate, args.seconds, poisson=True, warmup_s=0.5)
            )
            print(
                f"| asyncio generator | {rate:g} | {result.per_second(200):,.0f} | "
                f"{result.latency_ms(200, 50):.2f} | {result.latency_ms(200, 99):.2f} | "
                f"{result.lag_ms(99):.2f} | - |",
                flush=True,
            )


if __name__ == "__main__":
    main()
