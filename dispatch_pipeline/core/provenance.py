"""May a stored plan stand for the plan of these inputs? Asked of a plan read back beside a plan
just made from the inputs at hand (a retry's)."""

from __future__ import annotations

import math

import numpy as np

from dispatch_pipeline.core.evaluate import compute_kpis, objective_value
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.milp import MIP_REL_GAP
from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import DispatchResult, Schedule

# Recomputing a stored plan's numbers repeats the same float operations on the same values, but
# its stored energy comes back as soc * capacity: a rounding apart, never more.
RELATIVE_TOLERANCE = 1e-9


def stands_for(problem: DispatchProblem, result: DispatchResult, fresh: Schedule) -> bool:
    """Whether `result`, a stored plan, may stand for the plan of `problem` that `fresh` is:
    the same day; its schedule within the problem's hard constraints; its KPIs and objective,
    recomputed under the problem's load, PV, prices and weights, the ones stored (every number
    shown with it is true of these inputs); and no dearer than `fresh`, beyond the MIP gap.

    A forecast issued since the plan was made breaks its power balance; prices issued since
    change its cost, or let a plan made now cost less. Prices changed only where neither plan
    uses the grid leave a stored plan that is as good as one made now, with true numbers; only
    its explanations and marginal costs still speak of the prices it was made at.
    """
    if len(result.points) != problem.intervals or result.resolution_minutes != problem.day.resolution_minutes:
        return False
    schedule = schedule_from_result(result, problem)
    if find_breaches(problem, schedule):
        return False
    recomputed = compute_kpis(problem, schedule).model_dump()
    stored = result.kpis.model_dump()
    if not _close(objective_value(problem, schedule), result.objective_value) or not all(
        _close(recomputed[name], stored[name]) for name in stored
    ):
        return False
    now = objective_value(problem, fresh)
    return result.objective_value <= now + MIP_REL_GAP * max(1.0, abs(now))


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
