"""What starting each site's LP relaxation from its last basis buys: HiGHS solves warm and cold.

    python bench/warm_start.py [-n 120] [--rounds 2]

Solves the same generated days in this process (build + solve, no worker) with the basis cache
kept, as a solver process keeps it, and emptied before every solve, and prints median and p95 of
both. The price of warm starts: where several plans share the optimal cost, the one returned may
depend on what the process solved before (docs/dispatch-contract.md, "Outcomes").
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generated_requests
from dispatch_pipeline.core.milp import highs
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.request import parse_request

DEADLINE_S = 10.0


def solve_all(problems: list, cold: bool) -> list[float]:
    """ms per solve, the collector handled as a solver worker handles it (core/worker.py): off
    while solving, run after each answer."""
    times_ms = []
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        for problem in problems:
            if cold:
                highs._last_basis.clear()
            started = time.perf_counter()
            highs.solve_with_highs(problem, time.monotonic() + DEADLINE_S)
            times_ms.append((time.perf_counter() - started) * 1000)
            gc.collect()
    finally:
        gc.enable()
    return times_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=120, help="number of site-days (default 120)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating warm/cold passes (default 2)")
    args = parser.parse_args()

    problems = [build_problem(parse_request(request)) for request in generated_requests(args.n)]
    print(f"{args.n} generated 96-interval site-days, HiGHS in this process, build + solve")
    for round_number in range(1, args.rounds + 1):
        for name, cold in (("warm (last basis of the site)", False), ("cold (no basis)", True)):
            values = np.asarray(solve_all(problems, cold))
            print(f"round {round_number}  {name:<30} median {np.median(values):6.2f} ms   "
                  f"p95 {np.percentile(values, 95):6.2f} ms")


if __name__ == "__main__":
    main()
