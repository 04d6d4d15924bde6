"""Was a stored plan made from these inputs? Asked of a plan read back, not of one just solved."""

from __future__ import annotations

import math

import numpy as np

from dispatch_pipeline.core.evaluate import compute_kpis, objective_value
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import DispatchResult, Schedule

# Recomputing a stored plan's numbers repeats the same float operations on the same values, but
# its stored energy comes back as soc * capacity: a rounding apart, never more.
RELATIVE_TOLERANCE = 1e-9


def planned_from(problem: DispatchProblem, result: DispatchResult) -> bool:
    """Whether `result` was planned for `problem`: same day, its schedule within the problem's
    hard constraints, and its KPIs and objective, recomputed under the problem's load, PV, prices
    and weights, the ones stored. A forecast or tariff issued since the plan was made changes one
    of them (a new load breaks the power balance; new prices change its cost)."""
    if len(result.points) != problem.intervals or result.resolution_minutes != problem.day.resolution_minutes:
        return False
    schedule = schedule_from_result(result, problem)
    if find_breaches(problem, schedule):
        return False
    recomputed = compute_kpis(problem, schedule).model_dump()
    stored = result.kpis.model_dump()
    return _close(objective_value(problem, schedule), result.objective_value) and all(
        _close(recomputed[name], stored[name]) for name in stored
    )


def schedule_from_result(result: DispatchResult, problem: DispatchProblem) -> Schedule:
    """The schedule a result's points describe (energy from SOC and the problem's capacity)."""

    def column(name: str) -> np.ndarray:
        return np.array([getattr(point, name) for point in result.points], dtype=float)

    return Schedule(
        pv_set=column("pv_set_kw"),
        curtail=column("curtail_kw"),
        charge=column("batt_ch_kw"),
        discharge=column("batt_dis_kw"),
        grid_import=column("grid_imp_kw"),
        grid_export=column("grid_exp_kw"),
        energy=column("soc") * problem.capacity_kwh,
    )


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=RELATIVE_TOLERANCE)
