"""Solve the full Pyomo MILP (all 2T binaries) with the CBC executable.

CBC is the independent second opinion: it sees the plain model, with no relaxation tricks, so
agreement with the HiGHS path on the reference cases checks both.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.opt import SolverStatus, TerminationCondition

from dispatch_pipeline.core.milp.highs import _new_highs, compile_model, solve_fixed_binaries
from dispatch_pipeline.core.milp.model import build_model
from dispatch_pipeline.core.milp.solution import (
    MilpFailure,
    MilpSolution,
    MilpTimeout,
    require_cbc,
    search_deadline,
)
from dispatch_pipeline.core.problem import DispatchProblem


def solve_with_cbc(problem: DispatchProblem, deadline: float, mip_rel_gap: float = 1e-4) -> MilpSolution:
    require_cbc()
    model = build_model(problem)
    remaining = search_deadline(deadline) - time.monotonic()
    if remaining <= 0:
        raise MilpTimeout("time limit reached before CBC could start")
    solver = pyo.SolverFactory("cbc")
    # The deadline is wall clock; CBC counts CPU seconds unless told, and a process that waits
    # for a busy core spends less CPU than wall time, so it would still be searching when killed.
    solver.options["timeMode"] = "elapsed"
    solver.options["ratioGap"] = mip_rel_gap
    solver.options["seconds"] = round(remaining, 3)  # CBC takes fractions: int() made 0.7 s a whole second
    results = solver.solve(model, load_solutions=False)
    condition = results.solver.termination_condition
    has_solution = len(results.solution) > 0
    if condition == TerminationCondition.optimal and results.solver.status == SolverStatus.ok:
        termination = "optimal"
    elif condition == TerminationCondition.maxTimeLimit and has_solution:
        termination = "time_limit"
    elif condition == TerminationCondition.maxTimeLimit or (
        # "Stopped on ... (no integer solution)": on time when aborted (the only limit set), on
        # numerical difficulties when an error.
        condition == TerminationCondition.intermediateNonInteger and results.solver.status == SolverStatus.aborted
    ):
        raise MilpTimeout("CBC reached its time limit without a feasible schedule")
    else:
        raise MilpFailure(f"CBC failed: {results.solver.status}, {condition}")
    model.solutions.load_from(results)

    charge_allowed = np.round([model.b[t].value for t in model.T]).astype(float)
    import_allowed = np.round([model.g[t].value for t in model.T]).astype(float)
    compiled = compile_model(model)
    highs = _new_highs(mip_rel_gap)
    highs.passModel(compiled.lp)
    schedule, objective, marginal = solve_fixed_binaries(
        problem, compiled, highs, charge_allowed, import_allowed, max(deadline, time.monotonic() + 0.5)
    )
    return MilpSolution(
        schedule=schedule,
        objective_value=objective,
        mip_gap=_achieved_gap(results),
        termination=termination,
        marginal_cost_per_kwh=marginal,
        charge_allowed=charge_allowed,
        import_allowed=import_allowed,
    )


def _achieved_gap(results: Any) -> float:
    """The gap CBC reached between its best objective and its bound, relative to the objective
    (not the 1e-4 it was asked for); NaN when CBC reported no bound."""
    lower, upper = results.problem[0].lower_bound, results.problem[0].upper_bound
    try:
        lower, upper = float(lower), float(upper)
    except (TypeError, ValueError):
        return float("nan")
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return float("nan")
    if upper == lower:
        return 0.0
    return abs(upper - lower) / abs(upper) if upper else math.inf
